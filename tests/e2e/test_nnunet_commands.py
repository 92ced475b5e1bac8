"""The product through nnU-Net's own commands in subprocesses: plan and preprocess, train with
`-tr nnUNetTrainerMSVMamba_Debug`, interrupt and resume with `--c`, predict. 2D (default and ResEnc-M plans)
and 3D; and a short real training whose predictions must beat every trivial one."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from helpers.handshake import HANG_BOUND_SECONDS, Handshake
from helpers.nnunet import NnUNetFolders, run_command
from helpers.paths import TESTS, pythonpath_with_tests
from helpers.toy_datasets import write_toy_dataset
from helpers.toy_models import raw_dataset_of
from nnunetv2_msvmamba.common.commands import BIN
from nnunetv2_msvmamba.training.ext_trainer_path import trainer_folder

TRAINER = "nnUNetTrainerMSVMamba_Debug"
HELD_TRAINER = "nnUNetTrainerMSVMamba_DebugHeld"  # test-only: see tests/helpers/held_trainers
HELD_TRAINERS = TESTS / "helpers" / "held_trainers"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> NnUNetFolders:
    return NnUNetFolders.make(tmp_path_factory.mktemp("nnunet"))


def training_env(folders: NnUNetFolders, **extra: str) -> dict:
    return folders.env(**{"nnUNet_extTrainer": str(trainer_folder()), "nnUNet_n_proc_DA": "0", **extra})


def predict_and_check(folders: NnUNetFolders, dataset: Path, dataset_id: int, configuration: str,
                      extra: list[str], out: Path, trainer: str = TRAINER, env: dict | None = None) -> None:
    run_command(["nnUNetv2_predict", "-i", str(dataset / "imagesTs"), "-o", str(out), "-d", str(dataset_id),
                 "-c", configuration, "-tr", trainer, "-f", "0", "-device", "cpu", "--disable_progress_bar",
                 "-npp", "1", "-nps", "1", *extra], env=env or training_env(folders))
    references = sorted((dataset / "labelsTs").glob("*.nii.gz"))
    assert references
    for reference in references:
        predicted = sitk.ReadImage(str(out / reference.name))
        truth = sitk.ReadImage(str(reference))
        assert predicted.GetSize() == truth.GetSize()
        assert np.allclose(predicted.GetSpacing(), truth.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(predicted))) <= {0, 1, 2}


@pytest.fixture(scope="module")
def dataset_2d(folders) -> Path:
    dataset = write_toy_dataset(folders.raw, 901, (64, 64), n_train=6, n_test=2)
    for planner in ([], ["-pl", "nnUNetPlannerResEncM"]):
        run_command(["nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "2d", "-np", "1", "-npfp", "1",
                     "--verify_dataset_integrity", *planner], env=folders.env())
    return dataset


def held_training_env(folders: NnUNetFolders, handshake: Handshake | None = None) -> dict:
    """training_env, with the test-only trainers (tests/helpers/held_trainers) findable and, if given, the handshake."""
    return training_env(folders, nnUNet_extTrainer=os.pathsep.join([str(trainer_folder()), str(HELD_TRAINERS)]),
                        PYTHONPATH=pythonpath_with_tests(),
                        **(handshake.env() if handshake else {}))


def test_train_interrupt_resume_and_predict_2d(folders, dataset_2d, tmp_path):
    """Killed in the middle of training, after the first epoch's checkpoint, and resumed with --c. The trainer
    (nnUNetTrainerMSVMamba_Debug holding at the start of its second epoch, tests/helpers/held_trainers) cannot reach its
    end before the kill, however busy the machine."""
    trainer = HELD_TRAINER
    output = folders.results / dataset_2d.name / f"{trainer}__nnUNetPlans__2d" / "fold_0"
    handshake = Handshake(tmp_path / "handshake")
    log = open(tmp_path / "first_run.log", "w")
    process = subprocess.Popen([str(BIN / "nnUNetv2_train"), "901", "2d", "0", "-tr", trainer, "-device", "cpu"],
                               env=held_training_env(folders, handshake), stdout=log, stderr=subprocess.STDOUT)
    try:
        handshake.wait_until_waiting(process)
        process.send_signal(signal.SIGKILL)
        process.wait(HANG_BOUND_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert (output / "checkpoint_latest.pth").is_file(), (tmp_path / "first_run.log").read_text()[-6000:]
    assert not (output / "checkpoint_final.pth").exists(), "the first run was meant to be interrupted"

    resumed = run_command(["nnUNetv2_train", "901", "2d", "0", "-tr", trainer, "-device", "cpu", "--c"],
                          env=held_training_env(folders))
    assert "Epoch 1" in resumed.stdout and "Epoch 0\n" not in resumed.stdout
    assert (output / "checkpoint_final.pth").is_file()
    assert (output / "validation" / "summary.json").is_file()
    predict_and_check(folders, dataset_2d, 901, "2d", [], tmp_path / "predictions", trainer,
                      env=held_training_env(folders))


def test_resenc_m_plans_train_and_predict_2d(folders, dataset_2d, tmp_path):
    plans = ["-p", "nnUNetResEncUNetMPlans"]
    run_command(["nnUNetv2_train", "901", "2d", "0", "-tr", TRAINER, "-device", "cpu", *plans],
                env=training_env(folders))
    predict_and_check(folders, dataset_2d, 901, "2d", plans, tmp_path / "predictions")


def test_without_any_set_up_the_stock_trainer_search_finds_the_trainers(folders):
    """The installed package adds its trainers to nnUNet_extTrainer at interpreter start: nnU-Net's own search,
    the one nnUNetv2_train and nnUNetv2_predict run, finds them with the variable unset."""
    env = folders.env()
    env.pop("nnUNet_extTrainer", None)
    search = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find; "
              f"print('FOUND', find({TRAINER!r}).__name__)")
    found = run_command(["python", "-c", search], env=env)
    assert f"FOUND {TRAINER}" in found.stdout


def test_msvmamba_env_line_makes_the_stock_commands_find_the_trainers(folders):
    line = run_command(["msvmamba_env"], env={k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"})
    value = line.stdout.strip().split("=", 1)[1]
    # the installed package's folder (this test process may import the source checkout instead)
    assert Path(value).parts[-3:] == trainer_folder().parts[-3:] and (Path(value) / "msvmamba_trainers.py").is_file()
    assert run_command(["msvmamba_env", "--help"]).stdout.startswith("usage: msvmamba_env")


def test_train_and_predict_3d(folders, tmp_path):
    dataset = write_toy_dataset(folders.raw, 902, (24, 32, 32), n_train=5, n_test=1)
    run_command(["nnUNetv2_plan_and_preprocess", "-d", "902", "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
                env=folders.env())
    run_command(["nnUNetv2_train", "902", "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"],
                env=training_env(folders))
    predict_and_check(folders, dataset, 902, "3d_fullres", ["--disable_tta"], tmp_path / "predictions")


def dice(predicted: np.ndarray, reference: np.ndarray) -> float:
    return 2 * np.logical_and(predicted, reference).sum() / (predicted.sum() + reference.sum())


def test_a_short_training_learns_the_toy_task_far_beyond_trivial_predictions(learned_toy_model, folders, tmp_path):
    """nnU-Net's real training loop (the demo trainer, cut to 3 x 10 iterations: tests/helpers/toy_models.py) on
    the learnable toy task: each label's Dice on the unseen test cases must clear the best trivial prediction (all
    background scores 0, all that label scores 2|R| / (|R| + N)) by a wide margin, so a network that learned
    nothing cannot pass."""
    dataset = raw_dataset_of(learned_toy_model)
    out = tmp_path / "predictions"
    run_command(["nnUNetv2_predict_from_modelfolder", "-i", str(dataset / "imagesTs"), "-o", str(out),
                 "-m", str(learned_toy_model), "-f", "0", "-device", "cpu", "--disable_tta", "--disable_progress_bar",
                 "-npp", "1", "-nps", "1"], env=training_env(folders))
    references = sorted((dataset / "labelsTs").glob("*.nii.gz"))
    assert len(references) == 2
    for reference_file in references:
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_file)))
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(out / reference_file.name)))
        for label in (1, 2):
            truth = reference == label
            best_trivial = max(dice(np.zeros_like(truth), truth), dice(np.ones_like(truth), truth))
            assert best_trivial < 0.35
            learned = dice(predicted == label, truth)
            print(f"{reference_file.name} label {label}: Dice {learned:.3f} (best trivial {best_trivial:.3f})")
            assert learned >= 0.75 and learned >= best_trivial + 0.5, (reference_file.name, label, learned)
