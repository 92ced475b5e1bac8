"""`msvmamba_demo`: the real demo end to end at a tiny size in a subprocess (every step, reuse on a re-run), and
its orchestration in process (what reruns when a setting changes, failures, refusals, the trainers it uses)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from helpers.network_fixtures import DATASET_JSON, PLAIN_2D, plans
from helpers.nnunet import run_command
from helpers.paths import REPOSITORY
from helpers.tables import read_rows
from nnunetv2_msvmamba.demo import cli, report, runner, steps
from nnunetv2_msvmamba.training.trainers import (DemoSchedule, nnUNetTrainer_Demo, nnUNetTrainerMSVMamba_Debug,
                                                 nnUNetTrainerMSVMamba_Demo)

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


def test_a_step_that_may_fail_reports_a_bad_input_and_the_demo_goes_on(tmp_path, capsys):
    state = runner.DemoState.claim(tmp_path)
    unmeasurable = python_step("measure", "import sys; print('error: x.nii.gz: LV cavity too small'); sys.exit(2)",
                               tmp_path / "never", {})
    unmeasurable.may_fail = True
    after = touching_steps(tmp_path, {})[:1]
    problems = runner.run_steps([unmeasurable, *after], state, {}, tmp_path / "logs")
    assert problems == {"measure": "error: x.nii.gz: LV cavity too small"}
    assert "could not finish: error: x.nii.gz: LV cavity too small" in capsys.readouterr().out
    assert (tmp_path / "a").exists() and "measure" not in runner.DemoState(tmp_path).finished
    crashed = python_step("crash", "import sys; sys.exit(1)", tmp_path / "never", {})
    crashed.may_fail = True  # only a bad-input exit is a result; a crash still stops the demo
    with pytest.raises(runner.DemoError, match="exited with status 1"):
        runner.run_steps([crashed], state, {}, tmp_path / "logs")


def test_help_explains_the_steps_and_the_folders():
    result = run_demo(["--help"])
    assert result.returncode == 0 and result.stdout.startswith("usage: msvmamba_demo")
    for text in ("msvmamba_convert_camus", "nnUNetv2_train", "--use-nnunet-env", "--fresh", "--device"):
        assert text in result.stdout


# ------------------------------------------------------------------------------------------- orchestration

def python_step(key: str, code: str, output: Path, settings: dict) -> runner.Step:
    """A step whose command is a Python one-liner that appends its key to `output`'s log file."""
    return runner.Step(key, f"step {key}", [sys.executable, "-c", code], settings, outputs=[output])


def touching_steps(folder: Path, settings: dict) -> list[runner.Step]:
    steps = []
    for key in ("a", "b", "c"):
        marker = folder / key
        code = f"import pathlib; pathlib.Path({str(marker)!r}).write_text('x'); print('ran {key}')"
        steps.append(python_step(key, code, marker, {**settings, "key": key}))
    return steps


def test_a_changed_setting_reruns_its_step_and_every_later_one(tmp_path, capsys):
    state = runner.DemoState.claim(tmp_path)
    runner.run_steps(touching_steps(tmp_path, {"epochs": 1}), state, {}, tmp_path / "logs")
    assert capsys.readouterr().out.count("reused") == 0

    changed = touching_steps(tmp_path, {"epochs": 1})
    changed[1].settings["epochs"] = 2
    runner.run_steps(changed, runner.DemoState(tmp_path), {}, tmp_path / "logs")
    out = capsys.readouterr().out
    assert out.count("reused") == 1 and "ran a" not in out and "ran b" in out and "ran c" in out

    (tmp_path / "a").unlink()  # a finished step whose output is gone runs again, and so does everything after
    runner.run_steps(changed, runner.DemoState(tmp_path), {}, tmp_path / "logs")
    assert capsys.readouterr().out.count("reused") == 0


def test_a_failing_step_is_named_with_its_log_and_is_not_recorded(tmp_path):
    state = runner.DemoState.claim(tmp_path)
    steps = [python_step("broken", "import sys; print('boom'); sys.exit(3)", tmp_path / "never", {})]
    with pytest.raises(runner.DemoError) as caught:
        runner.run_steps(steps, state, {}, tmp_path / "logs")
    assert str(caught.value.what) == "step 1 (step broken)"
    assert "exited with status 3" in caught.value.problem and "01_broken.log" in caught.value.problem
    assert "boom" in (tmp_path / "logs" / "01_broken.log").read_text()
    assert runner.DemoState(tmp_path).finished == {}


def test_a_step_that_writes_nothing_fails(tmp_path):
    steps = [python_step("lazy", "pass", tmp_path / "expected", {})]
    with pytest.raises(runner.DemoError, match="did not write"):
        runner.run_steps(steps, runner.DemoState.claim(tmp_path), {}, tmp_path / "logs")


def test_refuses_a_folder_that_is_not_a_demo_output(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("precious")
    assert cli.main(["-o", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path}: is not empty and is not a demo output folder")
    assert error.count("\n") == 1 and (tmp_path / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize("arguments, message", [
    (["--patients", "5"], "--patients: needs at least 6 patients"),
    (["--size", "32", "64"], "--size: rows and columns must be at least 64 pixels"),
    (["--use-nnunet-env"], "--use-nnunet-env: environment variable(s) nnUNet_raw"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, monkeypatch, arguments, message):
    for name in steps.NNUNET_FOLDERS:
        monkeypatch.delenv(name, raising=False)
    assert cli.main(["-o", str(tmp_path / "out"), *arguments]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


@pytest.mark.parametrize("option", ["--patients", "--epochs", "--iterations", "-np"])
def test_counts_below_one_are_refused_by_the_shared_argument_type(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_status:
        cli.main(["-o", str(tmp_path / "out"), option, "0"])
    assert exit_status.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: argument {option}/--num-processes: must be "
                                                             f"at least 1, got 0" if option == "-np" else
                                                             f"error: argument {option}: must be at least 1, got 0")
    assert not (tmp_path / "out").exists()


def test_use_nnunet_env_never_replaces_a_dataset_the_demo_did_not_write(tmp_path, capsys, nnunet_folders):
    (nnunet_folders.raw / "Dataset601_CAMUS").mkdir()
    assert cli.main(["-o", str(tmp_path / "out"), "--use-nnunet-env"]) == 2
    assert capsys.readouterr().err.startswith(
        f"error: {nnunet_folders.raw / 'Dataset601_CAMUS'}: exists and was not written by this demo")


def test_steps_use_the_demo_folders_and_append_to_nnunet_ext_trainer(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", "/somewhere/else")
    monkeypatch.setenv("nnUNet_extTrainer", str(tmp_path))
    paths = steps.DemoPaths.create(tmp_path / "out", use_nnunet_env=False)
    env = steps.subprocess_env(paths, 1)
    assert env["nnUNet_raw"] == str(tmp_path / "out" / "nnUNet_raw")
    assert env["nnUNet_extTrainer"].split(":")[0] == str(tmp_path)
    assert env["nnUNet_extTrainer"].endswith("ext_trainers")
    args = cli.build_parser().parse_args(["-o", str(tmp_path / "out"), "--epochs", "7", "--iterations", "3"])
    train = {step.key: step for step in steps.build_steps(args, paths)}["train_msvmamba"]
    assert train.command[1:] == ["601", "2d", "0", "-tr", "nnUNetTrainerMSVMamba_Demo", "-device", "cpu"]
    assert train.env == {"MSVMAMBA_DEMO_EPOCHS": "7", "MSVMAMBA_DEMO_ITERATIONS": "3"}


# ------------------------------------------------------------------------------------------------ trainers

def make_trainer(trainer_class):
    p = plans(PLAIN_2D)
    p["continue_training"] = False  # what nnUNetv2_train adds to the plans it hands the trainer
    return trainer_class(p, "2d", 0, dict(DATASET_JSON), torch.device("cpu"))


def test_demo_trainers_share_one_schedule_and_the_environment_overrides_it(nnunet_folders, monkeypatch):
    monkeypatch.delenv(DemoSchedule.epochs_variable, raising=False)
    monkeypatch.delenv(DemoSchedule.iterations_variable, raising=False)
    msvmamba, stock = make_trainer(nnUNetTrainerMSVMamba_Demo), make_trainer(nnUNetTrainer_Demo)
    for trainer in (msvmamba, stock):
        assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (
            DemoSchedule.epochs, DemoSchedule.iterations_per_epoch, DemoSchedule.val_iterations_per_epoch)
    # the baseline is stock nnU-Net, the plans' plain U-Net; the other one is MSV-Mamba
    networks = {type(trainer).__name__: type(trainer.build_network_architecture(
        trainer.plans_manager, trainer.configuration_manager, 1, trainer.label_manager.num_segmentation_heads,
        True)).__name__ for trainer in (msvmamba, stock)}
    assert networks == {"nnUNetTrainerMSVMamba_Demo": "MSVMambaUNet", "nnUNetTrainer_Demo": "PlainConvUNet"}
    assert msvmamba.enable_deep_supervision is True  # the MSV-Mamba trainer's own __init__ still runs

    monkeypatch.setenv(DemoSchedule.epochs_variable, "7")
    monkeypatch.setenv(DemoSchedule.iterations_variable, "3")
    trainer = make_trainer(nnUNetTrainer_Demo)
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch) == (7, 3)
    monkeypatch.setenv(DemoSchedule.epochs_variable, "zero")
    with pytest.raises(ValueError, match="MSVMAMBA_DEMO_EPOCHS must be a positive integer"):
        make_trainer(nnUNetTrainer_Demo)


def test_schedule_variants_are_one_mixin(nnunet_folders):
    debug = make_trainer(nnUNetTrainerMSVMamba_Debug)
    assert (debug.num_epochs, debug.num_iterations_per_epoch, debug.save_every) == (2, 2, 1)
    # the environment overrides only the demo schedule
    assert not hasattr(nnUNetTrainerMSVMamba_Debug, "epochs_variable")
