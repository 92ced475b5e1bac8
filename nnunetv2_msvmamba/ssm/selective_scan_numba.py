"""Selective scan as fused, multi-threaded CPU kernels compiled by Numba: the CPU path when `numba` imports.

Same contract as `selective_scan_torch` (and `mamba_ssm`'s `selective_scan_fn`, real A only):

    u, delta, z: (batch, dim, L)     A: (dim, n)     D, delta_bias: (dim,)
    B, C: (dim, n) constant, (batch, n, L), or (batch, groups, n, L) with dim divisible by groups

The kernels work on blocks of LANES channels side by side, channels last (`ChannelBlocks`): every per-element loop
runs over a block's channels, so it vectorises with contiguous loads, one exp2 per channel and state, and B_t and
C_t broadcast, with no sum across a vector except for the gradients of B and C. The Mamba mixer's tensors are
channels last already, and are read and written where they lie (z and dz inside in_proj's output and its gradient);
so is a contiguous channels-first u in whole blocks (the generic mixer's convolution output), which both kernels
transpose a chunk at a time (a channels-last copy that the forward wrote for the backward took a tensor of u's size
in memory, and the scan's autograd step 1-8 % longer); other layouts, and groups of
channels that are no multiple of LANES (padded with zero channels), are copied. A
constant (dim, n) B or C makes each channel a group of its own, and so costs LANES times the work (Mamba's B and C
are input-dependent).
Vectorised over the n states instead, with the channels' rows in parallel, the kernels took 1.3x-1.6x as long for
a forward + backward (each loop over 16 states one vector, with a sum across it at every step).

The forward kernel runs the (batch, channel block) pairs in parallel (`prange`), each sequentially over L with its
n x LANES states in a small local array; softplus(delta + delta_bias), D u and the silu(z) gate are computed
inside it, so no per-element PyTorch work surrounds it. exp(delta A) is taken as exp2(delta A log2(e)) with a
polynomial exp2 that vectorises (float32; float64 inputs use the exact exp2 and compute in float64).

The forward keeps the state at the start of every CHUNK steps (only when a gradient is needed); the backward
walks each block's chunks in reverse, recomputes a chunk's states from its checkpoint into a CHUNK x n x LANES
scratch and runs the adjoint recurrence

    g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}          (g_t = dL/dh_t)

so memory is O(batch * dim * n * L / CHUNK) plus 2 CHUNK x n x LANES per thread. With z the forward also keeps the
output before the gate, y + D u (one tensor of the output's size), from which the backward takes dz, so that it
need not multiply the recomputed states by C again: the gate is shared by the directions and this tensor sums
them, so dz is written once (a bidirectional mixer's forward + backward 7-14 % faster; a single direction no faster,
the extra tensor costing what the multiply saved). The backward runs tasks in parallel, each a batch row and a run
of channel blocks that read the same B/C group; the gradient of B/C is summed over a task's channels into the
task's own partial buffer (no two threads write one element), and where a group has several runs the kernel adds
their buffers into the first once its tasks are done, in parallel over the rows (that buffer, or one run's, is the
gradient): deterministic, whatever the number of threads. Without a gradient to take (prediction) the forward runs
without an autograd node.

What surrounds each launch runs on one thread, and it is what keeps a call from scaling with the threads: it takes
several times as long there as the same code does in a loop of its own, because the kernels' data has pushed the
interpreter's and PyTorch's own code and data out of the core's cache (at 8 x 64 x 1024 on 2 threads, 0.3-0.4 ms of
Python around a 1.5 ms forward). So it does as little as it can: the kernels' inputs and outputs are arranged in
numpy, whose reshapes and transposes cost a fraction of PyTorch's, each tensor is taken into numpy once per call,
nothing is converted to the dtype it has, and no autocast context is entered (no PyTorch op here is one that
autocast changes). At a tiny shape, where the kernels take ~10 us, a forward took 133 -> 78 us with these and a
forward + backward through autograd 504 -> 334 us.

A reverse scan (`reverse=True`, the Mamba mixer's second direction) runs the same kernels, which then take step s
of the scan from the sequence's index L - 1 - s, so the reversed sequence is never copied. The output and the
input gradients come back channels last.

Numba follows PyTorch's thread setting (`torch.get_num_threads()`, capped at Numba's maximum) at every call.
Nothing is compiled at import: the kernels are compiled on first use, for the dtype in use, and kept in Numba's
on-disk cache (`__pycache__` beside this file, or Numba's user-wide cache directory where that is not writable,
or NUMBA_CACHE_DIR), so later processes load them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import math
import os
import sys
import threading
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch

from ._recycled_memory import empty_output, numpy_dtype_of
from .selective_scan_torch import _groups, compute_dtype_for

# Steps between checkpointed states: L / CHUNK states per channel are kept, CHUNK x n are recomputed per thread.
# Each chunk runs some twenty short loops whose set-up (LLVM's overlap checks, vector prologues) is paid per chunk:
# 128 instead of 64 made a forward + backward faster in 13 of 15 alternated comparisons (the README's shapes, 1 and
# 2 threads, AMD EPYC; 3-30 %, about 10 % typically), and 256 was no faster than 128, with twice the scratch.
CHUNK = 128
# Channels per block, the trip count of the kernels' vectorised loops: two AVX-512 vectors of float32. 32 instead of
# 16 made the backward kernel 10-15 % faster (the README's shapes, 1 thread), each loop's set-up being paid for twice
# the work; 64 was no faster, with twice the scratch. A group of channels that is no multiple of it is padded.
LANES = 32
# PyTorch copies a transposed matrix in cache-sized blocks, but a transposed (batch, dim, L) tensor along its rows
# with a cache miss at each element: one copy per batch row took 1/2 to 1/5 the time from (dim, L) = (64, 1024) up,
# on 1 and 2 threads. The tensor's copy is parallel and the matrices' are not: above 4 threads it is kept.
MATRIX_COPY_MIN_ELEMENTS, MATRIX_COPY_MAX_THREADS = 1 << 16, 4
TASKS_PER_THREAD = 2  # backward tasks per thread at least (load balance), where the batch and groups allow
LOG2_E = math.log2(math.e)
LN_2 = math.log(2.0)
# Numba's default (workqueue) threading layer must not be entered by two Python threads at once
_launch_lock = threading.Lock()


@functools.lru_cache(maxsize=None)
def compiled_kernels(module: str, compute_dtype: torch.dtype, *specialisation: int) -> SimpleNamespace:
    """The compiled kernels of `module` (a Numba kernel module of this package) for float32 or float64 (and the
    module's `specialisation` arguments): compiled, or loaded from Numba's cache, on the first call for them. The
    module imports numba: only where it runs."""
    kernels = importlib.import_module(f"{__package__}.{module}")
    with _pytorch_threads_kept():
        return kernels.compiled(compute_dtype == torch.float64, *specialisation)


def _kernels(compute_dtype: torch.dtype) -> SimpleNamespace:
    """The scan's forward and backward kernels for float32 or float64 and blocks of LANES channels."""
    return compiled_kernels("_numba_kernels", compute_dtype, LANES)


@contextlib.contextmanager
def _pytorch_threads_kept():
    """Restores PyTorch's thread count if Numba changed it: Numba's OpenMP threading layer, started when the
    kernels are first loaded, may share PyTorch's OpenMP runtime and set its thread count to all cores, which would
    override nnU-Net's or the user's setting."""
    torch_threads = torch.get_num_threads()
    try:
        yield torch_threads
    finally:
        _restore_pytorch_threads(torch_threads)


def _restore_pytorch_threads(torch_threads: int) -> None:
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)


def set_threads_from_torch() -> int:
    """Numba's thread count for the next launch: PyTorch's, capped at the threads Numba started with. (Without
    `_pytorch_threads_kept`'s generator, which took 40 % of this function's time: it runs at every launch, in the
    serial time around the kernels; see the module's docstring.)"""
    import numba
    torch_threads = torch.get_num_threads()
    threads = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    _restore_pytorch_threads(torch_threads)
    _warn_if_bound_to_fewer_cpus(torch_threads)
    return threads


def _cpus_of_this_thread() -> Optional[set]:
    """The CPUs this thread may run on, where the system says (Linux); None elsewhere."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


_binding_checked = False


def _warn_if_bound_to_fewer_cpus(torch_threads: int) -> None:
    """Once per process, at the first launch, says so where this thread may run on fewer CPUs than PyTorch has
    threads: with OMP_PROC_BIND (or GOMP_CPU_AFFINITY) set, PyTorch's OpenMP runtime binds the main thread to one
    CPU as it loads, before any scan; Numba then starts one thread, or its threads inherit the binding, and the
    scan runs on one CPU while PyTorch's own threads use all of theirs (measured, 2 threads on 2 cores: the same
    scan time as 1 thread; 1.9x-2.0x faster unbound)."""
    global _binding_checked
    if _binding_checked:
        return
    _binding_checked = True
    cpus = _cpus_of_this_thread()
    if cpus is None or len(cpus) >= torch_threads:
        return
    binding = ", ".join(f"{name}={os.environ[name]}" for name in ("OMP_PROC_BIND", "GOMP_CPU_AFFINITY", "OMP_PLACES")
                        if name in os.environ) or "OMP_PROC_BIND and GOMP_CPU_AFFINITY unset"
    print(f"[nnunetv2_msvmamba] the Numba selective scan runs on {len(cpus)} CPU(s) while PyTorch uses "
          f"{torch_threads} threads: this thread is bound to CPU(s) {sorted(cpus)} ({binding}); unset OMP_PROC_BIND "
          f"and GOMP_CPU_AFFINITY for the scan to run on {torch_threads} CPUs", file=sys.stderr, flush=True)


def _coefficient_layout(x: np.ndarray) -> np.ndarray:
    """One direction's B or C as the kernels read it, a C-contiguous (batch or 1, groups, L or 1, n) array with n
    innermost, its steps in the sequence's order (a reverse scan reads them from the end): constant (dim, n) ->
    (1, dim, 1, n); (batch, n, L) -> (batch, 1, L, n); (batch, G, n, L) -> (batch, G, L, n). No copy for B and C as
    contiguous (batch, L, n) tensors transposed, which is how the Mamba mixer passes them."""
    if x.ndim == 2:
        return np.ascontiguousarray(x).reshape(1, x.shape[0], 1, x.shape[1])
    return np.ascontiguousarray((x[:, None] if x.ndim == 3 else x).swapaxes(2, 3))


def _input_groups(x: torch.Tensor) -> int:
    """Channel groups that share one B/C vector per step: a constant B/C is per channel (dim groups)."""
    return x.shape[0] if x.dim() == 2 else (1 if x.dim() == 3 else x.shape[1])


@dataclasses.dataclass(frozen=True)
class ChannelBlocks:
    """How the kernels see `dim` channels in `groups` groups: each group's channels in blocks of LANES, side by side
    (channels last), the group's last block padded with zero channels where its channels are no multiple of LANES.
    Unpadded, a channels-last tensor is its blocks as it lies in memory. The kernels' inputs are arranged in numpy,
    whose reshapes and transposes take a fraction of PyTorch's time per call (see the module's docstring)."""
    dim: int
    groups: int

    @functools.cached_property
    def per_group(self) -> int:
        return self.dim // self.groups

    @functools.cached_property
    def blocks_per_group(self) -> int:
        return -(-self.per_group // LANES)

    @functools.cached_property
    def blocks(self) -> int:
        return self.groups * self.blocks_per_group

    @functools.cached_property
    def padded(self) -> bool:
        return self.per_group % LANES != 0

    def pad(self, x: np.ndarray) -> np.ndarray:
        """(..., dim) -> C-contiguous (..., blocks, LANES): a view where x is C-contiguous and nothing is padded."""
        if not self.padded:
            return np.ascontiguousarray(x).reshape(*x.shape[:-1], self.blocks, LANES)
        padded = np.zeros((*x.shape[:-1], self.groups, self.blocks_per_group * LANES), dtype=x.dtype)
        padded[..., :self.per_group] = x.reshape(*x.shape[:-1], self.groups, self.per_group)
        return padded.reshape(*x.shape[:-1], self.blocks, LANES)

    def unpad(self, x: np.ndarray) -> np.ndarray:
        """(..., blocks, LANES) -> (..., dim): a view where x is C-contiguous and nothing is padded, else a copy."""
        if not self.padded:
            return x.reshape(*x.shape[:-2], self.dim)
        x = x.reshape(*x.shape[:-2], self.groups, self.blocks_per_group * LANES)[..., :self.per_group]
        return np.ascontiguousarray(x).reshape(*x.shape[:-2], self.dim)

    def blocked(self, x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
        """A (batch, dim, L) tensor as the kernels' (batch, L, blocks, LANES) numpy array in `dtype`: its own memory
        where it is channels last and contiguous in that dtype (the mixer's layout), else a copy."""
        x = _in_dtype(x.detach(), dtype)
        return self.pad((x if self.padded else _channels_last(x)).transpose(1, 2).numpy())

    def blocked_in_place(self, x: torch.Tensor, dtype: torch.dtype) -> Optional[tuple]:
        """(array, first block) with x's channels at blocks first, first + 1, ... of an array of whole rows
        (batch, L, row / LANES, LANES) over x's own memory, as z and dz lie in the mixer's in_proj output and its
        gradient; None where x's layout or dtype does not allow that."""
        if self.padded or x.dtype != dtype:
            return None
        rows = x.transpose(1, 2)
        batch, length, dim = rows.shape
        row = rows.stride(1)
        first = rows.storage_offset() % row if row else 0
        start = rows.storage_offset() - first
        if (rows.stride(2) != 1 or length < 2 or row % LANES or first % LANES or first + dim > row
                or (batch > 1 and rows.stride(0) != length * row)
                or start + batch * length * row > rows.untyped_storage().nbytes() // rows.element_size()):
            return None
        whole_rows = torch.as_strided(rows.detach(), (batch, length, row // LANES, LANES),
                                      (length * row, row, LANES, 1), start)
        return whole_rows.numpy(), first // LANES

    def blocked_from(self, x: Optional[torch.Tensor], dtype: torch.dtype) -> tuple:
        """(array, first block) for z: in place where it can be (`blocked_in_place`), else a blocked copy (first
        block 0); an absent z is an empty array."""
        if x is None:
            return _no_array((0, 0, 0, LANES), dtype), 0
        return self.blocked_in_place(x, dtype) or (self.blocked(x, dtype), 0)

    def channels(self, x: torch.Tensor) -> torch.Tensor:
        """A blocked (..., batch, L, blocks, LANES) tensor as (..., batch, dim, L): a channels-last view where nothing
        is padded."""
        return torch.from_numpy(self.unpad(x.numpy()).swapaxes(-1, -2))

    def per_channel(self, x: Optional[torch.Tensor], dtype: torch.dtype) -> np.ndarray:
        """A (dim,) parameter as a (blocks, LANES) numpy array; an absent one as an empty array."""
        if x is None:
            return _no_array((0, LANES), dtype)
        return self.pad(_array(x, dtype))

    def per_channel_and_state(self, x: torch.Tensor, dtype: torch.dtype, scale: float) -> np.ndarray:
        """A (dim, n) parameter times `scale` as a (blocks, n, LANES) numpy array."""
        return np.ascontiguousarray(self.pad(_array(x, dtype).T * scale).swapaxes(0, 1))

    def states(self, x: np.ndarray) -> torch.Tensor:
        """Per-channel states (..., blocks, n, LANES) as a (..., dim, n) tensor."""
        return torch.from_numpy(self.unpad(x.swapaxes(-3, -2)).swapaxes(-1, -2))

    def per_channel_sum(self, x: np.ndarray) -> torch.Tensor:
        """Per-row parts (directions, batch, blocks, LANES) of a (dim,) gradient, summed, as a tensor."""
        return torch.from_numpy(self.unpad(x.sum(axis=(0, 1))))


@functools.lru_cache(maxsize=None)
def _no_array(shape: tuple, dtype: torch.dtype) -> np.ndarray:
    """An empty numpy array of `shape` in `dtype`, for a kernel argument that is absent (one per shape and dtype,
    shared: nothing is ever written to it)."""
    return np.empty(shape, dtype=numpy_dtype_of(dtype))


def _channel_blocks(batch: int, blocks: int, groups: int, threads: int) -> np.ndarray:
    """First block of each backward task's run of channel blocks (and `blocks` at the end): every group's blocks
    split into as many runs as it takes for batch x runs to give each thread TASKS_PER_THREAD tasks."""
    per_group = blocks // groups
    splits = min(per_group, max(1, math.ceil(TASKS_PER_THREAD * threads / (batch * groups))))
    starts = [group * per_group + (split * per_group) // splits for group in range(groups) for split in range(splits)]
    return np.array(starts + [blocks], dtype=np.int64)


def _in_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in `dtype`: x itself where it is (without a call into PyTorch)."""
    return x if x.dtype == dtype else x.to(dtype)


def _array(x: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    """x in `dtype` as a numpy array, over x's own memory where x is in that dtype."""
    return _in_dtype(x.detach(), dtype).numpy()


class _KernelInputs:
    """The inputs both kernels take, as numpy arrays in the compute dtype, each tensor taken into numpy once per call
    and each direction's arrays cut from it there. u and delta are the stacked (directions, batch, dim, L) tensors
    that `scan_forward` takes, each direction channels last (or u channels first where `channels_first`); A, D, z and
    delta_bias are shared by the directions."""

    def __init__(self, layout: ChannelBlocks, u, delta, A, B, C, D, z, delta_bias, dtype: torch.dtype) -> None:
        self.layout = layout
        self.channels_first = _reads_channels_first(layout, u, dtype)
        self.u, self.delta = _array(u, dtype), _array(delta, dtype)
        self.B, self.C = _array(B, dtype), _array(C, dtype)
        self.shared_first = (*layout.blocked_from(z, dtype), layout.per_channel_and_state(A, dtype, LOG2_E))
        self.shared_last = (layout.per_channel(D, dtype), layout.per_channel(delta_bias, dtype))
        self.no_blocks, self.no_rows = _no_array((0, 0, 0, LANES), dtype), _no_array((0, 0, 0), dtype)

    def first(self, s: int) -> tuple:
        """The arguments both kernels take first, for direction s: u blocked (empty where the kernels read it
        channels first), delta blocked, z blocked with its first block, A log2(e) (blocks, n, LANES), B and C in the
        kernels' layout, D and delta_bias blocked."""
        u_blocked = self.no_blocks if self.channels_first else self.layout.pad(self.u[s].swapaxes(1, 2))
        return (u_blocked, self.layout.pad(self.delta[s].swapaxes(1, 2)), *self.shared_first,
                _coefficient_layout(_direction(self.B, s)), _coefficient_layout(_direction(self.C, s)),
                *self.shared_last)

    def u_first(self, s: int) -> np.ndarray:
        """The kernels' u_first: direction s's u as it lies where they read it channels first, else empty."""
        return self.u[s] if self.channels_first else self.no_rows


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """A (batch, dim, L) tensor as a view of a contiguous (batch, L, dim) one: itself where it is one already."""
    rows = x.transpose(1, 2)
    if rows.is_contiguous():
        return x
    copy = empty_output(rows.shape, x.dtype)
    by_matrix = x[0].numel() >= MATRIX_COPY_MIN_ELEMENTS and torch.get_num_threads() <= MATRIX_COPY_MAX_THREADS
    if by_matrix and x.is_contiguous():
        for matrix, transposed in zip(copy, x):
            matrix.copy_(transposed.t())
    else:
        copy.copy_(rows)
    return copy.transpose(1, 2)


def _layout(dim: int, B: torch.Tensor, C: torch.Tensor) -> ChannelBlocks:
    """The channel blocks for B and C of the first direction (every direction's have the same groups)."""
    return _channel_blocks_of(dim, math.lcm(_input_groups(_direction(B, 0)), _input_groups(_direction(C, 0))))


@functools.lru_cache(maxsize=None)
def _channel_blocks_of(dim: int, groups: int) -> ChannelBlocks:
    """One ChannelBlocks per (dim, groups), its numbers worked out once (the serial time around a launch: see the
    module's docstring)."""
    return ChannelBlocks(dim, groups)


def _sum_blocks(partial: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """The gradient of B or C from the kernels' partial sums (batch, parts, L or 1, n), one per task's run of
    channel blocks, where the kernel has added each group's parts into its first: that first part of each group
    (summed over the batch for a constant (dim, n) one), in `like`'s layout, a view of `partial` (as PyTorch's sum
    would copy it: 0.1-0.3 ms per call at the README's shapes, on one thread), taken in numpy (the first thing
    after the backward kernel: PyTorch's slicing and transposing took 70 us there, cold; see the module's
    docstring)."""
    groups = _input_groups(like)
    firsts = partial[:, ::partial.shape[1] // groups]
    if like.dim() == 2:
        return torch.from_numpy(firsts.sum(axis=0)[:, 0])
    return torch.from_numpy(firsts.swapaxes(2, 3).reshape(like.shape))


def _direction(x, s: int):
    """Direction s of a stacked B or C (a tensor or a numpy array); a constant (dim, n) one is every direction's."""
    return x if x.ndim == 2 else x[s]


def _reads_channels_first(layout: ChannelBlocks, u: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether the kernels read u (directions, batch, dim, L) as it lies, channels first: contiguous, in the compute
    dtype, in whole blocks. Made channels last by PyTorch instead, its copy was a fifth of a forward call
    on 1 thread and a third on 2 (serial, it kept the call from scaling); the kernel transposes a chunk at a time in
    the cache, in parallel."""
    return (u.dtype == dtype and u.is_contiguous() and not layout.padded and u.shape[-1] > 1
            and not u.transpose(-1, -2).is_contiguous())


def scan_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                 delta_softplus: bool, reverse: tuple, for_backward: bool, *, with_last_state: bool = False) -> tuple:
    """The forward kernels over the directions of stacked inputs (u, delta (directions, batch, dim, L); B, C
    (directions, batch, [groups,] n, L) or one constant (dim, n)): (out, last_state, checkpoints, gate_inputs) in the
    compute dtype, out (batch, dim, L) summed over the directions and channels last, last_state (directions, batch,
    dim, n) `with_last_state`, else None (taking it into PyTorch's layout is serial time after the kernels). With
    `for_backward`, checkpoints holds the states every CHUNK steps and gate_inputs (with z) the output before the
    gate, y + D u, summed over the directions, both in the kernels' blocked layout; both are empty otherwise. The
    backward takes the same inputs."""
    _, batch, dim, length = u.shape
    dstate = A.shape[1]
    dtype = compute_dtype_for(u)
    layout = _layout(dim, B, C)
    inputs = _KernelInputs(layout, u, delta, A, B, C, D, z, delta_bias, dtype)
    out = empty_output((batch, length, layout.blocks, LANES), dtype)
    last_state = np.empty((len(reverse), batch, layout.blocks, dstate, LANES), dtype=numpy_dtype_of(dtype))
    chunks = math.ceil(length / CHUNK) if for_backward else 0
    checkpoints = empty_output((len(reverse), batch, chunks, layout.blocks, dstate, LANES), dtype)
    gate_inputs = empty_output(out.shape if for_backward and z is not None else (0, 0, 0, LANES), dtype)
    out_array, checkpoint_arrays, gate_array = out.numpy(), checkpoints.numpy(), gate_inputs.numpy()
    kernels = _kernels(dtype)
    with _launch_lock:
        set_threads_from_torch()
        for s, backwards in enumerate(reverse):
            kernels.forward(*inputs.first(s), bool(delta_softplus), CHUNK, s > 0, backwards, out_array, last_state[s],
                            checkpoint_arrays[s], gate_array, inputs.u_first(s), kernels.exp2_constants)
    return layout.channels(out), layout.states(last_state) if with_last_state else None, checkpoints, gate_inputs


def scan_backward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: Optional[torch.Tensor], z: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor],
                  delta_softplus: bool, reverse: tuple, checkpoints: torch.Tensor, gate_inputs: torch.Tensor,
                  dout: torch.Tensor, dz: Optional[torch.Tensor] = None) -> SimpleNamespace:
    """The backward kernels for `scan_forward`'s inputs, checkpoints and gate inputs, given the output's gradient: du
    and ddelta ((directions, batch, dim, L), channels last), dA, dD, ddelta_bias, dz (written into `dz` where given,
    in any layout) and the gradient of B and of C per direction (lists, each in that direction's layout), all in the
    compute dtype."""
    _, batch, dim, length = u.shape
    dstate = A.shape[1]
    dtype = checkpoints.dtype
    layout = _layout(dim, B, C)
    inputs = _KernelInputs(layout, u, delta, A, B, C, D, z, delta_bias, dtype)
    kernels = _kernels(dtype)
    du, ddelta = (empty_output((len(reverse), batch, length, layout.blocks, LANES), dtype) for _ in range(2))
    dz_array, dz_first = inputs.no_blocks, 0
    dz_blocked = None
    if z is not None:
        in_place = layout.blocked_in_place(dz, dtype) if dz is not None else None
        if in_place is None:
            dz_blocked = empty_output((batch, length, layout.blocks, LANES), dtype)
        dz_array, dz_first = in_place or (dz_blocked.numpy(), 0)
    numpy_dtype = numpy_dtype_of(dtype)
    dA_rows = np.empty((len(reverse), batch, layout.blocks, dstate, LANES), dtype=numpy_dtype)
    dD_rows, dbias_rows = (np.empty((len(reverse), batch, layout.blocks, LANES), dtype=numpy_dtype) for _ in range(2))
    dout_blocked, checkpoint_arrays, gate_array = layout.blocked(dout, dtype), checkpoints.numpy(), gate_inputs.numpy()
    du_arrays, ddelta_arrays = du.numpy(), ddelta.numpy()
    dB, dC = [], []
    with _launch_lock:
        threads = set_threads_from_torch()
        block_starts = _channel_blocks(batch, layout.blocks, layout.groups, threads)
        parts = len(block_starts) - 1

        def partial(coefficient: torch.Tensor) -> np.ndarray:  # the kernel zeroes it
            steps = 1 if coefficient.dim() == 2 else length
            return empty_output((batch, parts, steps, dstate), dtype).numpy()
        for s, backwards in enumerate(reverse):
            B_s, C_s = _direction(B, s), _direction(C, s)
            dB_partial, dC_partial = partial(B_s), partial(C_s)
            kernels.backward(*inputs.first(s), bool(delta_softplus), CHUNK, s == 0, backwards, checkpoint_arrays[s],
                             gate_array, inputs.u_first(s), dout_blocked, block_starts, du_arrays[s],
                             ddelta_arrays[s], dz_array, dz_first, dA_rows[s], dB_partial, dC_partial, dD_rows[s],
                             dbias_rows[s], kernels.exp2_constants)
            dB.append(_sum_blocks(dB_partial, B_s))
            dC.append(_sum_blocks(dC_partial, C_s))
    if dz_blocked is not None:
        dz = layout.channels(dz_blocked) if dz is None else dz.copy_(layout.channels(dz_blocked))
    return SimpleNamespace(du=layout.channels(du), ddelta=layout.channels(ddelta),
                           dA=layout.states(dA_rows.sum(axis=(0, 1))), dB=dB, dC=dC,
                           dD=layout.per_channel_sum(dD_rows), dz=dz, ddelta_bias=layout.per_channel_sum(dbias_rows))


def _stacked_inputs(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> tuple:
    """u, delta, B and C of one scan as `scan_forward` takes them, with the directions axis (one direction), after
    the shape checks. delta is made channels last once, here, where the kernels would copy it in the forward and again
    in the backward, and so is u unless the kernels read it as it lies, channels first (no copy where they are
    channels last already)."""
    if A.is_complex():
        raise NotImplementedError("the Numba selective scan supports real A only")
    u, delta = u.unsqueeze(0), _channels_last(delta).unsqueeze(0)
    B, C = (t if t.dim() == 2 else t.unsqueeze(0) for t in (B, C))
    for name, coefficient in (("B", B), ("C", C)):
        _groups(_direction(coefficient, 0), name, u.shape[2], A.shape[1])  # the shape checks, with their messages
    if not _reads_channels_first(_layout(u.shape[2], B, C), u, compute_dtype_for(u)):
        u = _channels_last(u[0]).unsqueeze(0)
    return u, delta, B, C


def _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, reverse: bool, for_backward: bool,
          with_last_state: bool) -> tuple:
    """One scan's forward: (out in u's dtype, last_state (None without `with_last_state`), the tensors its backward
    takes: u as the backward takes it, delta, A, B, C, D, z, delta_bias, checkpoints, gate inputs; the last two
    empty without `for_backward`)."""
    u_stacked, delta, B, C = _stacked_inputs(u, delta, A, B, C)
    out, last_state, checkpoints, gate_inputs = scan_forward(u_stacked, delta, A, B, C, D, z, delta_bias,
                                                             delta_softplus, (reverse,), for_backward,
                                                             with_last_state=with_last_state)
    return (_in_dtype(out, u.dtype), last_state[0] if with_last_state else None,
            (u_stacked, delta, A, B, C, D, z, delta_bias, checkpoints, gate_inputs))


class _SelectiveScanNumba(torch.autograd.Function):
    """Upstream's scan, forward or reversed (`reverse`), on the Numba kernels: the forward keeps the state every
    CHUNK steps and the output before the gate (only when a gradient is needed); the backward recomputes the rest
    from them. u and delta are made channels last once, in the forward (no copy where they are already; u not where
    the kernels read it as it lies, channels first), and both run the kernels on the inputs' memory where they are in
    the compute dtype already. The inputs get the directions axis that `scan_forward` takes here, not outside: a view
    made outside would not reach autograd inside the custom op's backward."""
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, reverse: bool,
                with_last_state: bool):
        ctx.input_dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
        needs_grad = any(ctx.needs_input_grad[:8])
        out, last_state, for_backward = _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, needs_grad,
                                              with_last_state)
        ctx.delta_softplus, ctx.reverse = bool(delta_softplus), reverse
        if needs_grad:
            ctx.save_for_backward(*for_backward)
        if with_last_state:
            ctx.mark_non_differentiable(last_state)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, unused_last_state_grad):
        u, delta, A, B, C, D, z, delta_bias, checkpoints, gate_inputs = ctx.saved_tensors
        grads = scan_backward(u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus, (ctx.reverse,), checkpoints,
                              gate_inputs, dout)
        grads = [grads.du[0], grads.ddelta[0], grads.dA, grads.dB[0], grads.dC[0],
                 grads.dD if D is not None else None, grads.dz if z is not None else None,
                 grads.ddelta_bias if delta_bias is not None else None]
        grads = [_in_dtype(g, dtype) if g is not None else None for g, dtype in zip(grads, ctx.input_dtypes)]
        return (*grads, None, None, None, None)


def check_cpu(x: torch.Tensor, what: str) -> None:
    """A clear error where a Numba op (`what`) is given tensors on another device."""
    if x.device.type != "cpu":
        raise RuntimeError(f"the Numba {what} runs on CPU tensors, got tensors on {x.device}")


def selective_scan_numba(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                         C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                         delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                         return_last_state: bool = False, reverse: bool = False):
    """Selective scan on CPU tensors with the Numba kernels; returns `out` or `(out, last_state)` like upstream's
    `selective_scan_fn`. Computes in float32 (float64 for float64 `u`) whatever the autocast state; `out` and the
    gradients come back in the inputs' dtypes (and `out` in `u`'s memory layout), `last_state` in the compute
    dtype. No gradient flows through `last_state`.

    `reverse` scans from the last step to the first: the same as flipping every input along L, scanning, and
    flipping `out` back (`last_state` is then the state after step 0), without making any of those copies."""
    check_cpu(u, "selective scan")
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        out, last_state = _SelectiveScanNumba.apply(*inputs, delta_softplus, reverse, return_last_state)
    else:  # no gradient can flow (inference): no autograd node, whose set-up was part of the call's serial time
        out, last_state, _ = _scan(*inputs, delta_softplus, reverse, False, return_last_state)
    return (out, last_state) if return_last_state else out
