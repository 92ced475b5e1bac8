"""Test-only trainers, found by nnUNetv2_train through nnUNet_extTrainer when a test adds this folder to it (with
tests/ on PYTHONPATH, for the handshake): one of ours that holds at a known point so that a test can kill it
there, whatever the machine's load."""
from __future__ import annotations

import os

from helpers.handshake import Handshake
from nnunetv2_msvmamba.training.trainers import nnUNetTrainerMSVMamba_Debug


class nnUNetTrainerMSVMamba_DebugHeld(nnUNetTrainerMSVMamba_Debug):
    """nnUNetTrainerMSVMamba_Debug that, under a test's handshake, waits at the start of the first epoch that
    follows a saved checkpoint_latest.pth (saved whole: the save returned before), until the test kills it.
    Without a handshake (the resumed run) it trains as its parent does."""

    def on_epoch_start(self) -> None:
        super().on_epoch_start()
        handshake = Handshake.from_environment()
        if handshake is not None and os.path.isfile(os.path.join(self.output_folder, "checkpoint_latest.pth")):
            handshake.wait_here()
