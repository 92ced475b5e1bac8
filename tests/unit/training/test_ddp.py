"""Every trainer of ours under multi-GPU training as `nnUNetv2_train ... -num_gpus 2` runs it, on the CPU: two
processes (gloo), the trainer's network built from the plans and wrapped in DistributedDataParallel without
find_unused_parameters, the trainer's own loss (deep supervision as it sets it, Dice gathered across ranks) and
its own train_step, twice (DDP reports a parameter that got no gradient at the next forward). Each rank trains
on different data; the gradients must nevertheless be the same on both ranks."""
from __future__ import annotations

import inspect
import traceback
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from torch.nn.parallel import DistributedDataParallel

from helpers.network_fixtures import DATASET_JSON, RESENC_2D, plans
from nnunetv2_msvmamba.training import trainers

WORLD_SIZE = 2
PATCH_SIZE = (32, 32)
BATCH_PER_RANK = 2
STEPS = 2


def our_trainer_classes() -> list[type]:
    return [cls for _, cls in inspect.getmembers(trainers, inspect.isclass)
            if issubclass(cls, nnUNetTrainer) and cls.__module__ == trainers.__name__]


def ddp_trainer(trainer_class: type) -> nnUNetTrainer:
    """The trainer with what nnUNetTrainer.initialize sets up for DDP (network from the plans, SyncBatchNorm,
    DistributedDataParallel, optimizer, loss), on the CPU: initialize itself insists on CUDA devices."""
    p = plans(RESENC_2D, patch_size=PATCH_SIZE)
    p["continue_training"] = False
    trainer = trainer_class(p, "2d", 0, dict(DATASET_JSON), torch.device("cpu"))
    assert trainer.is_ddp  # so the loss is built for DDP, as under -num_gpus
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None
    channels = determine_num_input_channels(trainer.plans_manager, trainer.configuration_manager,
                                            trainer.dataset_json)
    network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, channels,
                                                 trainer.label_manager.num_segmentation_heads,
                                                 trainer.enable_deep_supervision)
    trainer.network = network
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.network = DistributedDataParallel(torch.nn.SyncBatchNorm.convert_sync_batchnorm(network))
    trainer.loss = trainer._build_loss()
    return trainer


def batch_for(trainer: nnUNetTrainer, generator: torch.Generator) -> dict:
    """A batch as nnU-Net's data loader gives it: targets downsampled (nearest) to each supervised output."""
    data = torch.randn(BATCH_PER_RANK, 1, *PATCH_SIZE, generator=generator)
    target = torch.randint(0, 3, (BATCH_PER_RANK, 1, *PATCH_SIZE), generator=generator).float()
    scales = trainer._get_deep_supervision_scales()
    if scales is not None:
        target = [F.interpolate(target, scale_factor=tuple(scale), mode="nearest") if min(scale) < 1 else target
                  for scale in scales]
    return {"data": data, "target": target}


def train_steps(trainer_class: type, rank: int) -> dict:
    torch.manual_seed(0)
    trainer = ddp_trainer(trainer_class)
    module = trainer.network.module
    frozen = {name: p.detach().clone() for name, p in module.named_parameters() if not p.requires_grad}
    generator = torch.Generator().manual_seed(1000 + rank)
    steps = []
    for _ in range(STEPS):
        loss = trainer.train_step(batch_for(trainer, generator))["loss"]
        steps.append({"loss": float(loss),
                      "gradients": {name: None if p.grad is None else p.grad.detach().clone()
                                    for name, p in module.named_parameters() if p.requires_grad}})
    return {"steps": steps, "frozen_unchanged": all(torch.equal(module.get_parameter(name), before)
                                                    for name, before in frozen.items()),
            "parameters": {name: p.detach().clone() for name, p in module.named_parameters()}}


def worker(rank: int, rendezvous: str, results_folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=1800))  # catches a hang only; a starved CPU is slow
    results = {}
    try:
        for trainer_class in our_trainer_classes():
            try:
                results[trainer_class.__name__] = train_steps(trainer_class, rank)
            except Exception:  # recorded per trainer, so that every variant is reported
                results[trainer_class.__name__] = {"error": traceback.format_exc()}
    finally:
        dist.destroy_process_group()
    torch.save(results, Path(results_folder) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """Both ranks' results of training every trainer of ours for STEPS steps under DDP."""
    folder = tmp_path_factory.mktemp("ddp")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("nnUNet_results", str(folder / "results"))  # the trainers write their log there
        mp.spawn(worker, args=(str(folder / "rendezvous"), str(folder)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


def test_every_trainer_of_ours_is_checked():
    names = {cls.__name__ for cls in our_trainer_classes()}
    assert {"nnUNetTrainerMSVMamba", "nnUNetTrainerMSVMambaNoAux", "nnUNetTrainerMSVMambaNoLMS",
            "nnUNetTrainerMSVMambaNoFusion", "nnUNetTrainerMSVMambaLMSEveryStage"} <= names


@pytest.mark.parametrize("trainer_name", [cls.__name__ for cls in our_trainer_classes()])
def test_ddp_training_steps_run_and_gradients_agree_across_ranks(ranks, trainer_name):
    first, second = (rank[trainer_name] for rank in ranks)
    assert "error" not in first, first["error"]
    assert "error" not in second, second["error"]
    for step_first, step_second in zip(first["steps"], second["steps"]):
        assert step_first["loss"] != step_second["loss"]  # the ranks really trained on different data
        assert step_first["gradients"].keys() == step_second["gradients"].keys()
        for name, gradient in step_first["gradients"].items():
            assert gradient is not None, f"{name} got no gradient"
            assert torch.allclose(gradient, step_second["gradients"][name], rtol=1e-5, atol=1e-8), name
    for name, parameter in first["parameters"].items():
        assert torch.allclose(parameter, second["parameters"][name], rtol=1e-5, atol=1e-7), name
    assert first["frozen_unchanged"] and second["frozen_unchanged"]


def test_no_aux_freezes_exactly_the_auxiliary_heads(ranks):
    """The ablation stays honest: the auxiliary heads take no part in training, every other parameter does."""
    no_aux = ranks[0]["nnUNetTrainerMSVMambaNoAux"]
    assert "error" not in no_aux, no_aux["error"]
    gradients, parameters = no_aux["steps"][0]["gradients"], no_aux["parameters"]
    frozen = set(parameters) - set(gradients)
    n_heads = RESENC_2D["arch_kwargs"]["n_stages"] - 1
    assert frozen == {f"decoder.seg_layers.{i}.{kind}" for i in range(n_heads - 1) for kind in ("weight", "bias")}
    # and its checkpoints keep every head, so they load into the other variants and back
    assert set(parameters) == set(ranks[0]["nnUNetTrainerMSVMamba"]["parameters"])
