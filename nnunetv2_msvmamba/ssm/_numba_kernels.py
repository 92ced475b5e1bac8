"""The Numba kernels of `selective_scan_numba` (imported only where that backend runs: it imports numba).

The functions below are plain Python until `compiled` builds them for one dtype and one block width (`lanes`),
with explicit signatures, so that each is compiled once (and cached on disk). The channels come in blocks of
`lanes` (padded with zero channels where a group's channels are no multiple of it; see
selective_scan_numba.ChannelBlocks), every array C-contiguous with a block's lanes innermost:
u, delta, dout, out, gate_inputs and the input gradients (batch, L, blocks, lanes), or u as it lies channels first
(u_first, (batch, dim, L), whole blocks; u then empty); z and dz (batch, L, blocks', lanes)
with the scan's blocks from `z_first` on (z is the second half of the mixer's in_proj output, read where it lies);
A_log2 = A log2(e) (blocks, n, lanes); D, delta_bias (blocks, lanes), empty when absent, as is z; B and C
(batch or 1, groups, L or 1, n), n innermost (see selective_scan_numba._coefficient_layout); checkpoints (batch,
chunks, blocks, n, lanes); the last argument of each kernel is EXP2_CONSTANTS (see `run_time_constants`).
Everything is indexed by the sequence's index t; a reverse scan (`reverse`) runs its step s at t = L - 1 - s.
A step's loop over the states is `recurrence_step` or `adjoint_step`, and a chunk of a channels-first u is read by
`read_channels_first`: plain loops here, explicit vector code (_numba_vectors) in a float32 kernel.

Constants are float32 so that a float32 kernel stays in float32 (a Python float literal would promote it to
float64) and a float64 kernel promotes them exactly; ln 2, which float32 rounds, comes in each kernel's own type
(`ln_2_as`).
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from types import SimpleNamespace

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import _numba_vectors
from ._numba_vectors import (VECTOR, adjoint_step_vectors, recurrence_step_vectors, source_digest,
                             transpose_tile_vectors)

ZERO, HALF, ONE = np.float32(0.0), np.float32(0.5), np.float32(1.0)
SOFTPLUS_LINEAR_ABOVE = np.float32(20.0)  # torch.nn.functional.softplus's threshold, which mamba_ssm relies on
LN_2, LOG2_E = np.float32(math.log(2.0)), np.float32(math.log2(math.e))
THIRD, FIFTH, SEVENTH, NINTH, ELEVENTH = (np.float32(1.0 / k) for k in (3, 5, 7, 9, 11))
# 2^f on [-1/2, 1/2]: Taylor coefficients of exp(f ln 2), degree 6, relative error below 1.3e-7 (~ float32's
# epsilon); the float32 exponent range clamps the argument (2^-126: the smallest normal number)
EXP2_COEFFICIENTS = tuple(np.float32(math.log(2.0) ** k / math.factorial(k)) for k in range(7))
EXP2_LOWEST, EXP2_HIGHEST = np.float32(-126.0), np.float32(127.0)
MANTISSA_BITS = 23
# Numba's on-disk cache keys a kernel on its own file and the values its closure holds: the kernels close over
# this digest of _numba_vectors' source, so that a change there too recompiles them
VECTOR_CODE_DIGEST = source_digest()
# and kernels in other files that inline this file's functions (the convolution's sigmoid) close over this one
INLINED_CODE_DIGEST = source_digest(Path(__file__), Path(_numba_vectors.__file__))
# LLVM fully unrolls loops of at most this many iterations while the kernels compile (its own default: no limit)
FULL_UNROLL_MAX_COUNT, LLVM_FULL_UNROLL_MAX_COUNT = 2, 2 ** 32 - 1
# "contract" lets LLVM fuse multiply-adds, "reassoc" lets it vectorise the sums over the states; no assumption
# about NaN or infinity, so bad inputs still propagate
FASTMATH = {"contract", "reassoc", "nsz", "arcp"}


@intrinsic
def _int32_bits_as_float32(typingctx, bits):
    """Reinterprets an int32's bits as a float32 (what `view` does for arrays)."""
    if bits != types.int32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


# exp2's constants in the order `exp2_with` takes them, as an array for the kernels' last argument
EXP2_CONSTANTS = np.array([EXP2_LOWEST, EXP2_HIGHEST, *EXP2_COEFFICIENTS], dtype=np.float32)


def exp2_with(x, constants):
    """2 ** x; in a compiled float32 kernel a polynomial that vectorises, with `constants` (EXP2_CONSTANTS as a
    tuple) as its range and coefficients (see the overload)."""
    return 2.0 ** x


@overload(exp2_with, inline="always", fastmath=FASTMATH)
def _exp2_with_compiled(x, constants):
    if x != types.float32:
        return lambda x, constants: math.exp2(x)

    def exp2_float32(x, constants):
        lowest, highest, c0, c1, c2, c3, c4, c5, c6 = constants
        x = min(max(x, lowest), highest)
        whole = np.floor(x + HALF)
        f = x - whole  # in [-1/2, 1/2]
        power_of_f = c0 + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * c6)))))
        # multiply by 2^whole by adding whole to the exponent field
        return _int32_bits_as_float32(np.int32((np.int32(whole) << MANTISSA_BITS) + _float32_bits_as_int32(power_of_f)))
    return exp2_float32


# exp2's constants fixed at compile time, for kernels without the array argument (the convolution's)
EXP2_CONSTANTS_FIXED = tuple(EXP2_CONSTANTS)


def _run_time_constants(constants):
    """The kernels' exp2 constants as a tuple read from their array argument. The loops over the states and lanes
    take them from there: with the constants fixed at compile time, LLVM reloaded all nine from memory at every
    iteration of the loop over the states (broadcasts from its constant pool) rather than keep them in registers,
    and the forward kernel took 1.2x as long."""
    return (constants[0], constants[1], constants[2], constants[3], constants[4], constants[5], constants[6],
            constants[7], constants[8])


@intrinsic
def _float32_bits_as_int32(typingctx, value):
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


CACHE_LINE_BYTES = 64


@intrinsic
def prefetch_for_reading(typingctx, row, index):
    """Asks the cache for the line of row[index] (a C-contiguous 1-D array), to be read: a hint, which neither
    faults nor fails, whatever the address."""
    if not isinstance(row, types.Array) or row.ndim != 1 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        address = builder.gep(context.make_array(signature.args[0])(context, builder, args[0]).data, [args[1]])
        flag = ir.IntType(32)
        declaration = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [address.type, flag, flag, flag]), "llvm.prefetch.p0")
        # read (0, not write), keep in every cache level (locality 3), data (1, not instructions)
        builder.call(declaration, [address, ir.Constant(flag, 0), ir.Constant(flag, 3), ir.Constant(flag, 1)])
        return context.get_dummy_value()
    return types.void(row, index), codegen


def log1p_small(w):
    """log(1 + w) for w in [0, 1]; in a compiled float32 kernel a polynomial that vectorises (see the overload)."""
    return math.log1p(w)


@overload(log1p_small, inline="always", fastmath=FASTMATH)
def _log1p_small_compiled(w):
    if w != types.float32:
        return lambda w: math.log1p(w)

    def log1p_float32(w):
        # log(1 + w) = 2 atanh(s), s = w / (2 + w) in [0, 1/3]: six terms of the series, relative error < 2e-7
        s = w / (np.float32(2.0) + w)
        s2 = s * s
        series = ONE + s2 * (THIRD + s2 * (FIFTH + s2 * (SEVENTH + s2 * (NINTH + s2 * ELEVENTH))))
        return np.float32(2.0) * s * series
    return log1p_float32


def exp_with(x, constants):
    """exp(x); in a compiled float32 kernel exp2(x log2(e)) with the vectorising polynomial and `constants`."""
    return math.exp(x)


@overload(exp_with, inline="always", fastmath=FASTMATH)
def _exp_with_compiled(x, constants):
    if x != types.float32:
        return lambda x, constants: math.exp(x)
    return lambda x, constants: exp2_with(x * LOG2_E, constants)


def ln_2_as(x):
    """ln 2 in x's float type: a float64 kernel must not take float32's rounding of it (1e-8 relative)."""
    return math.log(2.0)


@overload(ln_2_as, inline="always")
def _ln_2_compiled(x):
    value = LN_2 if x == types.float32 else math.log(2.0)
    return lambda x: value


@numba.njit(inline="always", fastmath=FASTMATH, cache=True)
def sigmoid(x, exp2_constants):
    return ONE / (ONE + exp_with(-x, exp2_constants))


@numba.njit(inline="always", fastmath=FASTMATH, cache=True)
def step_delta(raw, softplus, exp2_constants):
    """The delta the recurrence uses: softplus(raw) = max(raw, 0) + log(1 + exp(-|raw|)), raw itself above
    softplus's threshold (as PyTorch), or raw itself when softplus is off. Branch-free, so a loop over steps
    vectorises."""
    softplus_value = max(raw, ZERO) + log1p_small(exp_with(-abs(raw), exp2_constants))
    return softplus_value if softplus and raw <= SOFTPLUS_LINEAR_ABOVE else raw


def _coefficient_index(coefficient, batch_row, block, blocks):
    """(batch index, group index, steps per time index: 1, or 0 for one vector for all steps) of a B/C for a block
    of channels (each block lies in one group)."""
    return (batch_row if coefficient.shape[0] > 1 else 0, block // (blocks // coefficient.shape[1]),
            1 if coefficient.shape[2] > 1 else 0)


def _write_step(target, values, accumulate):
    """target = values, or target += values where `accumulate` (a second direction adds to the first's)."""
    if accumulate:
        for w in range(values.shape[0]):
            target[w] += values[w]
    else:
        for w in range(values.shape[0]):
            target[w] = values[w]


def read_channels_first(rows, first_row, start, steps, reverse, steps_by_row):
    """steps_by_row[s, w] = rows[first_row + w, t] for the scan's steps s = 0 .. steps - 1 from `start` on, at their
    sequence indices t (a chunk of a channels-first (dim, L) u, transposed). In a float32 kernel, tiles of
    VECTOR x VECTOR transposed in registers (_numba_vectors), each line of a row read once: read element by element,
    the rows' power-of-two strides (L = 1024, 4096) put a step's 32 lines in one cache set, and the forward kernel
    took 1.3x-1.6x as long."""
    length = rows.shape[1]
    for s in range(steps):
        t = time_index(start + s, length, reverse)
        for w in range(steps_by_row.shape[1]):
            steps_by_row[s, w] = rows[first_row + w, t]


@overload(read_channels_first, fastmath=FASTMATH)
def _read_channels_first_compiled(rows, first_row, start, steps, reverse, steps_by_row):
    if rows.dtype != types.float32:
        return read_channels_first

    def read_tiles(rows, first_row, start, steps, reverse, steps_by_row):
        length, lanes = rows.shape[1], steps_by_row.shape[1]
        tiled_lanes = lanes - lanes % VECTOR
        tiled_steps = steps - steps % VECTOR
        for s in range(0, tiled_steps, VECTOR):
            for w in range(0, tiled_lanes, VECTOR):
                if reverse:  # steps s .. s + VECTOR - 1 lie at L - 1 - (start + s) down to L - VECTOR - (start + s)
                    transpose_tile_vectors(rows, first_row + w, length - VECTOR - (start + s), steps_by_row, s, w,
                                           True)
                else:
                    transpose_tile_vectors(rows, first_row + w, start + s, steps_by_row, s, w, False)
        for s in range(steps):
            t = time_index(start + s, length, reverse)
            for w in range(tiled_lanes if s < tiled_steps else 0, lanes):
                steps_by_row[s, w] = rows[first_row + w, t]
    return read_tiles


def _prefetch_row(row):
    """Asks the cache for a row of a block's lanes, to be read: its first and its last element's lines, which are
    all of its lines for 32 float32 lanes (128 bytes) in memory aligned to 64 bytes, as PyTorch's is."""
    prefetch_for_reading(row, 0)
    prefetch_for_reading(row, row.shape[0] - 1)


def _prefetch_step_inputs(delta, z, z_first, u, b, t, j):
    """`prefetch_row` for the rows of delta, z (where given) and a blocked u (where given; empty where the kernels
    read it channels first) at step t of block j of batch row b: what both kernels read of a step's inputs."""
    prefetch_row(delta[b, t, j])
    if z.shape[0] > 0:
        prefetch_row(z[b, t, z_first + j])
    if u.shape[0] > 0:
        prefetch_row(u[b, t, j])


def _read_chunk_of_u(u, u_first, b, j, start, steps, reverse, us):
    """us[s] = block j of u at the chunk's steps s = 0 .. steps - 1 from `start` on (batch row b), from a channels-
    first u_first where given (`read_channels_first`), else from the blocked u."""
    if u_first.shape[0] > 0:
        read_channels_first(u_first[b], j * us.shape[1], start, steps, reverse, us)
    else:
        length = u.shape[1]
        for s in range(steps):
            write_step(us[s], u[b, time_index(start + s, length, reverse), j], False)


def _next_forward_chunk(task, start, chunk, length, blocks, batch):
    """(batch row, block, first step, steps) of the chunk the forward kernel runs after the one at `start` of `task`:
    the task's next, or the first of the next task, which the same thread runs next but at the end of its share of
    the tasks; 0 steps after the last task."""
    if start + chunk < length:
        return task // blocks, task % blocks, start + chunk, min(chunk, length - start - chunk)
    following = task + 1
    return following // blocks, following % blocks, 0, min(chunk, length) if following < batch * blocks else 0


def _next_backward_chunk(task, j, c, chunk, length, block_starts, batch):
    """(batch row, block, chunk index, steps) of the chunk the backward kernel runs after chunk c of block j in `task`
    (it walks each block's chunks from the last to the first, the blocks of a task's run in order): 0 steps after the
    last task."""
    parts, chunks = block_starts.shape[0] - 1, (length + chunk - 1) // chunk
    if c > 0:
        return task // parts, j, c - 1, chunk
    last_steps = length - (chunks - 1) * chunk
    if j + 1 < block_starts[task % parts + 1]:
        return task // parts, j + 1, chunks - 1, last_steps
    following = task + 1
    return (following // parts, block_starts[following % parts], chunks - 1,
            last_steps if following < batch * parts else 0)


def _sum_parts_into_first(partial, groups):
    """Adds each of the `groups` groups' partial sums (partial (batch, parts, steps, n): parts // groups consecutive
    parts per group) into the group's first part, in parallel over the rows (batch row, step): where a group's
    channels ran as several tasks. Summed by PyTorch after the kernel, it was serial work (0.3 ms of a 12 ms
    forward + backward on 2 threads at 2 x 128 x 4096, where 1 thread has one part per group and no sum)."""
    batch, parts, steps, dstate = partial.shape
    per_group = parts // groups
    if per_group > 1:
        for row in prange(batch * steps):
            b, t = row // steps, row % steps
            for first in range(0, parts, per_group):
                for part in range(first + 1, first + per_group):
                    for k in range(dstate):
                        partial[b, first, t, k] += partial[b, part, t, k]


def _time_index(step, length, reverse):
    """The sequence index of the scan's step `step`: step itself, or L - 1 - step for a reverse scan."""
    return length - 1 - step if reverse else step


def recurrence_step(deltas, delta_us, B_t, C_t, A, h_before, h_after, decays, ys, exp2_constants, lanes):
    """One step t of the scan's recurrence for every state k of a block of `lanes` channels:
    h_after = exp2(delta_t A log2(e)) h_before + delta_t u_t B_t, with the decays exp2(...) kept in `decays` and
    ys += sum_k h_after C_t where those are given (None where not: the forward sums y, the backward's recomputation
    keeps the decays; the arithmetic limit has no delta_us, and adds B_t alone). The arrays are the step's rows:
    (lanes,) for deltas, delta_us and ys, (n,) for B_t and C_t, (n, lanes) for A (times log2(e)), the states and the
    decays; h_before may be h_after. In a float32 kernel, explicit vector code (_numba_vectors)."""
    for k in range(B_t.shape[0]):
        B_k = B_t[k]
        for w in range(lanes):
            decay = exp2_with(deltas[w] * A[k, w], exp2_constants)
            if decays is not None:
                decays[k, w] = decay
            if delta_us is not None:
                h_kw = decay * h_before[k, w] + delta_us[w] * B_k
            else:
                h_kw = decay * h_before[k, w] + B_k
            h_after[k, w] = h_kw
            if ys is not None:
                ys[w] += h_kw * C_t[k]


@overload(recurrence_step, fastmath=FASTMATH, prefer_literal=True)
def _recurrence_step_compiled(deltas, delta_us, B_t, C_t, A, h_before, h_after, decays, ys, exp2_constants, lanes):
    if deltas.dtype != types.float32 or not isinstance(lanes, types.IntegerLiteral) or lanes.literal_value % VECTOR:
        return recurrence_step
    return (lambda deltas, delta_us, B_t, C_t, A, h_before, h_after, decays, ys, exp2_constants, lanes:
            recurrence_step_vectors(deltas, delta_us, B_t, C_t, A, h_before, h_after, decays, ys, exp2_constants,
                                    lanes))


def adjoint_step(dys, delta_us, deltas, B_t, C_t, decays, states, A, carry, dA, dB_t, d_delta_us, d_exponents,
                 lanes):
    """One step t of the backward's adjoint recurrence, for every state k of a block of `lanes` channels: the adjoint
    g = dy_t C_t + carry (dL/dh_t), then carry = exp(delta_t A) g for step t - 1, and everything that takes g:
    dB_t += sum over the lanes of g delta_t u_t, dA += g exp(delta_t A) h_{t-1} delta_t, and (written, summed over
    the states) d_delta_us = sum_k g B_t and d_exponents = sum_k g exp(delta_t A) h_{t-1} A log2(e). The arrays are
    the step's rows: (lanes,) for dys, delta_us, deltas and the outputs, (n,) for B_t, C_t and dB_t, (n, lanes) for
    decays (exp(delta_t A)), states (h_{t-1}), A, carry and dA. In a float32 kernel, explicit vector code
    (_numba_vectors)."""
    d_delta_us[:] = ZERO
    d_exponents[:] = ZERO
    for k in range(B_t.shape[0]):
        B_k, C_k = B_t[k], C_t[k]
        total = ZERO
        for w in range(lanes):
            decay = decays[k, w]
            g = dys[w] * C_k + carry[k, w]
            carry[k, w] = decay * g
            total += g * delta_us[w]
            d_delta_us[w] += g * B_k
            through_decay = g * decay * states[k, w]
            d_exponents[w] += through_decay * A[k, w]
            dA[k, w] += through_decay * deltas[w]
        dB_t[k] += total


@overload(adjoint_step, fastmath=FASTMATH, prefer_literal=True)
def _adjoint_step_compiled(dys, delta_us, deltas, B_t, C_t, decays, states, A, carry, dA, dB_t, d_delta_us,
                           d_exponents, lanes):
    if dys.dtype != types.float32 or not isinstance(lanes, types.IntegerLiteral) or lanes.literal_value % VECTOR:
        return adjoint_step
    return (lambda dys, delta_us, deltas, B_t, C_t, decays, states, A, carry, dA, dB_t, d_delta_us, d_exponents,
            lanes: adjoint_step_vectors(dys, delta_us, deltas, B_t, C_t, decays, states, A, carry, dA, dB_t,
                                        d_delta_us, d_exponents, lanes))


def _scan_kernel_functions(lanes: int) -> SimpleNamespace:
    """The scan's forward and backward kernels as Python functions, for `_compile`, for blocks of `lanes` channels.
    Every loop that does the per-element work runs over a block's channels, which lie side by side in memory in the
    channels-last layout that the Mamba mixer keeps: a constant trip count that LLVM vectorises without remainder
    loops, with contiguous loads, one exp2 per lane, and B_t and C_t broadcast. `lanes` is a constant that Numba
    freezes into the compiled code (and into its cache's key). (The number of states as such a constant too, which
    made the kernels vectorised over the states 9-12 % faster, made these no faster: 0-2 %.)"""
    vector_code = VECTOR_CODE_DIGEST

    def forward(u, delta, z, z_first, A_log2, B, C, D, delta_bias, softplus, chunk, accumulate, reverse, out,
                last_state, checkpoints, gate_inputs, u_first, exp2_array):
        """out = the scan's output (out += it when `accumulate`), last_state = h_{L-1}, and (when checkpoints and
        gate_inputs have room) checkpoints[b, c, j] = the state before scan step c * chunk and gate_inputs = y + D u,
        the output before the gate (+= as out), which the backward's dz needs. u is read blocked, or, where u_first
        has room (and u has none), from a channels-first (batch, dim, L) u_first (whole blocks, nothing padded), a
        chunk at a time (and so by the backward: nothing is copied for it). One
        (batch row, channel block) per parallel iteration, `chunk` steps at a time: the chunk's u, softplus and D u
        for the chunk, then the recurrence, then the gate, each a loop of its own. While the recurrence computes, the
        rows of delta, z and a blocked u that the next chunk reads are asked for (`prefetch_row`): the loops without a
        recurrence then find them in the cache rather than wait on memory, which made the forward 4-16 % faster
        (1024 x 64 x 256: 1.19x, 1 thread; alternated with the kernel before in one process). Every line of a
        channels-first u's chunk asked for too, spread over the steps, gained nothing and cost 5 % in the cache."""
        vector_code  # in the cache key (VECTOR_CODE_DIGEST)
        batch, length, blocks, _ = delta.shape
        dstate = A_log2.shape[1]
        has_z, has_D, has_bias = z.shape[0] > 0, D.shape[0] > 0, delta_bias.shape[0] > 0
        save_checkpoints, save_gate_inputs = checkpoints.shape[1] > 0, gate_inputs.shape[0] > 0
        dtype = A_log2.dtype
        for task in prange(batch * blocks):
            exp2_constants = run_time_constants(exp2_array)
            b, j = task // blocks, task % blocks
            bB, gB, stepB = coefficient_index(B, b, j, blocks)
            bC, gC, stepC = coefficient_index(C, b, j, blocks)
            A = A_log2[j]
            D_j, bias_j = np.zeros(lanes, dtype=dtype), np.zeros(lanes, dtype=dtype)
            if has_D:
                D_j[:] = D[j]
            if has_bias:
                bias_j[:] = delta_bias[j]
            h = np.zeros((dstate, lanes), dtype=dtype)
            deltas = np.empty((chunk, lanes), dtype=dtype)
            delta_us = np.empty((chunk, lanes), dtype=dtype)
            ys = np.empty((chunk, lanes), dtype=dtype)
            us = np.empty((chunk, lanes), dtype=dtype)
            for start in range(0, length, chunk):
                steps = min(chunk, length - start)
                if save_checkpoints:
                    checkpoints[b, start // chunk, j] = h
                read_chunk_of_u(u, u_first, b, j, start, steps, reverse, us)
                for s in range(steps):
                    t = time_index(start + s, length, reverse)
                    for w in range(lanes):
                        u_w = us[s, w]
                        delta_w = step_delta(delta[b, t, j, w] + bias_j[w], softplus, exp2_constants)
                        deltas[s, w] = delta_w
                        delta_us[s, w] = delta_w * u_w
                        ys[s, w] = D_j[w] * u_w
                next_b, next_j, next_start, next_steps = next_forward_chunk(task, start, chunk, length, blocks,
                                                                            batch)
                for s in range(steps):  # the recurrence, and the lines of the next chunk's rows asked for
                    if s < next_steps:
                        next_t = time_index(next_start + s, length, reverse)
                        prefetch_step_inputs(delta, z, z_first, u, next_b, next_t, next_j)
                    t = time_index(start + s, length, reverse)
                    recurrence_step(deltas[s], delta_us[s], B[bB, gB, t * stepB], C[bC, gC, t * stepC], A, h, h, None,
                                    ys[s], exp2_constants, lanes)
                for s in range(steps):
                    t = time_index(start + s, length, reverse)
                    if save_gate_inputs:
                        write_step(gate_inputs[b, t, j], ys[s], accumulate)
                    if has_z:
                        for w in range(lanes):
                            z_w = z[b, t, z_first + j, w]
                            ys[s, w] *= z_w * sigmoid(z_w, exp2_constants)
                    write_step(out[b, t, j], ys[s], accumulate)
            last_state[b, j] = h

    def backward(u, delta, z, z_first, A_log2, B, C, D, delta_bias, softplus, chunk, writes_dz, reverse,
                 checkpoints, gate_inputs, u_first, dout, block_starts, du, ddelta, dz, dz_first, dA_rows, dB_partial,
                 dC_partial, dD_rows, dbias_rows, exp2_array):
        """Gradients of the scan given dout. dz comes from the forward's gate_inputs (y + D u), and only where
        `writes_dz`: the gate is shared by the directions, and gate_inputs sums them, so the first direction writes
        all of dz, and the states need not be multiplied by C again to give y. Each parallel iteration is one batch
        row and a run of channel blocks (block_starts) in one B/C group: it writes du, ddelta, dz and the per-row dA,
        dD, ddelta_bias of its blocks, and sums the B/C gradients of its channels into its own partial slot,
        dB_partial[b, part] ((batch, parts, L or 1, n)), which it zeroes first (no two threads write one element;
        the slots need no zeroing before the call); the same for C. Then each B/C group's parts are added into its
        first (`sum_parts_into_first`). u is read as in the forward.
        Per chunk: its inputs, its states again from its checkpoint (meanwhile the next chunk's rows of delta, u, dout
        and z are asked for, as in the forward: 1-5 % faster), dC, then the adjoint recurrence g_t = dL/dh_t
        backwards through the chunk with everything that takes g_t in the same loop (dB, dA and the parts of du and
        ddelta through the states), and the rest in loops without a recurrence. (The adjoints kept in a scratch
        array for loops of their own took 7-13 % longer.)"""
        vector_code  # in the cache key (VECTOR_CODE_DIGEST)
        batch, length, blocks, _ = delta.shape
        dstate = A_log2.shape[1]
        has_z, has_D, has_bias = z.shape[0] > 0, D.shape[0] > 0, delta_bias.shape[0] > 0
        parts = block_starts.shape[0] - 1
        chunks = checkpoints.shape[1]
        dtype = A_log2.dtype
        for task in prange(batch * parts):
            exp2_constants = run_time_constants(exp2_array)
            b, part = task // parts, task % parts
            states = np.empty((chunk + 1, dstate, lanes), dtype=dtype)  # h before the chunk, then h_t of each step
            decays = np.empty((chunk, dstate, lanes), dtype=dtype)
            us = np.empty((chunk, lanes), dtype=dtype)
            raw_deltas = np.empty((chunk, lanes), dtype=dtype)
            deltas = np.empty((chunk, lanes), dtype=dtype)
            delta_us = np.empty((chunk, lanes), dtype=dtype)
            dys = np.empty((chunk, lanes), dtype=dtype)  # dL/dy_t, through the gate
            d_delta_us = np.empty((chunk, lanes), dtype=dtype)  # dL/d(delta_t u_t) through the input term
            d_exponents = np.empty((chunk, lanes), dtype=dtype)  # sum_k g_k h_{t-1,k} exp(delta_t A_k) A_k log2(e)
            carry = np.empty((dstate, lanes), dtype=dtype)  # exp(delta_{t+1} A) g_{t+1}: what g_t gets from t + 1
            dA_j = np.empty((dstate, lanes), dtype=dtype)
            D_j, bias_j = np.zeros(lanes, dtype=dtype), np.zeros(lanes, dtype=dtype)
            dD_j, dbias_j = np.empty(lanes, dtype=dtype), np.empty(lanes, dtype=dtype)
            dB_partial[b, part] = ZERO
            dC_partial[b, part] = ZERO
            for j in range(block_starts[part], block_starts[part + 1]):
                bB, gB, stepB = coefficient_index(B, b, j, blocks)
                bC, gC, stepC = coefficient_index(C, b, j, blocks)
                A = A_log2[j]
                if has_D:
                    D_j[:] = D[j]
                if has_bias:
                    bias_j[:] = delta_bias[j]
                carry[:] = ZERO
                dA_j[:] = ZERO
                dD_j[:] = ZERO
                dbias_j[:] = ZERO
                for c in range(chunks - 1, -1, -1):
                    start = c * chunk
                    steps = min(chunk, length - start)
                    next_b, next_j, next_c, next_steps = next_backward_chunk(task, j, c, chunk, length, block_starts,
                                                                             batch)
                    read_chunk_of_u(u, u_first, b, j, start, steps, reverse, us)
                    for s in range(steps):
                        t = time_index(start + s, length, reverse)
                        for w in range(lanes):
                            raw = delta[b, t, j, w] + bias_j[w]
                            delta_w = step_delta(raw, softplus, exp2_constants)
                            u_w = us[s, w]
                            raw_deltas[s, w], deltas[s, w] = raw, delta_w
                            delta_us[s, w] = delta_w * u_w
                            dys[s, w] = dout[b, t, j, w]
                    states[0] = checkpoints[b, c, j]
                    for s in range(steps):  # the chunk's states again, from its checkpoint; the next chunk's rows
                        if s < next_steps:
                            next_t = time_index(next_c * chunk + s, length, reverse)
                            prefetch_step_inputs(delta, z, z_first, u, next_b, next_t, next_j)
                            prefetch_row(dout[next_b, next_t, next_j])
                        t = time_index(start + s, length, reverse)
                        recurrence_step(deltas[s], delta_us[s], B[bB, gB, t * stepB], None, A, states[s], states[s + 1],
                                        decays[s], None, exp2_constants, lanes)
                    if has_z:  # out = (y + D u) z sigmoid(z): dz, and dy through the gate
                        for s in range(steps):
                            t = time_index(start + s, length, reverse)
                            if writes_dz:
                                for w in range(lanes):
                                    z_w = z[b, t, z_first + j, w]
                                    sig = sigmoid(z_w, exp2_constants)
                                    dz[b, t, dz_first + j, w] = (dys[s, w] * gate_inputs[b, t, j, w] * sig
                                                                * (ONE + z_w * (ONE - sig)))
                                    dys[s, w] *= z_w * sig
                            else:
                                for w in range(lanes):
                                    z_w = z[b, t, z_first + j, w]
                                    dys[s, w] *= z_w * sigmoid(z_w, exp2_constants)
                    for s in range(steps):
                        for w in range(lanes):
                            dD_j[w] += dys[s, w] * us[s, w]
                    for s in range(steps):  # dC sums over the block's channels
                        t = time_index(start + s, length, reverse)
                        for k in range(dstate):
                            total = ZERO
                            for w in range(lanes):
                                total += dys[s, w] * states[s + 1, k, w]
                            dC_partial[b, part, t * stepC, k] += total
                    for s in range(steps - 1, -1, -1):  # the adjoint recurrence, backwards through the chunk
                        t = time_index(start + s, length, reverse)
                        adjoint_step(dys[s], delta_us[s], deltas[s], B[bB, gB, t * stepB], C[bC, gC, t * stepC],
                                     decays[s], states[s], A, carry, dA_j, dB_partial[b, part, t * stepB],
                                     d_delta_us[s], d_exponents[s], lanes)
                    for s in range(steps):
                        t = time_index(start + s, length, reverse)
                        for w in range(lanes):
                            du[b, t, j, w] = dys[s, w] * D_j[w] + d_delta_us[s, w] * deltas[s, w]
                            d_delta = d_delta_us[s, w] * us[s, w] + d_exponents[s, w] * ln_2_as(d_exponents[s, w])
                            raw = raw_deltas[s, w]
                            if softplus and raw <= SOFTPLUS_LINEAR_ABOVE:
                                d_delta *= sigmoid(raw, exp2_constants)
                            ddelta[b, t, j, w] = d_delta
                            dbias_j[w] += d_delta
                dA_rows[b, j] = dA_j
                dD_rows[b, j] = dD_j
                dbias_rows[b, j] = dbias_j
        sum_parts_into_first(dB_partial, B.shape[1])
        sum_parts_into_first(dC_partial, C.shape[1])

    return SimpleNamespace(forward=forward, backward=backward)


def _arithmetic_limit_function(lanes: int):
    vector_code = VECTOR_CODE_DIGEST

    def arithmetic_limit(rows, steps, A_log2, B, C, y, exp2_array):
        """The scan's arithmetic and nothing else: per state update one exp2 and two fused multiply-adds
        (h = exp2(x) h + b; y += h c), over `rows` independent rows of n x `lanes` states, vectorised over the lanes
        with the scan's own vector code for a step (`recurrence_step`, without the input term's product), with no
        memory traffic beyond the states. Its updates per second are the limit the benchmark holds the scan
        against."""
        vector_code  # in the cache key (VECTOR_CODE_DIGEST)
        dstate = A_log2.shape[0]
        for row in prange(rows):
            exp2_constants = run_time_constants(exp2_array)
            h = np.zeros((dstate, lanes), dtype=A_log2.dtype)
            totals = np.zeros(lanes, dtype=A_log2.dtype)
            xs = np.empty(lanes, dtype=A_log2.dtype)
            scale = ONE / np.float32(steps)
            for t in range(steps):
                xs[:] = np.float32(t) * scale
                recurrence_step(xs, None, B, C, A_log2, h, h, None, totals, exp2_constants, lanes)
            y[row] = totals
    return arithmetic_limit


coefficient_index = numba.njit(inline="always", cache=True)(_coefficient_index)
prefetch_row = numba.njit(inline="always", cache=True)(_prefetch_row)
next_forward_chunk = numba.njit(inline="always", cache=True)(_next_forward_chunk)
next_backward_chunk = numba.njit(inline="always", cache=True)(_next_backward_chunk)
prefetch_step_inputs = numba.njit(inline="always", cache=True)(_prefetch_step_inputs)
read_chunk_of_u = numba.njit(inline="always", cache=True, fastmath=FASTMATH)(_read_chunk_of_u)
time_index = numba.njit(inline="always", cache=True)(_time_index)
sum_parts_into_first = numba.njit(inline="always", cache=True)(_sum_parts_into_first)
run_time_constants = numba.njit(inline="always", cache=True)(_run_time_constants)
write_step = numba.njit(inline="always", cache=True, fastmath=FASTMATH)(_write_step)


def _signatures(scalar: types.Float) -> SimpleNamespace:
    vector, matrix = types.Array(scalar, 1, "C"), types.Array(scalar, 2, "C")
    array3, array4, array5 = (types.Array(scalar, rank, "C") for rank in (3, 4, 5))
    flag, count = types.boolean, types.int64
    inputs = (array4, array4, array4, count, array3, array4, array4, matrix, matrix, flag, count, flag, flag)
    exp2_constants = types.Array(types.float32, 1, "C")
    return SimpleNamespace(
        forward=types.void(*inputs, array4, array4, array5, array4, array3, exp2_constants),
        backward=types.void(*inputs, array5, array4, array3, array4, types.Array(types.int64, 1, "C"), array4, array4,
                            array4, count, array4, array4, array4, array3, array3, exp2_constants),
        limit=types.void(count, count, matrix, vector, vector, matrix, exp2_constants))


@contextlib.contextmanager
def _lane_loops_kept_vectorised():
    """LLVM's full unrolling, which runs before its loop vectoriser, would turn each loop over a block's lanes into
    scalar statements that its straight-line vectoriser then leaves scalar
    (it cannot tell the arrays apart): the backward 2.5x slower. Full unrolling limited to 2 iterations leaves those
    loops to the loop vectoriser. The option is LLVM's process-wide setting, so it is set only while these kernels
    compile."""
    llvmlite.binding.set_option("", f"-unroll-full-max-count={FULL_UNROLL_MAX_COUNT}")
    try:
        yield
    finally:
        llvmlite.binding.set_option("", f"-unroll-full-max-count={LLVM_FULL_UNROLL_MAX_COUNT}")


def _compile(function, signature):
    # the numpy error model: a float division by zero gives inf as in PyTorch, and no check blocks vectorisation
    with _lane_loops_kept_vectorised():
        return numba.njit(signature, parallel=True, cache=True, fastmath=FASTMATH, nogil=True,
                          error_model="numpy")(function)


def compiled(float64: bool, lanes: int) -> SimpleNamespace:
    """The kernels for float64 (else float32) and blocks of `lanes` channels, compiled now or loaded from Numba's
    on-disk cache."""
    signatures = _signatures(types.float64 if float64 else types.float32)
    functions = _scan_kernel_functions(lanes)
    return SimpleNamespace(forward=_compile(functions.forward, signatures.forward),
                           backward=_compile(functions.backward, signatures.backward), exp2_constants=EXP2_CONSTANTS)


def compiled_arithmetic_limit(lanes: int) -> numba.core.registry.CPUDispatcher:
    """The float32 arithmetic-limit kernel for `lanes` lanes (for the benchmark)."""
    return _compile(_arithmetic_limit_function(lanes), _signatures(types.float32).limit)
