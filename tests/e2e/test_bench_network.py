"""benchmarks/bench_network.py --quick for real: it plans a tiny dataset with nnU-Net's ResEnc-M planner, builds the
stock network and MSV-Mamba with both LMS placements, and prints every figure with consistent ratios and a verdict
per target. No timing gate: the figures are checked against each other."""
from __future__ import annotations

import re
import subprocess
import sys

from helpers.benchmark_scripts import BENCHMARKS
from helpers.network_tables import NUMBER, table_row, tables

BENCHMARK = BENCHMARKS / "bench_network.py"
ROWS = (("parameters", "M"), ("train step", "s"), ("inference", "s"), ("peak memory, train step", "MiB"),
        ("peak memory, inference", "MiB"))


def test_quick_run_prints_every_figure_for_both_placements():
    completed = subprocess.run([sys.executable, str(BENCHMARK), "--quick"], capture_output=True, text=True,
                               timeout=1800)
    assert completed.returncode == 0, completed.stderr[-4000:]
    output = completed.stdout
    assert "patch 32x32, batch 1 (--batch-size)" in output
    assert re.search(r"^cpu \(selective scan backend: numba\):$", output, re.MULTILINE), output
    found = tables(output)
    assert set(found) == {"MSV-Mamba", "MSV-Mamba, LMS on every stage"}, output
    for table in found.values():
        for title, unit in ROWS:
            stock, msvmamba, ratio, rounding = table_row(table, title, unit)
            assert stock > 0 and msvmamba > 0
            # the ratio comes from the unrounded figures: allow for the rounding of the printed ones
            tolerance = 0.006 + (msvmamba / stock) * (rounding / stock + rounding / msvmamba)
            assert abs(ratio - msvmamba / stock) <= tolerance, (title, stock, msvmamba, ratio)
        # the decoder's LMS blocks and the fusion add parameters to the same encoder
        stock_parameters, msvmamba_parameters, _, _ = table_row(table, "parameters", "M")
        assert msvmamba_parameters > stock_parameters
    default = found["MSV-Mamba"]
    for target in ("train step", "inference "):
        match = re.search(rf"target {target} *<= 1\.2x stock: (PASS|FAIL) \({NUMBER}x\)", default)
        assert match, default
        title = target.strip()
        assert float(match.group(2)) == table_row(default, title, "s")[2]
    every_stage = found["MSV-Mamba, LMS on every stage"]
    match = re.search(rf"target train step <= 2\.5x stock: (PASS|FAIL) \({NUMBER}x\)", every_stage)
    assert match and float(match.group(2)) == table_row(every_stage, "train step", "s")[2], every_stage
    match = re.search(rf"every stage within 2\.0x stock \(train step {NUMBER}x\): (.*)$", every_stage, re.MULTILINE)
    assert match and float(match.group(1)) == table_row(every_stage, "train step", "s")[2], every_stage
