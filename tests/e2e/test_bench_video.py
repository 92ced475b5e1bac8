"""benchmarks/bench_video.py --quick for real: it trains a Debug model with nnU-Net's commands, times one synthetic
EchoNet-Dynamic loop through the per-frame and the batched path, the batched forward alone and msvmamba_predict_video
itself, sweeps two batch sizes, and prints every figure with consistent ratios and projections. No timing gate:
the figures are checked against each other."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers.benchmark_scripts import BENCHMARKS

BENCHMARK = BENCHMARKS / "bench_video.py"
NUMBER = r"(\d+(?:\.\d+)?)"


def figure(output: str, section: str, title: str, unit: str) -> float:
    """The figure of the row `title` in the section headed `section` (e.g. 'cpu, no TTA')."""
    block = output.split(f"\n{section}", 1)[1].split("\n\n", 1)[0]
    match = re.search(rf"^  {re.escape(title)} +{NUMBER} ?{re.escape(unit)}$", block, re.MULTILINE)
    assert match, f"no row {title!r} in:\n{block}"
    return float(match.group(1))


def projected_hours(output: str, section: str, title: str) -> float:
    block = output.split(f"\n{section}", 1)[1].split("\n\n", 1)[0]
    match = re.search(rf"^  {re.escape(title)} +{NUMBER} (h|min)$", block, re.MULTILINE)
    assert match, f"no row {title!r} in:\n{block}"
    return float(match.group(1)) / (60 if match.group(2) == "min" else 1)


def test_quick_run_prints_every_figure():
    command = [sys.executable, str(BENCHMARK), "--quick", "--devices", "cpu", "--batch-sizes", "1", "2"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, completed.stderr[-4000:]
    output = completed.stdout
    assert re.search(r"^machine: .+CPU cores available", output, re.MULTILINE), output
    assert "projections: EchoNet-Dynamic TEST = 1,277 videos, 223,000 frames" in output
    assert "loops: 1 synthetic EchoNet-Dynamic AVI(s) of 8 frames, 112x112, 8 frames in all" in output
    batch = int(re.search(r"^cpu: patch \d+x\d+, batch size (\d+) \(the default for cpu\)$", output,
                          re.MULTILINE).group(1))
    plain = "cpu, no TTA:"
    per_frame = figure(output, plain, "per-frame path (predict_single_npy_array per frame)", "s/frame")
    batched = figure(output, plain, f"batched path (--batch-size {batch})", "s/frame")
    limit = figure(output, plain, f"batched forward alone, batch {batch} (the limit)", "s/frame")
    assert min(per_frame, batched, limit) > 0
    # ratios come from the unrounded figures: allow for the rounding of the printed ones (4 decimals)
    assert figure(output, plain, "batched path / limit", "x") == pytest.approx(batched / limit, rel=0.05, abs=0.01)
    assert figure(output, plain, "speed-up of the batched path over the per-frame path", "x") == pytest.approx(
        per_frame / batched, rel=0.05, abs=0.01)
    for title, seconds_per_frame in (
            ("EchoNet-Dynamic TEST, per-frame path", per_frame),
            ("EchoNet-Dynamic TEST, batched path", batched)):
        assert projected_hours(output, plain, title) == pytest.approx(seconds_per_frame * 223_000 / 3600, rel=0.05)
    whole_run = figure(output, plain, "msvmamba_predict_video, whole run (start-up included)", "s/frame")
    reported = figure(output, plain, "msvmamba_predict_video, as it reports (video_summary.csv)", "s/frame")
    assert whole_run > reported > 0  # the whole run includes start-up and writing, which the reported figure leaves out
    assert figure(output, plain, "msvmamba_predict_video as it reports / limit", "x") == pytest.approx(
        reported / limit, rel=0.05, abs=0.01)
    assert projected_hours(output, plain, "EchoNet-Dynamic TEST, msvmamba_predict_video as it reports") == (
        pytest.approx(reported * 223_000 / 3600, rel=0.05))
    sweep = output.split("\ncpu, no TTA, by batch size", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(rf"^  --batch-size (\d+): batched / limit +{NUMBER} / {NUMBER} s/frame \({NUMBER}x\)$", sweep,
                      re.MULTILINE)
    assert [int(size) for size, *_ in rows] == [1, 2], sweep
    for _, batched_at, limit_at, shown in rows:
        assert float(shown) == pytest.approx(float(batched_at) / float(limit_at), rel=0.05, abs=0.01)
    assert re.search(r"^  fastest batched path: --batch-size [12]$", sweep, re.MULTILINE), sweep
    tta = "cpu, TTA (4 mirrored copies of each frame in the same forward pass):"
    batched_tta = figure(output, tta, f"batched path (--batch-size {batch})", "s/frame")
    limit_tta = figure(output, tta, f"batched forward alone, batch {batch} x 4 copies (the limit)", "s/frame")
    assert figure(output, tta, "batched path / limit", "x") == pytest.approx(batched_tta / limit_tta, rel=0.05,
                                                                             abs=0.01)
    assert projected_hours(output, tta, "EchoNet-Dynamic TEST, batched path with TTA") == pytest.approx(
        batched_tta * 223_000 / 3600, rel=0.05)
    for target in (r"batched path / limit <= 1\.2x", r"speed-up over the per-frame path >= 1\.6x",
                   r"batched path with TTA / limit <= 1\.3x"):
        assert re.search(rf"^  target {target}: (PASS|FAIL) \({NUMBER}x\)$", output, re.MULTILINE), output
