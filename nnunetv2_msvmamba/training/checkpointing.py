"""Checkpoints that are whole or absent. nnU-Net writes `checkpoint_latest.pth` in place: a kill while it is
being written (a cluster's time limit, a power cut) leaves a torn file, and `nnUNetv2_train ... --c` then
stops with PyTorch's zip-archive traceback. Our trainers write each checkpoint to a temporary file beside it
and rename it into place; resuming from a torn checkpoint (written before this, or by a stock trainer) falls
back, with a warning, to the next whole one in nnU-Net's own order of preference."""
from __future__ import annotations

import os
import sys
import zipfile
from typing import Optional, Union

# The order in which nnU-Net's `--c` looks for a checkpoint to continue from (run_training.maybe_load_checkpoint).
CHECKPOINT_PREFERENCE = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


def partial_name(filename: str) -> str:
    """Where a checkpoint is written before it is renamed into place: hidden, in the same folder (a rename
    within one file system is atomic)."""
    folder, name = os.path.split(filename)
    return os.path.join(folder, f".{name}.partial")


def is_whole_checkpoint(filename: str) -> bool:
    """torch.save writes a zip archive whose directory comes last, so a file cut short has none: this reads
    only that directory, not the tensors."""
    try:
        with zipfile.ZipFile(filename):
            return True
    except (zipfile.BadZipFile, OSError):
        return False


def fallback_for(damaged: str) -> Optional[str]:
    """The first whole checkpoint beside `damaged`, in nnU-Net's order of preference."""
    folder = os.path.dirname(damaged)
    for name in CHECKPOINT_PREFERENCE:
        candidate = os.path.join(folder, name)
        if os.path.abspath(candidate) != os.path.abspath(damaged) and os.path.isfile(candidate) \
                and is_whole_checkpoint(candidate):
            return candidate
    return None


class AtomicCheckpoints:
    """Mixin for an nnU-Net trainer (put it before the trainer class in the bases): checkpoints are saved
    atomically, and loading a torn one falls back to a whole one with a warning."""

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)  # writes nothing: only rank 0 saves, and only when enabled
            return
        partial = partial_name(filename)
        if os.path.isfile(partial):  # left by a run killed while saving: never rename those bytes into place
            os.remove(partial)
        try:
            super().save_checkpoint(partial)
            with open(partial, "rb") as written:
                os.fsync(written.fileno())
            os.replace(partial, filename)
        except BaseException:
            if os.path.isfile(partial):
                os.remove(partial)
            raise

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        if isinstance(filename_or_checkpoint, str) and os.path.isfile(filename_or_checkpoint) \
                and not is_whole_checkpoint(filename_or_checkpoint):
            damaged = filename_or_checkpoint
            filename_or_checkpoint = fallback_for(damaged)
            if filename_or_checkpoint is None:
                raise RuntimeError(f"{damaged} is damaged (cut short while it was being written?) and there is no "
                                   f"whole checkpoint beside it to fall back on; start the training again "
                                   f"without --c")
            warning = (f"WARNING: {damaged} is damaged (cut short while it was being written?); continuing from "
                       f"{os.path.basename(filename_or_checkpoint)} instead")
            print(warning, file=sys.stderr)
            self.print_to_log_file(warning, also_print_to_console=False)
        super().load_checkpoint(filename_or_checkpoint)
