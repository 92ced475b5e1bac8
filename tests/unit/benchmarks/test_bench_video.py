"""benchmarks/bench_video.py: `--quick` trains a Debug model with nnU-Net's commands, times one synthetic
EchoNet-Dynamic loop through the per-frame and the batched path and the batched forward alone, and prints every
figure with consistent ratios and projections; `--strict` turns a missed target into exit status 1. No timing
gate: the verdicts are checked against fabricated figures."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from helpers.benchmark_scripts import BENCHMARKS, load_benchmark

BENCHMARK = BENCHMARKS / "bench_video.py"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch):
    return load_benchmark("bench_video", monkeypatch)


@pytest.mark.parametrize("device_type, figures, passes", [
    ("cpu", dict(per_frame=0.11, batched=0.06, limit=0.054, batched_tta=0.25, limit_tta=0.21), True),
    ("cpu", dict(per_frame=0.11, batched=0.07, limit=0.054, batched_tta=0.25, limit_tta=0.21), False),  # 1.30x
    ("cpu", dict(per_frame=0.09, batched=0.06, limit=0.054, batched_tta=0.25, limit_tta=0.21), False),  # 1.5x faster
    ("cpu", dict(per_frame=0.11, batched=0.06, limit=0.054, batched_tta=0.30, limit_tta=0.21), False),  # TTA 1.43x
    ("cuda", dict(per_frame=0.02, batched=0.007, limit=0.001, batched_tta=0.002, limit_tta=0.0018), True),
    ("cuda", dict(per_frame=0.02, batched=0.009, limit=0.001, batched_tta=0.002, limit_tta=0.0018), False),  # 33 min
])
def test_targets_per_device(bench, capsys, device_type, figures, passes):
    assert bench.report(device_type, device_type, bench.Figures(8, **figures), 4) is passes
    output = capsys.readouterr().out
    assert ("FAIL" in output) is not passes
    if device_type == "cuda":
        assert re.search(r"target EchoNet-Dynamic TEST projected <= 30 min: (PASS|FAIL)", output)


def test_strict_turns_a_missed_target_into_status_1(bench, monkeypatch, tmp_path):
    """No training or timing: the model, the loops and the figures are fabricated."""
    class FakeWorkloads:
        def __init__(self, model, loops, device, batch_size, loops_folder=None):
            self.batch_size, self.copies_tta, self.paths = 8, 4, {}
            self.plain = type("Predictor", (), {"configuration_manager": type("C", (), {"patch_size": [112, 112]})})

    loop = type("Loop", (), {"frames": np.zeros((8, 112, 112), np.uint8)})
    monkeypatch.setattr(bench, "train_model", lambda workspace, device: workspace)
    monkeypatch.setattr(bench, "write_loops", lambda folder, n_loops, n_frames: ["loop.avi"])
    monkeypatch.setattr("nnunetv2_msvmamba.video.sources.read_loop", lambda path: loop)
    monkeypatch.setattr(bench, "Workloads", FakeWorkloads)
    slow = bench.Figures(8, per_frame=0.11, batched=0.10, limit=0.054, batched_tta=0.25, limit_tta=0.21)
    monkeypatch.setattr(bench, "measure", lambda workloads, names, rounds, warmup: slow)
    assert bench.main(["--quick", "--devices", "cpu", "--strict"]) == 1
    assert bench.main(["--quick", "--devices", "cpu"]) == 0


def test_help_describes_the_command():
    completed = subprocess.run([sys.executable, str(BENCHMARK), "--help"], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0
    assert all(option in completed.stdout for option in ("--quick", "--strict", "--batch-size", "EchoNet-Dynamic"))
