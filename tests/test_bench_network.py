"""Smoke test of benchmarks/bench_network.py: `--quick` plans a tiny dataset with nnU-Net's ResEnc-M planner,
builds both networks and prints the comparison table with ratios and the targets' verdicts."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_network.py"
NUMBER = r"(\d+(?:\.\d+)?)"


def table_row(output: str, title: str, unit: str) -> tuple[float, float, float, float]:
    """(stock, MSV-Mamba, ratio, rounding: half a unit of the figures' last printed digit) from the row `title`
    of the CPU table."""
    match = re.search(rf"^  {re.escape(title)}\s+{NUMBER} {unit}\s+{NUMBER} {unit}\s+{NUMBER}x$", output, re.MULTILINE)
    assert match, f"no row {title!r} in:\n{output}"
    decimals = len(match.group(1).partition(".")[2])
    return (*(float(value) for value in match.groups()), 0.5 * 10 ** -decimals)


def test_quick_run_prints_the_table_with_ratios_and_verdicts():
    completed = subprocess.run([sys.executable, str(BENCHMARK), "--quick"], capture_output=True, text=True,
                               timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    output = completed.stdout
    assert "patch 32x32, batch 1 (--batch-size)" in output
    assert re.search(r"^cpu \(selective scan backend: torch\):$", output, re.MULTILINE), output
    assert "MSV-Mamba / stock" in output
    for title, unit in (("train step", "s"), ("inference", "s"), ("peak memory, train step", "MiB"),
                        ("peak memory, inference", "MiB"), ("parameters", "M")):
        stock, msvmamba, ratio, rounding = table_row(output, title, unit)
        assert stock > 0 and msvmamba > 0
        # the ratio comes from the unrounded figures: allow for the rounding of the printed ones
        tolerance = 0.006 + (msvmamba / stock) * (rounding / stock + rounding / msvmamba)
        assert abs(ratio - msvmamba / stock) <= tolerance, (title, stock, msvmamba, ratio)
    # the decoder's LMS blocks and the fusion add parameters to the same encoder
    stock_parameters, msvmamba_parameters, _, _ = table_row(output, "parameters", "M")
    assert msvmamba_parameters > stock_parameters
    for target in ("train step", "inference "):
        assert re.search(rf"target {target} *<= 1\.5x stock: (PASS|FAIL) \({NUMBER}x\)", output), output


def test_help_describes_the_command():
    completed = subprocess.run([sys.executable, str(BENCHMARK), "--help"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0
    assert "--quick" in completed.stdout and "ResEnc-M" in completed.stdout
