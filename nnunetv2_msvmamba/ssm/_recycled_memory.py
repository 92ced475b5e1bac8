"""The Numba kernels' output tensors, in memory kept from the kernels' earlier outputs of the same size.

A kernel writes each output into memory of its own, and a fresh allocation's first write to each 4 KiB page is a page
fault: glibc maps every allocation above 32 MiB anew and gives it back to the system when it is freed, so a training
step's large outputs are fresh memory at every step. At a full-resolution LMS stage (1024 windows x 64 channels x 256
steps, 67 MB per tensor) that was a sixth of the scan's forward on one thread and a third of its forward + backward
on two. So these outputs' memory is recycled, as PyTorch's CUDA caching allocator does: when the last tensor on an
output's memory dies, the memory goes back to a pool, and the next output of the same size takes it.

The pool keeps at most KEPT_PER_MOST_USED (2) times the most its outputs held at once, in use and free together (an
output that finds nothing of its size first gives back, the sizes longest unused first, what would take the pool
above that), and `release_recycled_memory()` gives back what no tensor uses. A training step's backward needs other
sizes than its forward, so the pool holds both: with LMS on every stage, 1245 MiB for a most in use of 997 MiB, and
after the first step nothing allocated (the step 1.06x faster; the default placement's 121 MiB for 96, 1.02x).
Outputs under RECYCLED_MIN_BYTES are plain tensors: glibc keeps memory of that size for reuse itself.
"""
from __future__ import annotations

import collections
import functools
import math
import os
import threading
import weakref
from typing import Optional

import numpy as np
import torch

from ._huge_pages import advise_huge_pages

RECYCLED_MIN_BYTES = 1 << 20
ALIGNMENT = 64  # bytes, as PyTorch aligns its CPU tensors
# The most the pool keeps (in use and free) per byte of the most in use at once. At 1, the buffers a training step's
# backward needs took the room of those its forward needs, and the other way round: every step allocated afresh
# what it had just given back (the every-stage network: 524 MiB a step, and slower than without a pool); at 2, it
# kept 1.25x and allocated nothing after the first step.
KEPT_PER_MOST_USED = 2


class RecycledMemory:
    """A pool of memory for tensors of sizes that recur. `empty` gives a tensor in a buffer of its size from the pool
    or a fresh one; the buffer returns to the pool when the last tensor on it (a view, a numpy array) dies. The
    buffers in use and the free ones together never exceed KEPT_PER_MOST_USED times `most_used_bytes`, the most in
    use at once since the pool began or was last released."""

    def __init__(self, min_bytes: int = RECYCLED_MIN_BYTES) -> None:
        self.min_bytes = min_bytes
        self._lock = threading.Lock()
        self._free: collections.OrderedDict[int, list[np.ndarray]] = collections.OrderedDict()  # by size, oldest first
        # buffers whose tensors died: appended by their weak references' callbacks, which run wherever the last
        # reference goes (in any thread, even inside this pool's own code), so they only take their own entry out of
        # `_watched` and append, and `empty` files them under the lock
        self._returned: collections.deque[np.ndarray] = collections.deque()
        # id of the weak reference to each handed-out tensor's array -> (that reference, its buffer); weakref.finalize
        # did the same at 1.6x the cost (2.2 us a tensor allocated and freed, against 1.4), in every kernel call's
        # serial time
        self._watched: dict[int, tuple[weakref.ref, np.ndarray]] = {}
        self.free_bytes = 0
        self.used_bytes = 0
        self.most_used_bytes = 0

    def empty(self, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised contiguous CPU tensor of `shape` and `dtype`, 64-byte aligned."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < max(self.min_bytes, 1):
            return torch.empty(shape, dtype=dtype)
        with self._lock:
            self._file_returned()
            buffer = self._take(nbytes)
            self.used_bytes += nbytes
            self.most_used_bytes = max(self.most_used_bytes, self.used_bytes)
            if buffer is None:
                self._give_back_free_above(KEPT_PER_MOST_USED * self.most_used_bytes - self.used_bytes)
        if buffer is None:
            buffer = self._allocate(nbytes)
        numpy_dtype = numpy_dtype_of(dtype)
        # the array the tensor keeps alive, and only it: typed and shaped by numpy where numpy has the dtype
        holder = buffer.view() if numpy_dtype is None else buffer.view(numpy_dtype).reshape(shape)
        reference = weakref.ref(holder, self._tensor_died)
        self._watched[id(reference)] = reference, buffer
        tensor = torch.from_numpy(holder)
        return tensor.view(dtype).view(shape) if numpy_dtype is None else tensor

    def release(self) -> None:
        """Gives every buffer that no tensor uses back to the system, and starts counting the most in use anew."""
        with self._lock:
            self._file_returned()
            self._give_back_free_above(0)
            self.most_used_bytes = self.used_bytes

    def after_fork_in_child(self) -> None:
        """A new lock: a child forked while another thread held this one would wait for it for ever."""
        self._lock = threading.Lock()

    def _tensor_died(self, reference: weakref.ref) -> None:
        self._returned.append(self._watched.pop(id(reference))[1])

    def _allocate(self, nbytes: int) -> np.ndarray:
        """`nbytes` fresh bytes, ALIGNMENT-aligned."""
        memory = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
        offset = -memory.ctypes.data % ALIGNMENT
        return memory[offset:offset + nbytes]

    def _file_returned(self) -> None:
        while self._returned:
            buffer = self._returned.popleft()
            self.used_bytes -= buffer.nbytes
            self.free_bytes += buffer.nbytes
            self._free.setdefault(buffer.nbytes, []).append(buffer)
            self._free.move_to_end(buffer.nbytes)

    def _take(self, nbytes: int) -> Optional[np.ndarray]:
        return self._pop_free(nbytes) if nbytes in self._free else None

    def _give_back_free_above(self, limit: int) -> None:
        """Drops free buffers, the sizes longest unused first, until the pool's free bytes are at most `limit`."""
        while self.free_bytes > limit:
            self._pop_free(next(iter(self._free)))

    def _pop_free(self, nbytes: int) -> np.ndarray:
        """A free buffer of `nbytes` (the pool has one), out of the pool."""
        buffers = self._free[nbytes]
        buffer = buffers.pop()
        if not buffers:
            del self._free[nbytes]
        self.free_bytes -= nbytes
        return buffer


@functools.lru_cache(maxsize=None)
def numpy_dtype_of(dtype: torch.dtype) -> Optional[np.dtype]:
    """numpy's dtype for a PyTorch dtype; None where numpy has none (bfloat16)."""
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:
        return None


recycled_memory = RecycledMemory()


def _after_fork_in_child() -> None:
    recycled_memory.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def empty_output(shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    """An output tensor for a Numba kernel, in recycled memory where it is large, its whole 2 MiB pages marked for
    transparent huge pages where MSVMAMBA_HUGE_PAGES=1 asks for them."""
    return advise_huge_pages(recycled_memory.empty(shape, dtype))


def release_recycled_memory() -> None:
    """Gives the memory that the Numba kernels keep for their next outputs, and no tensor uses, back to the system."""
    recycled_memory.release()
