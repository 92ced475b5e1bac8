"""nnUNetTrainerMSVMamba and its variants, in process: network, losses, compile policy; and how the stock nnU-Net
commands find them (the start-up hook installed with the package, msvmamba_env)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

from helpers.network_fixtures import DATASET_JSON, PLAIN_2D, RESENC_2D, plans
from nnunetv2_msvmamba import _build, _startup
from nnunetv2_msvmamba.network import LMSBlock
from nnunetv2_msvmamba.training import ext_trainer_path, trainers
from nnunetv2_msvmamba.training.trainers import (nnUNetTrainerMSVMamba, nnUNetTrainerMSVMamba_5epochs,
                                                 nnUNetTrainerMSVMamba_250epochs, nnUNetTrainerMSVMambaLMSEveryStage,
                                                 nnUNetTrainerMSVMambaNoAux, nnUNetTrainerMSVMambaNoFusion,
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


def test_startup_hook_sets_or_appends_the_trainer_folder(monkeypatch, tmp_path):
    folder = str(ext_trainer_path.trainer_folder())
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    _startup.install(folder)
    assert os.environ["nnUNet_extTrainer"] == folder
    _startup.install(folder)  # a second start (a subprocess inherits the value) adds nothing
    assert os.environ["nnUNet_extTrainer"] == folder

    mine = tmp_path / "my trainers"
    mine.mkdir()
    monkeypatch.setenv("nnUNet_extTrainer", str(mine))
    _startup.install(folder)
    assert os.environ["nnUNet_extTrainer"] == f"{mine}{os.pathsep}{folder}"  # the user's own come first

    monkeypatch.setenv("nnUNet_extTrainer", str(mine))
    _startup.install(str(tmp_path / "removed package"))  # nothing there: nnU-Net's setting is left alone
    _startup.install(None)  # a source checkout has no installed package beside the module: likewise
    assert os.environ["nnUNet_extTrainer"] == str(mine)


def test_build_writes_a_pth_line_for_each_install_mode(tmp_path):
    written = _build.write_startup_files(tmp_path)
    assert sorted(Path(p).name for p in written) == ["_nnunetv2_msvmamba_startup.py",
                                                     "nnunetv2_msvmamba_startup.pth"]
    assert (tmp_path / "nnunetv2_msvmamba_startup.pth").read_text() == (
        "import _nnunetv2_msvmamba_startup; _nnunetv2_msvmamba_startup.install()\n")
    assert _build.pth_line("/src/x/ext_trainers") == (
        "import _nnunetv2_msvmamba_startup; _nnunetv2_msvmamba_startup.install('/src/x/ext_trainers')\n")
    assert _build.SOURCE_TRAINER_FOLDER == ext_trainer_path.trainer_folder()
