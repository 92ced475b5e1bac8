"""Checkpoints of our trainers are written atomically, and `nnUNetv2_train ... --c` (nnU-Net's own
maybe_load_checkpoint) survives a checkpoint torn by a kill during saving."""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import torch
from nnunetv2.run.run_training import maybe_load_checkpoint
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from helpers.network_fixtures import DATASET_JSON, PLAIN_2D, plans
from nnunetv2_msvmamba.training import trainers
from nnunetv2_msvmamba.training.checkpointing import AtomicCheckpoints
from nnunetv2_msvmamba.training.trainers import nnUNetTrainer_Demo, nnUNetTrainerMSVMamba, nnUNetTrainerMSVMamba_5epochs


def new_trainer(trainer_class=nnUNetTrainerMSVMamba):
    p = plans(PLAIN_2D)
    p["continue_training"] = False  # as in tests/unit/training/test_trainers.py
    trainer = trainer_class(p, "2d", 0, dict(DATASET_JSON), torch.device("cpu"))
    # initialize() picks the dataset class from the preprocessed files' ending; no data is read here
    os.makedirs(trainer.preprocessed_dataset_folder, exist_ok=True)
    Path(trainer.preprocessed_dataset_folder, "case_0000.b2nd").touch()
    trainer.initialize()
    return trainer


def save_at_epoch(trainer, epoch: int, name: str) -> Path:
    trainer.current_epoch = epoch
    path = Path(trainer.output_folder) / name
    trainer.save_checkpoint(str(path))
    return path


def tear(path: Path) -> None:
    """What a kill while torch.save is writing leaves: the first part of the file."""
    content = path.read_bytes()
    path.write_bytes(content[:len(content) // 2])


@pytest.fixture
def trainer(nnunet_folders):
    return new_trainer()


@pytest.fixture(params=[nnUNetTrainerMSVMamba, nnUNetTrainer_Demo], ids=lambda cls: cls.__name__)
def any_trainer(nnunet_folders, request):
    """Our trainers, and the stock network the demo trains as its baseline."""
    return new_trainer(request.param)


def test_every_trainer_the_package_ships_saves_and_loads_through_the_atomic_checkpoints():
    """The behaviour is tested below on MSV-Mamba's and the stock demo trainer; every other trainer class must
    reach the same two methods (a variant that overrode them, or a new trainer without the mixin, would not)."""
    shipped = [cls for _, cls in inspect.getmembers(trainers, inspect.isclass)
               if issubclass(cls, nnUNetTrainer) and cls.__module__ == trainers.__name__]
    assert nnUNetTrainerMSVMamba_5epochs in shipped and nnUNetTrainer_Demo in shipped
    for cls in shipped:
        assert cls.save_checkpoint is AtomicCheckpoints.save_checkpoint, cls.__name__
        assert cls.load_checkpoint is AtomicCheckpoints.load_checkpoint, cls.__name__


def test_continue_from_a_torn_latest_checkpoint_falls_back_to_the_best_with_a_warning(trainer, capsys):
    save_at_epoch(trainer, 3, "checkpoint_best.pth")
    tear(save_at_epoch(trainer, 7, "checkpoint_latest.pth"))
    resumed = new_trainer()
    maybe_load_checkpoint(resumed, continue_training=True, validation_only=False)  # what --c runs
    assert resumed.current_epoch == 4  # the best checkpoint's, saved after epoch 3
    err = capsys.readouterr().err
    assert "checkpoint_latest.pth is damaged" in err and "continuing from checkpoint_best.pth" in err
    assert "checkpoint_latest.pth is damaged" in Path(resumed.log_file).read_text()
    for name, value in trainer.network.state_dict().items():
        assert torch.equal(resumed.network.state_dict()[name], value), name


def test_a_torn_checkpoint_without_a_whole_one_beside_it_is_a_clear_error(trainer):
    tear(save_at_epoch(trainer, 7, "checkpoint_latest.pth"))
    with pytest.raises(RuntimeError, match=r"checkpoint_latest\.pth is damaged .* no whole checkpoint beside it"):
        maybe_load_checkpoint(new_trainer(), continue_training=True, validation_only=False)


def test_a_save_cut_short_leaves_the_previous_checkpoint_whole(any_trainer, monkeypatch):
    trainer = any_trainer
    latest = save_at_epoch(trainer, 3, "checkpoint_latest.pth")
    before = latest.read_bytes()
    real_save = torch.save

    def killed_halfway(obj, filename, *args, **kwargs):
        real_save(obj, filename, *args, **kwargs)
        tear(Path(filename))
        raise KeyboardInterrupt  # stands for the kill: the process stops in the middle of writing

    monkeypatch.setattr(torch, "save", killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_at_epoch(trainer, 9, "checkpoint_latest.pth")
    assert latest.read_bytes() == before
    assert sorted(p.name for p in latest.parent.glob("*.pth*")) == ["checkpoint_latest.pth"]


def test_a_partial_file_is_renamed_into_place_only_by_the_save_that_wrote_it(trainer):
    latest = save_at_epoch(trainer, 3, "checkpoint_latest.pth")
    partial = latest.parent / ".checkpoint_latest.pth.partial"
    partial.write_bytes(b"half a checkpoint of a killed run, or one rank 0 is writing")
    trainer.disable_checkpointing = True  # nnU-Net then writes nothing
    save_at_epoch(trainer, 9, "checkpoint_latest.pth")
    trainer.disable_checkpointing, trainer.local_rank = False, 1  # another DDP process: rank 0 alone saves
    save_at_epoch(trainer, 9, "checkpoint_latest.pth")
    assert torch.load(latest, weights_only=False)["current_epoch"] == 4
    assert partial.read_bytes().startswith(b"half a checkpoint")
    trainer.local_rank = 0
    save_at_epoch(trainer, 9, "checkpoint_latest.pth")
    assert torch.load(latest, weights_only=False)["current_epoch"] == 10
    assert not any(p.name.endswith(".partial") for p in latest.parent.iterdir())
