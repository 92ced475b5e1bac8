"""`msvmamba_demo`'s orchestration in process: what reruns when a setting changes, failures, refusals, the trainers
it uses. (The real demo end to end at its default size: tests/e2e/test_demo_full.py.)"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from helpers.network_fixtures import DATASET_JSON, PLAIN_2D, plans
from helpers.nnunet import run_command
from nnunetv2_msvmamba.demo import cli, runner, steps
from nnunetv2_msvmamba.training.trainers import (DemoSchedule, nnUNetTrainer_Demo, nnUNetTrainerMSVMamba_Debug,
                                                 nnUNetTrainerMSVMamba_Demo)


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
    result = run_command(["msvmamba_demo", "--help"])
    assert result.stdout.startswith("usage: msvmamba_demo")
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
