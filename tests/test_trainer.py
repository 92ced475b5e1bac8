"""nnUNetTrainerMSVMamba and its variants, in process: network, losses, compile policy, discovery helpers."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from network_fixtures import DATASET_JSON, PLAIN_2D, RESENC_2D, plans
from nnunetv2_msvmamba import _missing_trainer_hint
from nnunetv2_msvmamba.network import LMSBlock
from nnunetv2_msvmamba.training import ext_trainer_path, trainers
from nnunetv2_msvmamba.training.trainers import (
    nnUNetTrainerMSVMamba, nnUNetTrainerMSVMamba_5epochs, nnUNetTrainerMSVMamba_250epochs,
    nnUNetTrainerMSVMambaLMSEveryStage, nnUNetTrainerMSVMambaNoAux, nnUNetTrainerMSVMambaNoFusion,
    nnUNetTrainerMSVMambaNoLMS)


@pytest.fixture(autouse=True)
def nnunet_environment(nnunet_folders):
    """The trainer writes its log under nnUNet_results."""
    return nnunet_folders


def make_trainer(trainer_class, architecture=PLAIN_2D):
    p = plans(architecture)
    p["continue_training"] = False
    return trainer_class(p, "2d", 0, dict(DATASET_JSON), torch.device("cpu"))


def build_network(trainer):
    return trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, 1,
                                              trainer.label_manager.num_segmentation_heads,
                                              trainer.enable_deep_supervision)


@pytest.mark.parametrize("architecture", [PLAIN_2D, RESENC_2D])
def test_every_decoder_layer_gets_a_nonzero_auxiliary_loss_weight(architecture):
    trainer = make_trainer(nnUNetTrainerMSVMamba, architecture)
    loss = trainer._build_loss()
    assert isinstance(loss, DeepSupervisionWrapper)
    weights = loss.weight_factors
    assert len(weights) == architecture["arch_kwargs"]["n_stages"] - 1
    assert all(w > 0 for w in weights) and sorted(weights, reverse=True) == list(weights)
    assert sum(weights) == pytest.approx(1.0)


def test_network_is_built_from_the_plans_through_the_current_signature():
    trainer = make_trainer(nnUNetTrainerMSVMamba, RESENC_2D)
    network = build_network(trainer)
    assert [len(s.blocks) for s in network.encoder.stages] == RESENC_2D["arch_kwargs"]["n_blocks_per_stage"]
    assert network.decoder.deep_supervision is True
    # nnU-Net's predictor calls it on the class with these keyword names
    inference = nnUNetTrainerMSVMamba.build_network_architecture(
        plans_manager=trainer.plans_manager, configuration_manager=trainer.configuration_manager,
        num_input_channels=1, num_output_channels=3, enable_deep_supervision=False)
    inference.load_state_dict(network.state_dict(), strict=True)
    assert inference.decoder.deep_supervision is False


def test_ablation_variants_really_drop_their_part():
    full = build_network(make_trainer(nnUNetTrainerMSVMamba))
    no_lms = build_network(make_trainer(nnUNetTrainerMSVMambaNoLMS))
    no_fusion = build_network(make_trainer(nnUNetTrainerMSVMambaNoFusion))
    no_aux = make_trainer(nnUNetTrainerMSVMambaNoAux)
    assert any(isinstance(b, LMSBlock) for b in full.decoder.lms) and full.skip_fusion is not None
    assert not any(isinstance(b, LMSBlock) for b in no_lms.decoder.lms) and no_lms.skip_fusion is not None
    assert no_fusion.skip_fusion is None and any(isinstance(b, LMSBlock) for b in no_fusion.decoder.lms)
    assert no_aux.enable_deep_supervision is False
    assert not isinstance(no_aux._build_loss(), DeepSupervisionWrapper)
    assert isinstance(build_network(no_aux)(torch.randn(1, 1, 64, 64)), torch.Tensor)


def test_lms_goes_on_the_stages_within_the_position_budget_unless_every_stage_is_asked_for():
    # the plans' 64 x 64 patch, strides 1, 2, 2, 2: decoder maps 16 x 16, 32 x 32, 64 x 64
    default = build_network(make_trainer(nnUNetTrainerMSVMamba))
    assert default.decoder.lms_stages == [0, 1]
    every = build_network(make_trainer(nnUNetTrainerMSVMambaLMSEveryStage))
    assert every.decoder.lms_stages == [0, 1, 2]
    assert isinstance(every(torch.randn(1, 1, 64, 64))[0], torch.Tensor)


def test_epoch_variants_set_only_the_number_of_epochs():
    base = make_trainer(nnUNetTrainerMSVMamba)
    assert make_trainer(nnUNetTrainerMSVMamba_5epochs).num_epochs == 5
    short = make_trainer(nnUNetTrainerMSVMamba_250epochs)
    assert short.num_epochs == 250
    assert short.num_iterations_per_epoch == base.num_iterations_per_epoch
    names = {n for n in dir(trainers) if n.startswith("nnUNetTrainerMSVMamba_") and n.endswith(("epoch", "epochs"))}
    assert names == {f"nnUNetTrainerMSVMamba_{n}" for n in ("1epoch", "5epochs", "50epochs", "100epochs",
                                                             "250epochs")}


def test_torch_compile_only_on_explicit_opt_in(monkeypatch):
    trainer = make_trainer(nnUNetTrainerMSVMamba)
    trainer.device = torch.device("cuda")  # where stock nnU-Net compiles by default
    monkeypatch.delenv("nnUNet_compile", raising=False)
    assert trainer._do_i_compile() is False
    monkeypatch.setenv("nnUNet_compile", "1")
    assert trainer._do_i_compile() is (os.name != "nt")
    trainer.device = torch.device("cpu")  # nnU-Net's own refusal still applies
    assert trainer._do_i_compile() is False


def test_msvmamba_env_prints_an_export_line_that_appends(monkeypatch, capsys, tmp_path):
    folder = ext_trainer_path.trainer_folder()
    assert (folder / "msvmamba_trainers.py").is_file()
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    ext_trainer_path.main([])
    assert capsys.readouterr().out.strip() == f"export nnUNet_extTrainer={folder}"

    other = tmp_path / "my trainers"
    other.mkdir()
    monkeypatch.setenv("nnUNet_extTrainer", str(other))
    ext_trainer_path.main([])
    line = capsys.readouterr().out.strip()
    assert line == f"export nnUNet_extTrainer='{other}{os.pathsep}{folder}'"

    monkeypatch.setenv("nnUNet_extTrainer", f"{other}{os.pathsep}{folder}")
    assert ext_trainer_path.ext_trainer_value(os.environ["nnUNet_extTrainer"]) == f"{other}{os.pathsep}{folder}"
    ext_trainer_path.main(["--shell", "fish"])
    assert capsys.readouterr().out.startswith("set -gx nnUNet_extTrainer ")


def test_missing_trainer_error_gets_the_msvmamba_env_hint(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append(args[0]))
    _missing_trainer_hint.install()
    error = RuntimeError("Could not find requested nnunet trainer nnUNetTrainerMSVMamba_5epochs in ...")
    sys.excepthook(RuntimeError, error, None)
    assert seen == [RuntimeError]  # nnU-Net's own traceback is still printed first
    assert "msvmamba_env" in capsys.readouterr().err
    sys.excepthook(RuntimeError, RuntimeError("Could not find requested nnunet trainer nnUNetTrainerFoo"), None)
    assert capsys.readouterr().err == ""
