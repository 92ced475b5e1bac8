"""The learned toy model the end-to-end video tests share (tests/helpers/toy_models.py): trained once per test run,
found again by every later request, and trained from nothing again where an earlier training did not finish."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers import toy_models
from helpers.nnunet import NnUNetFolders


class RunFolder:
    """A stand-in for pytest's TempPathFactory: the base temporary folder of one worker of an xdist run."""

    def __init__(self, worker_folder: Path):
        self.worker_folder = worker_folder

    def getbasetemp(self) -> Path:
        return self.worker_folder


@pytest.fixture
def trainings(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replaces the nnU-Net training by one that writes a checkpoint, and records the folders it trained in."""
    trained = []

    def train(folders: NnUNetFolders, dataset_id: int, trainer: str, n_train: int, n_test: int,
              **training_env: str) -> Path:
        trained.append(folders.results)
        model = folders.results / f"Dataset{dataset_id:03d}_Toy2D" / f"{trainer}__nnUNetPlans__2d"
        (model / "fold_0").mkdir(parents=True)
        (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"weights")
        return model

    monkeypatch.setattr(toy_models, "train_toy_model", train)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    return trained


def test_every_worker_of_a_run_gets_the_model_the_first_one_trained(trainings, tmp_path):
    first = toy_models.shared_learned_toy_model(RunFolder(tmp_path / "popen-gw0"))
    second = toy_models.shared_learned_toy_model(RunFolder(tmp_path / "popen-gw1"))
    assert second == first and len(trainings) == 1
    assert (first / "fold_0" / "checkpoint_final.pth").read_bytes() == b"weights"
    assert first.is_relative_to(tmp_path) and not first.is_relative_to(tmp_path / "popen-gw0")
    assert toy_models.raw_dataset_of(first) == tmp_path / "learned_toy_model" / "raw" / "Dataset931_Toy2D"


def test_a_training_that_did_not_finish_is_done_again_from_nothing(trainings, tmp_path):
    leftover = tmp_path / "learned_toy_model" / "results" / "half_written"
    leftover.mkdir(parents=True)
    model = toy_models.shared_learned_toy_model(RunFolder(tmp_path / "popen-gw1"))
    assert len(trainings) == 1 and not leftover.exists() and model.is_dir()


def test_without_xdist_the_model_stays_in_the_run_s_own_folder(trainings, tmp_path, monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    model = toy_models.shared_learned_toy_model(RunFolder(tmp_path / "pytest-7"))
    assert model.is_relative_to(tmp_path / "pytest-7")
