"""benchmarks/bench_network.py: a verdict per target, `--strict` turning a missed target into exit status 1, and
the placements it times, checked against fabricated figures (no timing gate). Its `--quick` run for real:
tests/e2e/test_bench_network.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.benchmark_scripts import BENCHMARKS, load_benchmark
from helpers.network_tables import tables

BENCHMARK = BENCHMARKS / "bench_network.py"
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


@pytest.mark.parametrize("placements, profiled", [
    (["default"], ["msvmamba"]),
    (["every-stage"], ["msvmamba_every_stage"]),
    (["default", "every-stage"], ["msvmamba", "msvmamba_every_stage"]),
])
def test_profile_follows_the_placements(bench, monkeypatch, placements, profiled):
    fabricate(bench, monkeypatch, {})
    seen = []
    monkeypatch.setattr(bench, "profile_msvmamba", lambda setup, name: seen.append(name))
    assert bench.main(["--quick", "--devices", "cpu", "--profile", "--placements", *placements]) == 0
    assert seen == profiled


def test_help_describes_the_command():
    completed = subprocess.run([sys.executable, str(BENCHMARK), "--help"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0
    assert all(option in completed.stdout for option in ("--quick", "--strict", "--placements", "ResEnc-M", "AMP"))
