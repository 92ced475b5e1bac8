"""A pool of recycled memory for the tests: every output of the Numba kernels, whatever its size, in recycled memory
filled with bytes 0xFF first (NaN in every float dtype), so that a kernel that reads an element of its output before
writing it, or leaves one unwritten, gives NaN in a test instead of the zeros that fresh memory happens to hold. It
counts its fresh allocations."""
from __future__ import annotations

import numpy as np
import torch

from nnunetv2_msvmamba.ssm._recycled_memory import RecycledMemory

POISON_BYTE = 0xFF


class PoisonedMemory(RecycledMemory):
    """RecycledMemory for tensors of every size, each handed out filled with POISON_BYTE; `allocations` counts the
    fresh buffers."""

    def __init__(self) -> None:
        super().__init__(min_bytes=0)
        self.allocations = 0

    def _allocate(self, nbytes: int) -> np.ndarray:
        self.allocations += 1
        return super()._allocate(nbytes)

    def empty(self, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        tensor = super().empty(shape, dtype)
        tensor.view(torch.uint8).fill_(POISON_BYTE)
        return tensor
