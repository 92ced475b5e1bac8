"""benchmarks/bench_network.py: `--quick` plans a tiny dataset with nnU-Net's ResEnc-M planner, builds the stock
network and MSV-Mamba with both LMS placements, and prints every figure with consistent ratios and a verdict per
target; `--strict` turns a missed target into exit status 1. No timing gate: the verdicts are checked against
fabricated figures."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.benchmark_scripts import BENCHMARKS, load_benchmark

BENCHMARK = BENCHMARKS / "bench_network.py"
NUMBER = r"(\d+(?:\.\d+)?)"
ROWS = (("parameters", "M"), ("train step", "s"), ("inference", "s"), ("peak memory, train step", "MiB"),
        ("peak memory, inference", "MiB"))


def tables(output: str) -> dict[str, str]:
    """The comparison tables of the CPU section, by the MSV-Mamba column's title."""
    section = output.split("cpu (selective scan backend: numba):\n", 1)[1]
    found = {}
    for block in section.split("\n\n"):
        header = re.match(r"^ +stock ResEnc-M +(MSV-Mamba(?:, LMS on every stage)?) +MSV-Mamba / stock$", block,
                          re.MULTILINE)
        if header:
            found[header.group(1)] = block
    return found


def table_row(table: str, title: str, unit: str) -> tuple[float, float, float, float]:
    """(stock, MSV-Mamba, ratio, rounding: half a unit of the figures' last printed digit) from the row `title`."""
    match = re.search(rf"^  {re.escape(title)}\s+{NUMBER} {unit}\s+{NUMBER} {unit}\s+{NUMBER}x$", table, re.MULTILINE)
    assert match, f"no row {title!r} in:\n{table}"
    decimals = len(match.group(1).partition(".")[2])
    return (*(float(value) for value in match.groups()), 0.5 * 10 ** -decimals)


def test_quick_run_prints_every_figure_for_both_placements():
    completed = subprocess.run([sys.executable, str(BENCHMARK), "--quick"], capture_output=True, text=True,
                               timeout=900)
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


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    return load_benchmark("bench_network", monkeypatch)


def fabricate(bench, monkeypatch, train_ratios: dict[str, float]) -> None:
    """No planning or measuring: figures with the given train-step ratios to the stock network, inference 1.1x."""
    def figures(setup, repeats, warmup):
        return {name: bench.Figures(1_000_000, train_ratios.get(name, 1.0), 1.1 if name != "stock" else 1.0, 10, 10)
                for name in setup.networks}
    monkeypatch.setattr(bench, "make_plans", lambda workspace, size: Path(workspace))
    monkeypatch.setattr(bench, "describe_plans", lambda setup: "plans: fabricated")
    monkeypatch.setattr(bench, "measure_times", figures)
    monkeypatch.setattr(bench, "measure_cpu_peaks", lambda *args, **kwargs: None)


@pytest.mark.parametrize("device_type, ratios, strict, status", [
    ("cpu", {"msvmamba": 1.15}, True, 0),
    ("cpu", {"msvmamba": 1.3}, True, 1),
    ("cpu", {"msvmamba": 1.3}, False, 0),
    ("cpu", {"msvmamba": 1.15, "msvmamba_every_stage": 2.6}, True, 1),  # issue 22: every stage <= 2.5x on the CPU
    ("cuda", {"msvmamba": 1.25, "msvmamba_every_stage": 1.9}, True, 0),
    ("cuda", {"msvmamba": 1.4, "msvmamba_every_stage": 1.9}, True, 1),  # 1.3x on CUDA
    ("cuda", {"msvmamba": 1.25, "msvmamba_every_stage": 2.1}, True, 1),
])
def test_targets_per_device_and_strict(bench, monkeypatch, capsys, device_type, ratios, strict, status):
    fabricate(bench, monkeypatch, ratios)
    # a CUDA device's targets, verdicts and exit status, computed on the CPU: only the device type is looked at
    monkeypatch.setattr(bench, "report", lambda device, kind, figures, report=bench.report:
                        report(device, device_type, figures))
    assert bench.main(["--quick", "--devices", "cpu"] + (["--strict"] if strict else [])) == status
    output = capsys.readouterr().out
    bound = 1.2 if device_type == "cpu" else 1.3
    verdict = "PASS" if ratios["msvmamba"] <= bound else "FAIL"
    assert f"target train step <= {bound}x stock: {verdict} ({ratios['msvmamba']:.2f}x)" in output
    every_stage_bound = 2.5 if device_type == "cpu" else 2.0
    every_stage = ratios.get("msvmamba_every_stage", 1.0)
    verdict = "PASS" if every_stage <= every_stage_bound else "FAIL"
    assert f"target train step <= {every_stage_bound}x stock: {verdict} ({every_stage:.2f}x)" in output


@pytest.mark.parametrize("every_stage, verdict", [
    (1.9, "the case for the paper's every-stage placement as the default (waits for GPU figures too)"),
    (2.1, "the default stays"),
])
def test_every_stage_within_2x_on_the_cpu_makes_the_case_for_the_default(bench, monkeypatch, capsys, every_stage,
                                                                         verdict):
    fabricate(bench, monkeypatch, {"msvmamba_every_stage": every_stage})
    assert bench.main(["--quick", "--devices", "cpu"]) == 0
    assert f"every stage within 2.0x stock (train step {every_stage:.2f}x): {verdict}" in capsys.readouterr().out


def test_placements_choose_the_networks(bench, monkeypatch, capsys):
    fabricate(bench, monkeypatch, {})
    assert bench.main(["--quick", "--devices", "cpu", "--placements", "default"]) == 0
    assert set(tables(capsys.readouterr().out)) == {"MSV-Mamba"}


def test_help_describes_the_command():
    completed = subprocess.run([sys.executable, str(BENCHMARK), "--help"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0
    assert all(option in completed.stdout for option in ("--quick", "--strict", "--placements", "ResEnc-M", "AMP"))
