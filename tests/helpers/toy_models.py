"""Tiny 2D models of the toy dataset, trained through nnU-Net's own commands, for the tests that need a model."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from helpers.nnunet import NnUNetFolders, run_command
from helpers.toy_datasets import write_toy_dataset
from nnunetv2_msvmamba.training.ext_trainer_path import trainer_folder

LEARNED_TRAINER = "nnUNetTrainerMSVMamba_Demo"
LEARNED_DATASET_ID = 931
# the demo's trainer, its schedule shortened: pseudo Dice ~0.99 by epoch 3
LEARNED_SCHEDULE = {"MSVMAMBA_DEMO_EPOCHS": "3", "MSVMAMBA_DEMO_ITERATIONS": "10"}


def train_toy_model(folders: NnUNetFolders, dataset_id: int, trainer: str, n_train: int = 5, n_test: int = 0,
                    **training_env: str) -> Path:
    """Writes the toy dataset (48 x 48 images) as `dataset_id`, plans it and trains fold 0 of `trainer` on the CPU
    (`training_env`: extra environment of the training, such as a schedule); returns the model's results folder."""
    dataset = write_toy_dataset(folders.raw, dataset_id, (48, 48), n_train=n_train, n_test=n_test)
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "2d", "-np", "1", "-npfp", "1"],
                env=folders.env())
    run_command(["nnUNetv2_train", str(dataset_id), "2d", "0", "-tr", trainer, "-device", "cpu"],
                env=folders.env(nnUNet_extTrainer=str(trainer_folder()), nnUNet_n_proc_DA="0", **training_env))
    return folders.results / dataset.name / f"{trainer}__nnUNetPlans__2d"


def shared_learned_toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2D MSV-Mamba model that has learned the toy dataset's disc (LV cavity) and ring, trained once per test run
    for every test that needs one: under pytest-xdist, by the first worker that asks, while the others wait on a
    file lock (a test that changes the model folder works on a copy). Returns the model's results folder; its raw
    dataset, with two unseen test cases, is `raw_dataset_of(model)`."""
    run_root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        run_root = run_root.parent  # every worker's base temporary folder lies in this run's folder
    root = run_root / "learned_toy_model"
    finished = root.with_name(root.name + ".finished")  # names the model folder once its training has finished
    with FileLock(str(root.with_name(root.name + ".lock"))):
        if not finished.exists():
            if root.exists():  # a training that failed in another worker: start again from nothing
                shutil.rmtree(root)
            folders = NnUNetFolders.make(root)
            model = train_toy_model(folders, LEARNED_DATASET_ID, LEARNED_TRAINER, n_train=10, n_test=2,
                                    **LEARNED_SCHEDULE)
            finished.write_text(str(model))
        return Path(finished.read_text())


def raw_dataset_of(model: Path) -> Path:
    """The raw dataset (imagesTr, labelsTr, imagesTs, labelsTs) of a model folder that train_toy_model returned."""
    return model.parents[2] / "raw" / model.parent.name
