"""Large CPU tensors whose memory the kernel backs with transparent huge pages where Linux allows it.

The Numba kernels write their outputs into freshly allocated tensors, and the first write to each 4 KiB page of a
fresh allocation is a page fault: at a full-resolution LMS stage (1024 windows x 64 channels x 256 steps, 67 MB per
tensor) the faults took a third of the scan's forward (2 threads: 96 ms with them, 64 ms on huge pages), and they
scale badly over threads. PyTorch does the same for every allocation with THP_MEM_ALLOC_ENABLE=1; here only the
scan's own large tensors ask for it (madvise(MADV_HUGEPAGE) over the whole 2 MiB pages inside each), so that the
user's allocator settings hold everywhere else. Elsewhere (no Linux, THP off), plain tensors.
"""
from __future__ import annotations

import ctypes
import functools
import sys

import torch

HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14  # asm-generic's value, which x86 and ARM use


@functools.lru_cache(maxsize=None)
def _madvise():
    """libc's madvise on Linux, else None."""
    return ctypes.CDLL(None).madvise if sys.platform.startswith("linux") else None


def empty_on_huge_pages(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """torch.empty(shape, dtype) on the CPU, its whole 2 MiB pages marked for transparent huge pages before anything
    touches them (a tensor smaller than two huge pages is left as it is)."""
    tensor = torch.empty(shape, dtype=dtype)
    size = tensor.numel() * tensor.element_size()
    madvise = _madvise() if size >= 2 * HUGE_PAGE else None
    if madvise is not None:
        start = -(-tensor.data_ptr() // HUGE_PAGE) * HUGE_PAGE
        end = (tensor.data_ptr() + size) // HUGE_PAGE * HUGE_PAGE
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_HUGEPAGE)  # a refusal changes nothing
    return tensor
