"""nnUNetTrainerMSVMamba and its variants, one small subclass per idea, named by what it changes."""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from .network_from_plans import msvmamba_from_plans


def compile_opted_in() -> bool:
    return os.environ.get("nnUNet_compile", "").lower() in ("true", "1", "t")


class nnUNetTrainerMSVMamba(nnUNetTrainer):
    """nnU-Net's trainer with the MSV-Mamba network built from the plans the user trained with.

    Differences from nnUNetTrainer: the network; every decoder layer's auxiliary loss has a non-zero weight;
    torch.compile only with nnUNet_compile=1 (the fused Mamba kernels do not compile). Variants override the
    class attributes below.
    """

    network_options: dict = {}
    epochs: Optional[int] = None
    iterations_per_epoch: Optional[int] = None
    val_iterations_per_epoch: Optional[int] = None
    checkpoint_every: Optional[int] = None
    auxiliary_losses: bool = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.epochs is not None:
            self.num_epochs = self.epochs
        if self.iterations_per_epoch is not None:
            self.num_iterations_per_epoch = self.iterations_per_epoch
        if self.val_iterations_per_epoch is not None:
            self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        if self.checkpoint_every is not None:
            self.save_every = self.checkpoint_every
        self.enable_deep_supervision = self.auxiliary_losses

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return msvmamba_from_plans(configuration_manager, num_input_channels, num_output_channels,
                                   enable_deep_supervision, **cls.network_options)

    def _do_i_compile(self) -> bool:
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


class nnUNetTrainerMSVMambaNoLMS(nnUNetTrainerMSVMamba):
    """Ablation: no LMS block in the decoder."""
    network_options = {"lms_stages": ()}


class nnUNetTrainerMSVMambaNoFusion(nnUNetTrainerMSVMamba):
    """Ablation: skips go to the decoder without the dual-attention fusion."""
    network_options = {"skip_fusion": False}


class nnUNetTrainerMSVMambaNoAux(nnUNetTrainerMSVMamba):
    """Ablation: only the full-resolution output is supervised (no auxiliary losses)."""
    auxiliary_losses = False
