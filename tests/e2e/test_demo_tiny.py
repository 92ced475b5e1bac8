"""`msvmamba_demo` end to end at a tiny size in a subprocess: every step with its real tools, the report, and reuse
on a re-run. (Its orchestration in process: tests/unit/demo/test_cli.py; the demo at its default size:
tests/e2e/test_demo_full.py.)"""
from __future__ import annotations

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

TINY = ["--patients", "6", "--size", "64", "64", "--epochs", "1", "--iterations", "2", "-np", "1"]
STEP_TITLES = ["Generate 6 synthetic patients", "Convert them", "Plan and preprocess", "Train MSV-Mamba",
               "Train nnU-Net", "Predict the test patients with MSV-Mamba", "Predict the test patients with nnU-Net",
               "Evaluate both", "Whole-video inference on patient",
               "Volumes and ejection fraction of the test patients"]
CLINICAL_AGREEMENT = [("nnU-Net", "reference"), ("MSV-Mamba", "reference"), ("nnU-Net", "cases.csv"),
                      ("MSV-Mamba", "cases.csv"), ("reference", "cases.csv")]


def run_demo(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnunetv2_msvmamba.demo", *args], cwd=REPOSITORY, env=env,
                          capture_output=True, text=True, timeout=3600)


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    output = tmp_path_factory.mktemp("demo") / "out"
    return output, run_demo(["-o", str(output), *TINY])


def test_tiny_demo_runs_every_step_and_reports_the_comparison(tiny_demo):
    output, result = tiny_demo
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for number, title in enumerate(STEP_TITLES, start=1):
        assert f"[{number}/{len(STEP_TITLES)}] {title}" in result.stdout
    assert "nnUNetTrainerMSVMamba_Demo: 1 epochs x 2 iterations, cpu" in result.stdout
    # the tools' own output is streamed: nnU-Net's epoch log and the evaluation's table
    assert result.stdout.count("Epoch time:") >= 2 and "wrote metrics_per_case.csv" in result.stdout

    printed = result.stdout.split("MSV-Mamba vs stock nnU-Net on the 4 synthetic test images", 1)[1]
    table = printed.split("LV_endo\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert table[0].startswith("| subset | model | n | Dice (%)")
    assert [row.split("|")[1:3] for row in table[2:]] == [[" all ", " nnU-Net "], [" all ", " MSV-Mamba "]]
    assert "phase=ED" not in printed  # the breakdowns stay in summary.md
    assert "LV_endo Dice: nnU-Net " in printed and "box plot:" in printed
    assert f"{output / 'evaluation' / 'boxplot.png'}" in printed

    test_labels = sorted(p.name for p in (output / "nnUNet_raw" / "Dataset601_CAMUS" / "labelsTs").iterdir())
    assert len(test_labels) == 4  # 1 test patient x 2 views x ED/ES
    for model in ("msvmamba", "nnunet"):
        assert sorted(p.name for p in (output / "predictions" / model).glob("*.nii.gz")) == test_labels
    for trainer in ("nnUNetTrainerMSVMamba_Demo", "nnUNetTrainer_Demo"):
        fold = output / "nnUNet_results" / "Dataset601_CAMUS" / f"{trainer}__nnUNetPlans__2d" / "fold_0"
        assert (fold / "checkpoint_final.pth").is_file()
        assert torch.load(fold / "checkpoint_final.pth", weights_only=False)["trainer_name"] == trainer
    for name in ("summary.md", "summary.json", "metrics_per_case.csv", "boxplot.png"):
        assert (output / "evaluation" / name).stat().st_size > 0
    # models trained for 2 iterations rarely draw a measurable ventricle: the clinical step then says so and the
    # demo still finishes (test_report_shows_the_ef_table_of_msvmamba_clinical and test_demo_full check the table)
    ef_report = printed.split("Volumes and ejection fraction of the test patients", 1)[1]
    if (output / "clinical" / "clinical_summary.json").exists():
        clinical = json.loads((output / "clinical" / "clinical_summary.json").read_text())
        assert [(entry["model"], entry["reference"]) for entry in clinical["agreement"]] == CLINICAL_AGREEMENT
        assert "| MSV-Mamba | cases.csv | EF" in ef_report
    else:
        assert "msvmamba_clinical could not finish: error: " in result.stdout
        assert ef_report.startswith(": not measured")
        assert "msvmamba_clinical could not measure the predictions (error: " in ef_report

    videos = read_rows(output / "video" / "video_summary.csv")
    patient = steps.first_test_patient(6, 0)
    assert [row["sequence"] for row in videos] == [f"{patient}_{view}_half_sequence" for view in ("2CH", "4CH")]
    for row in videos:
        frames = sitk.ReadImage(str(output / "video" / row["labels"]))
        source = output / "synthetic_camus" / "database_nifti" / patient / f"{row['sequence']}.nii.gz"
        assert frames.GetSize() == sitk.ReadImage(str(source)).GetSize()  # every frame, frames on the last axis
        assert (output / "video" / row["overlay"]).stat().st_size > 0
        assert f"overlay video:          {output / 'video' / row['overlay']}" in printed
        assert f"  {row['sequence']}: {row['frames']} frames" in printed
    assert len(list((output / "logs").glob("*.log"))) == len(STEP_TITLES)
    assert "Epoch time:" in (output / "logs" / "04_train_msvmamba.log").read_text()


def test_a_rerun_reuses_every_finished_step(tiny_demo):
    output, first = tiny_demo
    assert first.returncode == 0
    again = run_demo(["-o", str(output), *TINY])
    assert again.returncode == 0, again.stderr
    # a clinical step that could not measure the masks is tried again (it is the last step: nothing else reruns)
    clinical_reruns = not (output / "clinical" / "clinical_summary.json").exists()
    assert again.stdout.count("reused: finished earlier with the same settings") == len(STEP_TITLES) - clinical_reruns
    assert "LV_endo Dice: nnU-Net " in again.stdout


def test_report_shows_the_ef_table_of_msvmamba_clinical(tiny_demo, tmp_path, capsys):
    """The demo's EF report from msvmamba_clinical's own summary: the tiny demo's ground truth measured as a model,
    against itself and the Info EF."""
    output, first = tiny_demo
    assert first.returncode == 0
    dataset = output / "nnUNet_raw" / "Dataset601_CAMUS"
    paths = steps.DemoPaths.create(tmp_path / "demo", use_nnunet_env=False)
    run_command(["msvmamba_clinical", f"--pred=MSV-Mamba={dataset / 'labelsTs'}", "--reference",
                 str(dataset / "labelsTs"), "--cases", str(dataset / "cases.csv"), "-o", str(paths.clinical)])
    report.report_clinical(paths, problem=None)
    printed = capsys.readouterr().out
    assert "| series | patients | EDV (mL) | ESV (mL) | EF (%) |" in printed
    # the synthetic hearts are life-size at the demo's 64 x 64 pixels: an adult's volumes (mL) and EF
    means = next(line for line in printed.splitlines() if line.startswith("| MSV-Mamba | 1 |")).split("|")
    edv, esv, ef = (float(means[column]) for column in (3, 4, 5))
    assert 50 <= edv <= 200 and 20 <= esv <= 100 and 35 <= ef <= 75, means
    assert "| MSV-Mamba | reference | EF | 1 | n/a | +0.00 |" in printed  # one test patient: no r
    assert "| MSV-Mamba | cases.csv | EF | 1 |" in printed
