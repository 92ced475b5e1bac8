"""The README's demo at its default size: MSV-Mamba must learn the synthetic echocardiograms (issue 7:
LV_endo Dice >= 0.85 on the test patients), and the clinical and whole-video steps must measure EFs (issue 14).
A file of its own so that pytest-xdist's `--dist loadfile` runs it on one worker while the other takes the rest
of the suite; it takes 8-12 minutes on 2 CPU cores."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from helpers.paths import REPOSITORY

REQUIRED_LV_ENDO_DICE = 0.85
# Measured 8.02 points (2026-12-02, life-size synthetic hearts) and 9.32 before them: short training shrinks ED
# and grows ES masks. The bound is the larger of the two with a 30 % margin for run-to-run variation of training.
MAX_EF_MAE_POINTS = 12.0
# Only catches a hang: the demo takes 8-12 min on 2 quiet cores, and passed the 1 h mark beside 4 CPU-bound
# processes (load average 6-7, ~31 s per epoch of the stock trainer), so the bound is 4 h.
HANG_BOUND_SECONDS = 4 * 3600


def test_default_demo_reaches_the_required_lv_endo_dice(tmp_path: Path) -> None:
    output = tmp_path / "demo_output"
    result = subprocess.run([sys.executable, "-m", "nnunetv2_msvmamba.demo", "-o", str(output)], cwd=REPOSITORY,
                            capture_output=True, text=True, timeout=HANG_BOUND_SECONDS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "nnUNetTrainerMSVMamba_Demo: 25 epochs x 10 iterations, cpu" in result.stdout

    summary = json.loads((output / "evaluation" / "summary.json").read_text())
    lv_endo = summary["results"]["LV_endo"]["all"]
    assert summary["n_cases"] == 24 and lv_endo["MSV-Mamba"]["dice"]["n"] == 24
    msvmamba_dice = lv_endo["MSV-Mamba"]["dice"]["mean"]
    assert msvmamba_dice >= REQUIRED_LV_ENDO_DICE, f"MSV-Mamba LV_endo Dice {msvmamba_dice:.4f}"
    # the baseline trained on the same schedule learns too, so the comparison the demo prints means something
    assert lv_endo["nnU-Net"]["dice"]["mean"] >= REQUIRED_LV_ENDO_DICE
    assert f"MSV-Mamba {100 * msvmamba_dice:.2f} %" in result.stdout

    # the clinical step: both models against the ground truth and the Info EF, over the 6 test patients
    clinical = json.loads((output / "clinical" / "clinical_summary.json").read_text())
    agreement = {(entry["model"], entry["reference"]): entry for entry in clinical["agreement"]}
    for model in ("nnU-Net", "MSV-Mamba"):
        for reference in ("reference", "cases.csv"):
            assert agreement[(model, reference)]["ef"]["n"] == 6
    # a sanity bound that a pipeline which mixed up phases, views or spacing would miss; README states the figures
    ef_error = agreement[("MSV-Mamba", "reference")]["ef"]["mae"]
    assert ef_error <= MAX_EF_MAE_POINTS, f"MSV-Mamba EF MAE {ef_error:.2f} points against the ground truth"
    assert "| MSV-Mamba | reference | EF" in result.stdout

    # the video step: every frame of the first test patient's two half sequences, with an EF and an overlay each
    with open(output / "video" / "video_summary.csv", newline="") as f:
        videos = list(csv.DictReader(f))
    assert len(videos) == 2
    for row in videos:
        assert row["ef_percent"] and int(row["beats"]) >= 1, row
        assert (output / "video" / row["overlay"]).stat().st_size > 0
        assert f"{output / 'video' / row['overlay']}" in result.stdout
