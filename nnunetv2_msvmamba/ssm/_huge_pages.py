"""The Numba kernels' large output tensors, backed with transparent huge pages where the user asks for them
(MSVMAMBA_HUGE_PAGES=1) and Linux allows it.

The first write to each 4 KiB page of fresh memory is a page fault. With huge pages (madvise(MADV_HUGEPAGE) over
the whole 2 MiB pages inside each tensor) it is one fault per 2 MiB: on a 2-core AMD EPYC VM the scan's forward at a
full-resolution LMS stage (1024 windows x 64 channels x 256 steps, 67 MB per tensor) took 64 ms instead of 96 on 2
threads. On a 2-core Intel Xeon VM the same request made the every-stage network's CPU training step 1.95x slower
(11.3 s against 5.8 s, median of 3, before the outputs' memory was recycled (_recycled_memory)): there a huge page's
first fault on fresh memory is slow, and a training step's large tensors were fresh memory at every step. So it is
off unless asked for; PyTorch's own THP_MEM_ALLOC_ENABLE=1 does the same for every allocation. Only these tensors
ask, so the user's allocator settings hold everywhere else. Elsewhere (no Linux, THP off), plain tensors.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys

import torch

HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14  # asm-generic's value, which x86 and ARM use
HUGE_PAGES_ENV = "MSVMAMBA_HUGE_PAGES"


@functools.lru_cache(maxsize=None)
def _madvise():
    """libc's madvise on Linux, else None."""
    return ctypes.CDLL(None).madvise if sys.platform.startswith("linux") else None


def huge_pages_requested() -> bool:
    """Whether MSVMAMBA_HUGE_PAGES asks for huge pages: '1' yes, '0' or unset no, anything else an error."""
    value = os.environ.get(HUGE_PAGES_ENV, "0").strip()
    if value not in ("0", "1", ""):
        raise ValueError(f"{HUGE_PAGES_ENV} must be 1 (huge pages for the Numba kernels' large outputs) or 0 "
                         f"(the default), got {value!r}")
    return value == "1"


def advise_huge_pages(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, its whole 2 MiB pages marked for transparent huge pages where MSVMAMBA_HUGE_PAGES=1 asks for them
    (a tensor smaller than two huge pages is left as it is, and the setting not read for it: this runs in every
    kernel call's serial time). Marked at every call, as the memory may be recycled."""
    size = tensor.numel() * tensor.element_size()
    if size < 2 * HUGE_PAGE or not huge_pages_requested():
        return tensor
    madvise = _madvise()
    if madvise is not None:
        start = -(-tensor.data_ptr() // HUGE_PAGE) * HUGE_PAGE
        end = (tensor.data_ptr() + size) // HUGE_PAGE * HUGE_PAGE
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_HUGEPAGE)  # a refusal changes nothing
    return tensor
