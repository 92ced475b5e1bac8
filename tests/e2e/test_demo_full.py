"""`msvmamba_demo` at its default size, the README's demo, end to end in a subprocess: MSV-Mamba must learn the
synthetic echocardiograms (issue 7: LV_endo Dice >= 0.85 on the test patients), the clinical and whole-video
steps must measure EFs (issue 14), every step runs with its real tools and is reported, and a re-run reuses every
finished step. One run serves every test: it takes 8-15 minutes on 2 quiet CPU cores, and this file of its own,
marked to start first, lets pytest-xdist's `--dist loadfile` run it on one worker while the other takes the rest of
the suite. (Its orchestration in process, with other settings: tests/unit/demo/test_cli.py.)"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from helpers.nnunet import run_command
from helpers.paths import REPOSITORY
from helpers.tables import read_rows
from nnunetv2_msvmamba.demo import report, steps

pytestmark = pytest.mark.starts_first  # the suite's longest file: one worker runs it while the other runs the rest

REQUIRED_LV_ENDO_DICE = 0.85
# Measured 8.02 points (2026-12-02, life-size synthetic hearts) and 9.32 before them: short training shrinks ED
# and grows ES masks. The bound is the larger of the two with a 30 % margin for run-to-run variation of training.
MAX_EF_MAE_POINTS = 12.0
# Only catches a hang: the demo takes 8-15 min on 2 quiet cores, and passed the 1 h mark beside 4 CPU-bound
# processes (load average 6-7, ~31 s per epoch of the stock trainer), so the bound is 4 h.
HANG_BOUND_SECONDS = 4 * 3600
PATIENTS, TEST_PATIENTS = 30, 6  # the demo's default, and its 20 % test split
STEP_TITLES = [f"Generate {PATIENTS} synthetic patients", "Convert them", "Plan and preprocess", "Train MSV-Mamba",
               "Train nnU-Net", "Predict the test patients with MSV-Mamba", "Predict the test patients with nnU-Net",
               "Evaluate both", "Whole-video inference on patient",
               "Volumes and ejection fraction of the test patients"]
CLINICAL_AGREEMENT = [("nnU-Net", "reference"), ("MSV-Mamba", "reference"), ("nnU-Net", "cases.csv"),
                      ("MSV-Mamba", "cases.csv"), ("reference", "cases.csv")]


def run_demo(output: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnunetv2_msvmamba.demo", "-o", str(output)], cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=HANG_BOUND_SECONDS)


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("demo") / "demo_output"
    return output, run_demo(output)


def finished(demo: tuple[Path, subprocess.CompletedProcess]) -> tuple[Path, str]:
    output, result = demo
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return output, result.stdout


def test_default_demo_reaches_the_required_lv_endo_dice(default_demo) -> None:
    output, stdout = finished(default_demo)
    assert "nnUNetTrainerMSVMamba_Demo: 25 epochs x 10 iterations, cpu" in stdout

    summary = json.loads((output / "evaluation" / "summary.json").read_text())
    lv_endo = summary["results"]["LV_endo"]["all"]
    assert summary["n_cases"] == 4 * TEST_PATIENTS and lv_endo["MSV-Mamba"]["dice"]["n"] == 4 * TEST_PATIENTS
    msvmamba_dice = lv_endo["MSV-Mamba"]["dice"]["mean"]
    assert msvmamba_dice >= REQUIRED_LV_ENDO_DICE, f"MSV-Mamba LV_endo Dice {msvmamba_dice:.4f}"
    # the baseline trained on the same schedule learns too, so the comparison the demo prints means something
    assert lv_endo["nnU-Net"]["dice"]["mean"] >= REQUIRED_LV_ENDO_DICE
    assert f"MSV-Mamba {100 * msvmamba_dice:.2f} %" in stdout

    # the clinical step: both models against the ground truth and the Info EF, over the test patients
    clinical = json.loads((output / "clinical" / "clinical_summary.json").read_text())
    agreement = {(entry["model"], entry["reference"]): entry for entry in clinical["agreement"]}
    assert list(agreement) == CLINICAL_AGREEMENT
    for model in ("nnU-Net", "MSV-Mamba"):
        for reference in ("reference", "cases.csv"):
            assert agreement[(model, reference)]["ef"]["n"] == TEST_PATIENTS
    # a sanity bound that a pipeline which mixed up phases, views or spacing would miss; README states the figures
    ef_error = agreement[("MSV-Mamba", "reference")]["ef"]["mae"]
    assert ef_error <= MAX_EF_MAE_POINTS, f"MSV-Mamba EF MAE {ef_error:.2f} points against the ground truth"
    assert "| MSV-Mamba | reference | EF" in stdout and "| MSV-Mamba | cases.csv | EF" in stdout

    # the video step: every frame of the first test patient's two half sequences, with an EF and an overlay each
    with open(output / "video" / "video_summary.csv", newline="") as f:
        videos = list(csv.DictReader(f))
    assert len(videos) == 2
    for row in videos:
        assert row["ef_percent"] and int(row["beats"]) >= 1, row
        assert (output / "video" / row["overlay"]).stat().st_size > 0
        assert f"{output / 'video' / row['overlay']}" in stdout


def test_every_step_runs_with_its_tools_and_is_reported(default_demo) -> None:
    output, stdout = finished(default_demo)
    for number, title in enumerate(STEP_TITLES, start=1):
        assert f"[{number}/{len(STEP_TITLES)}] {title}" in stdout
    # the tools' own output is streamed: nnU-Net's epoch log and the evaluation's table
    assert stdout.count("Epoch time:") >= 2 and "wrote metrics_per_case.csv" in stdout

    printed = stdout.split(f"MSV-Mamba vs stock nnU-Net on the {4 * TEST_PATIENTS} synthetic test images", 1)[1]
    table = printed.split("LV_endo\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table[0].startswith("| subset | model | n | Dice (%)")
    assert [row.split("|")[1:3] for row in table[2:]] == [[" all ", " nnU-Net "], [" all ", " MSV-Mamba "]]
    assert "phase=ED" not in printed  # the breakdowns stay in summary.md
    assert "LV_endo Dice: nnU-Net " in printed and "box plot:" in printed
    assert f"{output / 'evaluation' / 'boxplot.png'}" in printed

    test_labels = sorted(p.name for p in (output / "nnUNet_raw" / "Dataset601_CAMUS" / "labelsTs").iterdir())
    assert len(test_labels) == 4 * TEST_PATIENTS  # 2 views x ED/ES per test patient
    for model in ("msvmamba", "nnunet"):
        assert sorted(p.name for p in (output / "predictions" / model).glob("*.nii.gz")) == test_labels
    for trainer in ("nnUNetTrainerMSVMamba_Demo", "nnUNetTrainer_Demo"):
        fold = output / "nnUNet_results" / "Dataset601_CAMUS" / f"{trainer}__nnUNetPlans__2d" / "fold_0"
        assert torch.load(fold / "checkpoint_final.pth", weights_only=False)["trainer_name"] == trainer
    for name in ("summary.md", "summary.json", "metrics_per_case.csv", "boxplot.png"):
        assert (output / "evaluation" / name).stat().st_size > 0

    videos = read_rows(output / "video" / "video_summary.csv")
    patient = steps.first_test_patient(PATIENTS, 0)
    assert [row["sequence"] for row in videos] == [f"{patient}_{view}_half_sequence" for view in ("2CH", "4CH")]
    for row in videos:
        frames = sitk.ReadImage(str(output / "video" / row["labels"]))
        source = output / "synthetic_camus" / "database_nifti" / patient / f"{row['sequence']}.nii.gz"
        assert frames.GetSize() == sitk.ReadImage(str(source)).GetSize()  # every frame, frames on the last axis
        assert f"overlay video:          {output / 'video' / row['overlay']}" in printed
        assert f"  {row['sequence']}: {row['frames']} frames" in printed
    assert len(list((output / "logs").glob("*.log"))) == len(STEP_TITLES)
    assert "Epoch time:" in (output / "logs" / "04_train_msvmamba.log").read_text()


def test_a_rerun_reuses_every_finished_step(default_demo) -> None:
    output, _ = finished(default_demo)
    again = run_demo(output)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("reused: finished earlier with the same settings") == len(STEP_TITLES)
    assert "LV_endo Dice: nnU-Net " in again.stdout


def test_report_shows_the_ef_table_of_msvmamba_clinical(default_demo, tmp_path, capsys) -> None:
    """The demo's EF report from msvmamba_clinical's own summary: the demo's ground truth measured as a model,
    against itself and the Info EF."""
    output, _ = finished(default_demo)
    dataset = output / "nnUNet_raw" / "Dataset601_CAMUS"
    paths = steps.DemoPaths.create(tmp_path / "demo", use_nnunet_env=False)
    run_command(["msvmamba_clinical", f"--pred=MSV-Mamba={dataset / 'labelsTs'}", "--reference",
                 str(dataset / "labelsTs"), "--cases", str(dataset / "cases.csv"), "-o", str(paths.clinical)])
    report.report_clinical(paths, problem=None)
    printed = capsys.readouterr().out
    assert "| series | patients | EDV (mL) | ESV (mL) | EF (%) |" in printed
    # the synthetic hearts are life-size at the demo's 64 x 64 pixels: an adult's volumes (mL) and EF
    means = next(line for line in printed.splitlines()
                 if line.startswith(f"| MSV-Mamba | {TEST_PATIENTS} |")).split("|")
    edv, esv, ef = (float(means[column]) for column in (3, 4, 5))
    assert 50 <= edv <= 200 and 20 <= esv <= 100 and 35 <= ef <= 75, means
    # the ground truth against itself: perfect correlation, no bias
    assert f"| MSV-Mamba | reference | EF | {TEST_PATIENTS} | 1.000 | +0.00 |" in printed
