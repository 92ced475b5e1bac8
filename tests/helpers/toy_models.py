"""A tiny 2D model of the toy dataset, trained through nnU-Net's own commands, for the tests that need a model."""
from __future__ import annotations

from pathlib import Path

from helpers.nnunet import NnUNetFolders, run_command
from helpers.toy_datasets import write_toy_dataset
from nnunetv2_msvmamba.training.ext_trainer_path import trainer_folder


def train_toy_model(folders: NnUNetFolders, dataset_id: int, trainer: str, n_train: int = 5,
                    **training_env: str) -> Path:
    """Writes the toy dataset (48 x 48 images) as `dataset_id`, plans it and trains fold 0 of `trainer` on the CPU
    (`training_env`: extra environment of the training, such as a schedule); returns the model's results folder."""
    dataset = write_toy_dataset(folders.raw, dataset_id, (48, 48), n_train=n_train, n_test=0)
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "2d", "-np", "1", "-npfp", "1"],
                env=folders.env())
    run_command(["nnUNetv2_train", str(dataset_id), "2d", "0", "-tr", trainer, "-device", "cpu"],
                env=folders.env(nnUNet_extTrainer=str(trainer_folder()), nnUNet_n_proc_DA="0", **training_env))
    return folders.results / dataset.name / f"{trainer}__nnUNetPlans__2d"
