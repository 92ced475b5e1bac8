"""Pre-training on one dataset and fine-tuning on another with another label count, as echo users do (EchoNet-
Dynamic's LV, then CAMUS), through nnU-Net's own commands and its own `load_pretrained_weights`: the workflow of
nnU-Net's pretraining_and_finetuning.md (the fine-tuning dataset's plans moved to the pre-training dataset,
which is trained on them), then
`nnUNetv2_train 601 2d 0 -tr ... -pretrained_weights <checkpoint of 602>`."""
from __future__ import annotations

import re

import torch

from helpers.nnunet import NnUNetFolders, run_command
from helpers.toy_datasets import write_toy_dataset
from nnunetv2_msvmamba.training.ext_trainer_path import trainer_folder

TRAINER = "nnUNetTrainerMSVMamba_Debug"
TRANSFER_PLANS = "nnUNetPlans_from601"


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_fine_tuning_starts_from_a_checkpoint_of_another_dataset_with_another_label_count(tmp_path):
    folders = NnUNetFolders.make(tmp_path / "nnunet")
    env = folders.env()
    training = folders.env(nnUNet_extTrainer=str(trainer_folder()), nnUNet_n_proc_DA="0")
    finetune = write_toy_dataset(folders.raw, 601, (48, 48), n_train=5, n_test=0)  # LV cavity and myocardium
    pretrain = write_toy_dataset(folders.raw, 602, (40, 40), n_train=5, n_test=0, merge_foreground=True)  # LV

    run_command(["nnUNetv2_plan_and_preprocess", "-d", "601", "-c", "2d", "-np", "1", "-npfp", "1"], env=env)
    # planning 602 as well (not only its fingerprint, as pretraining_and_finetuning.md says) puts its dataset.json
    # where nnUNetv2_preprocess reads it (nnU-Net issue #2560)
    run_command(["nnUNetv2_plan_and_preprocess", "-d", "602", "-c", "2d", "-np", "1", "-npfp", "1", "--no_pp"],
                env=env)
    run_command(["nnUNetv2_move_plans_between_datasets", "-s", "601", "-t", "602", "-sp", "nnUNetPlans",
                 "-tp", TRANSFER_PLANS], env=env)
    run_command(["nnUNetv2_preprocess", "-d", "602", "-plans_name", TRANSFER_PLANS, "-c", "2d", "-np", "1"], env=env)
    run_command(["nnUNetv2_train", "602", "2d", "all", "-tr", TRAINER, "-p", TRANSFER_PLANS, "-device", "cpu"],
                env=training)
    pretrained_file = (folders.results / pretrain.name / f"{TRAINER}__{TRANSFER_PLANS}__2d" / "fold_all"
                       / "checkpoint_final.pth")

    result = run_command(["nnUNetv2_train", "601", "2d", "0", "-tr", TRAINER, "-device", "cpu",
                          "-pretrained_weights", str(pretrained_file)], env=training)
    finetuned_file = folders.results / finetune.name / f"{TRAINER}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth"
    assert finetuned_file.is_file() and "Loading pretrained weights from file" in result.stdout

    pretrained = torch.load(pretrained_file, weights_only=False)["network_weights"]
    finetuned = torch.load(finetuned_file, weights_only=False)["network_weights"]
    # nnU-Net prints every key it transferred: all but the segmentation heads, whose class counts differ
    transferred = set(re.findall(r"^(\S+) shape torch\.Size", result.stdout, flags=re.MULTILINE))
    heads = {key for key in finetuned if ".seg_layers." in key}
    assert heads and transferred == set(finetuned) - heads
    assert all(pretrained[key].shape[0] == 2 and finetuned[key].shape[0] == 3
               for key in heads if key.endswith(".weight"))
    # and fine-tuning really started from them: four SGD steps later the weights are still those of the
    # checkpoint (two independent initialisations have a cosine similarity near 0)
    for key in ("encoder.stem.convs.0.conv.weight", "decoder.lms.0.pixel_mamba.mixer.in_proj.weight",
                "skip_fusion.spatial_attentions.0.conv.weight"):
        assert cosine(finetuned[key], pretrained[key]) > 0.9, key
