"""nnUNetTrainerMSVMamba and its variants, one small subclass per idea, named by what it changes."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from .checkpointing import AtomicCheckpoints
from .network_from_plans import msvmamba_from_plans


def positive_int_from_env(variable: str, default: int) -> int:
    """The positive integer in environment variable `variable`, or `default` when it is unset or empty."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"environment variable {variable} must be a positive integer, got {value!r}")
    return int(value)


def compile_opted_in() -> bool:
    return os.environ.get("nnUNet_compile", "").lower() in ("true", "1", "t")


class TrainingSchedule:
    """Mixin for an nnU-Net trainer: class attributes that override its schedule (None keeps nnU-Net's value).
    Put it before the trainer class in the bases, so that one variant of any trainer is just the attributes."""

    epochs: Optional[int] = None
    iterations_per_epoch: Optional[int] = None
    val_iterations_per_epoch: Optional[int] = None
    checkpoint_every: Optional[int] = None

    # nnUNetTrainer records its constructor arguments by these names, so the signature must stay identical
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.apply_schedule()

    def apply_schedule(self) -> None:
        if self.epochs is not None:
            self.num_epochs = self.epochs
        if self.iterations_per_epoch is not None:
            self.num_iterations_per_epoch = self.iterations_per_epoch
        if self.val_iterations_per_epoch is not None:
            self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        if self.checkpoint_every is not None:
            self.save_every = self.checkpoint_every


class nnUNetTrainerMSVMamba(AtomicCheckpoints, TrainingSchedule, nnUNetTrainer):
    """nnU-Net's trainer with the MSV-Mamba network built from the plans the user trained with.

    Differences from nnUNetTrainer: the network; every decoder layer's auxiliary loss has a non-zero weight;
    torch.compile only with nnUNet_compile=1 (the fused Mamba kernels do not compile). Variants override the
    class attributes below and those of TrainingSchedule (epochs, iterations per epoch, checkpoint interval).
    """

    network_options: dict = {}
    auxiliary_losses: bool = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = self.auxiliary_losses

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return msvmamba_from_plans(configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision, **cls.network_options)

    def _do_i_compile(self) -> bool:
        # The scan is a torch.library custom op, so a compiled MSV-Mamba network runs and matches eager
        # (tests/unit/ssm/test_custom_op.py); whether compiling pays off on a GPU is to be measured
        # (benchmarks/gpu_check.sh, step 5) before following nnU-Net's compile-by-default on CUDA. Until then: only
        # with nnUNet_compile=1.
        return compile_opted_in() and super()._do_i_compile()

    def _build_loss(self):
        loss = super()._build_loss()
        if self.enable_deep_supervision:
            # nnU-Net zeroes the lowest-resolution output; MSV-Mamba supervises every decoder layer
            weights = np.array([1 / (2 ** i) for i in range(len(loss.weight_factors))])
            loss.weight_factors = tuple(weights / weights.sum())
        return loss


class nnUNetTrainerMSVMamba_1epoch(nnUNetTrainerMSVMamba):
    epochs = 1


class nnUNetTrainerMSVMamba_5epochs(nnUNetTrainerMSVMamba):
    epochs = 5


class nnUNetTrainerMSVMamba_50epochs(nnUNetTrainerMSVMamba):
    epochs = 50


class nnUNetTrainerMSVMamba_100epochs(nnUNetTrainerMSVMamba):
    epochs = 100


class nnUNetTrainerMSVMamba_250epochs(nnUNetTrainerMSVMamba):
    epochs = 250


class nnUNetTrainerMSVMamba_Debug(nnUNetTrainerMSVMamba):
    """Two epochs of two iterations, a checkpoint after each: for smoke tests of the pipeline, not results."""
    epochs = 2
    iterations_per_epoch = 2
    val_iterations_per_epoch = 1
    checkpoint_every = 1


class DemoSchedule(TrainingSchedule):
    """The short CPU schedule of `msvmamba_demo`, shared by the MSV-Mamba and the stock nnU-Net demo trainers so
    that they compare like for like. The demo's --epochs and --iterations reach it through the environment
    variables named below (unset: the class attributes)."""
    epochs = 25
    iterations_per_epoch = 10
    val_iterations_per_epoch = 2
    epochs_variable = "MSVMAMBA_DEMO_EPOCHS"
    iterations_variable = "MSVMAMBA_DEMO_ITERATIONS"

    def apply_schedule(self) -> None:
        self.epochs = positive_int_from_env(self.epochs_variable, self.epochs)
        self.iterations_per_epoch = positive_int_from_env(self.iterations_variable, self.iterations_per_epoch)
        super().apply_schedule()


class nnUNetTrainerMSVMamba_Demo(DemoSchedule, nnUNetTrainerMSVMamba):
    """MSV-Mamba on the demo's short schedule."""


class nnUNetTrainer_Demo(AtomicCheckpoints, DemoSchedule, nnUNetTrainer):
    """Stock nnU-Net (its plain U-Net) on the demo's short schedule: the demo's baseline. Its checkpoints are
    saved atomically like our trainers' (the network is stock, the file handling need not be)."""


class nnUNetTrainerMSVMambaLMSEveryStage(nnUNetTrainerMSVMamba):
    """LMS after every decoder stage, full resolution included (the default stops at 32 x 32 maps): the most
    literal reading of the paper; several times slower, meant for GPUs."""
    network_options = {"lms_max_positions": None}


class nnUNetTrainerMSVMambaNoLMS(nnUNetTrainerMSVMamba):
    """Ablation: no LMS block in the decoder."""
    network_options = {"lms_stages": ()}


class nnUNetTrainerMSVMambaNoFusion(nnUNetTrainerMSVMamba):
    """Ablation: skips go to the decoder without the dual-attention fusion."""
    network_options = {"skip_fusion": False}


class nnUNetTrainerMSVMambaNoAux(nnUNetTrainerMSVMamba):
    """Ablation: only the full-resolution output is supervised (no auxiliary losses).

    The network keeps a head per decoder stage, so checkpoints move between this and every other variant. The
    auxiliary heads never run and are frozen at their initial weights: a parameter that requires a gradient but
    never gets one makes multi-GPU training (DistributedDataParallel) fail."""
    auxiliary_losses = False

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        network = super().build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                      num_output_channels, enable_deep_supervision)
        for auxiliary_head in network.decoder.seg_layers[:-1]:
            auxiliary_head.requires_grad_(False)
        return network
