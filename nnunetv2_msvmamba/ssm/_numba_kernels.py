"""The Numba kernels of `selective_scan_numba` (imported only where that backend runs: it imports numba).

The functions below are plain Python until `compiled` builds them for one dtype (and, where asked, one number of
states n as a constant) with explicit signatures, so that each is compiled once (and cached on disk) whatever the
strides of the tensors passed in. Array
layouts: u, delta, z, dout (batch, dim, L) with any strides; A_log2 = A log2(e) (dim, n); B and C
(batch or 1, groups, L or 1, n), n innermost (see selective_scan_numba._coefficient_layout); D, delta_bias
(dim,), empty when absent, as is z. u, delta, z, dout and their gradients are indexed in scan order (a reverse scan
passes them as views with a negative stride along L); B, C and the partial gradients of B and C stay in the
sequence's order, and with `coefficients_reversed` step t of the scan reads their index L - 1 - t.

Constants are float32 so that a float32 kernel stays in float32 (a Python float literal would promote it to
float64) and a float64 kernel promotes them exactly; ln 2, which float32 rounds, comes in each kernel's own type
(`ln_2_as`).
"""
from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic, overload

ZERO, HALF, ONE = np.float32(0.0), np.float32(0.5), np.float32(1.0)
SOFTPLUS_LINEAR_ABOVE = np.float32(20.0)  # torch.nn.functional.softplus's threshold, which mamba_ssm relies on
LN_2, LOG2_E = np.float32(math.log(2.0)), np.float32(math.log2(math.e))
THIRD, FIFTH, SEVENTH, NINTH, ELEVENTH = (np.float32(1.0 / k) for k in (3, 5, 7, 9, 11))
# 2^f on [-1/2, 1/2]: Taylor coefficients of exp(f ln 2), degree 6, relative error below 1.3e-7 (~ float32's
# epsilon); the float32 exponent range clamps the argument (2^-126: the smallest normal number)
EXP2_COEFFICIENTS = tuple(np.float32(math.log(2.0) ** k / math.factorial(k)) for k in range(7))
EXP2_LOWEST, EXP2_HIGHEST = np.float32(-126.0), np.float32(127.0)
MANTISSA_BITS = 23
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


def exp2(x):
    """2 ** x; in a compiled float32 kernel a polynomial that vectorises (see the overload)."""
    return 2.0 ** x


@overload(exp2, inline="always", fastmath=FASTMATH)
def _exp2_compiled(x):
    if x != types.float32:
        return lambda x: math.exp2(x)

    def exp2_float32(x):
        x = min(max(x, EXP2_LOWEST), EXP2_HIGHEST)
        whole = np.floor(x + HALF)
        f = x - whole  # in [-1/2, 1/2]
        c0, c1, c2, c3, c4, c5, c6 = EXP2_COEFFICIENTS
        power_of_f = c0 + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * c6)))))
        # multiply by 2^whole by adding whole to the exponent field
        return _int32_bits_as_float32(np.int32((np.int32(whole) << MANTISSA_BITS) + _float32_bits_as_int32(power_of_f)))
    return exp2_float32


@intrinsic
def _float32_bits_as_int32(typingctx, value):
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.int32(types.float32), codegen


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


def exp_(x):
    """exp(x); in a compiled float32 kernel exp2(x log2(e)) with the vectorising polynomial."""
    return math.exp(x)


@overload(exp_, inline="always", fastmath=FASTMATH)
def _exp_compiled(x):
    if x != types.float32:
        return lambda x: math.exp(x)
    return lambda x: exp2(x * LOG2_E)


def ln_2_as(x):
    """ln 2 in x's float type: a float64 kernel must not take float32's rounding of it (1e-8 relative)."""
    return math.log(2.0)


@overload(ln_2_as, inline="always")
def _ln_2_compiled(x):
    value = LN_2 if x == types.float32 else math.log(2.0)
    return lambda x: value


@numba.njit(inline="always", fastmath=FASTMATH, cache=True)
def sigmoid(x):
    return ONE / (ONE + exp_(-x))


@numba.njit(inline="always", fastmath=FASTMATH, cache=True)
def step_delta(raw, softplus):
    """The delta the recurrence uses: softplus(raw) = max(raw, 0) + log(1 + exp(-|raw|)), raw itself above
    softplus's threshold (as PyTorch), or raw itself when softplus is off. Branch-free, so a loop over steps
    vectorises."""
    softplus_value = max(raw, ZERO) + log1p_small(exp_(-abs(raw)))
    return softplus_value if softplus and raw <= SOFTPLUS_LINEAR_ABOVE else raw


def _coefficient_index(coefficient, batch_row, channel, dim):
    """(batch index, group index, steps per time index: 1, or 0 for one vector for all steps) of a B/C."""
    return (batch_row if coefficient.shape[0] > 1 else 0, channel // (dim // coefficient.shape[1]),
            1 if coefficient.shape[2] > 1 else 0)


def _coefficient_step(t, length, coefficients_reversed):
    """The index of B, C and their partial gradients that step t of the scan reads: t, or L - 1 - t."""
    return length - 1 - t if coefficients_reversed else t


def _scan_kernel_functions(constant_states: int) -> SimpleNamespace:
    """The scan's forward and backward kernels as Python functions, for `_compile`. With `constant_states` (else 0)
    the number of states n is that constant, which Numba freezes into the compiled code (and into the cache's key),
    instead of A's shape at run time: LLVM then knows that every loop over the states runs n times, and drops the
    trip-count checks and remainder loops it would run at every step (with the unrolling limit of
    `_state_loops_kept_vectorised`)."""

    def forward(u, delta, z, A_log2, B, C, D, delta_bias, softplus, chunk, accumulate, coefficients_reversed, out,
                last_state, checkpoints, gate_inputs):
        """out = the scan's output (out += it when `accumulate`), last_state = h_{L-1}, and (when checkpoints and
        gate_inputs have room) checkpoints[..., c, :] = the state before step c * chunk and gate_inputs = y + D u,
        the output before the gate (+= as out), which the backward's dz needs; one (batch, channel) row per parallel
        iteration, `chunk` steps at a time. Each chunk's inputs are first copied into contiguous scratch, so that the
        per-step work (softplus, D u, the gate) vectorises: LLVM cannot bound a strided array's accesses, and gives
        up vectorising a loop that reads one."""
        batch, dim, length = u.shape
        dstate = constant_states or A_log2.shape[1]
        has_z, has_D, has_bias = z.shape[0] > 0, D.shape[0] > 0, delta_bias.shape[0] > 0
        save_checkpoints, save_gate_inputs = checkpoints.shape[2] > 0, gate_inputs.shape[0] > 0
        dtype = A_log2.dtype
        for row in prange(batch * dim):
            b, d = row // dim, row % dim
            bB, gB, stepB = coefficient_index(B, b, d, dim)
            bC, gC, stepC = coefficient_index(C, b, d, dim)
            D_d = D[d] if has_D else ZERO
            bias_d = delta_bias[d] if has_bias else ZERO
            h = np.zeros(dstate, dtype=dtype)
            us = np.empty(chunk, dtype=dtype)
            zs = np.empty(chunk, dtype=dtype)
            deltas = np.empty(chunk, dtype=dtype)
            delta_us = np.empty(chunk, dtype=dtype)
            ys = np.empty(chunk, dtype=dtype)
            for start in range(0, length, chunk):
                steps = min(chunk, length - start)
                if save_checkpoints:
                    checkpoints[b, d, start // chunk, :] = h
                us[:steps] = u[b, d, start:start + steps]
                deltas[:steps] = delta[b, d, start:start + steps]
                for s in range(steps):
                    delta_t = step_delta(deltas[s] + bias_d, softplus)
                    deltas[s] = delta_t
                    delta_us[s] = delta_t * us[s]
                for s in range(steps):  # the recurrence
                    t = coefficient_step(start + s, length, coefficients_reversed)
                    delta_t, delta_u = deltas[s], delta_us[s]
                    y = ZERO
                    for k in range(dstate):
                        h_k = exp2(delta_t * A_log2[d, k]) * h[k] + delta_u * B[bB, gB, t * stepB, k]
                        h[k] = h_k
                        y += h_k * C[bC, gC, t * stepC, k]
                    ys[s] = y
                for s in range(steps):
                    ys[s] += D_d * us[s]
                if save_gate_inputs:
                    if accumulate:
                        gate_inputs[b, d, start:start + steps] += ys[:steps]
                    else:
                        gate_inputs[b, d, start:start + steps] = ys[:steps]
                if has_z:
                    zs[:steps] = z[b, d, start:start + steps]
                    for s in range(steps):
                        ys[s] *= zs[s] * sigmoid(zs[s])
                if accumulate:
                    out[b, d, start:start + steps] += ys[:steps]
                else:
                    out[b, d, start:start + steps] = ys[:steps]
            last_state[b, d, :] = h


    def backward(u, delta, z, A_log2, B, C, D, delta_bias, softplus, chunk, writes_dz, coefficients_reversed,
                 checkpoints, gate_inputs, dout, block_starts, B_constant, C_constant, du, ddelta, dz, dA_rows,
                 dB_partial, dC_partial, dD_rows, dbias_rows):
        """Gradients of the scan given dout. dz comes from the forward's gate_inputs (y + D u), and only where
        `writes_dz`: the gate is shared by the directions, and gate_inputs sums them, so the first direction writes
        all of dz, and the states need not be multiplied by C again to give y. Each parallel iteration is one batch
        row and one block of channels (block_starts): it writes du, ddelta, dz and the per-row dA, dD, ddelta_bias of
        its channels, and sums the B/C gradients of its channels into its own partial slot, dB_partial[b, block]
        (input-dependent B: (batch, blocks, L, n)) or dB_partial[b, channel] (constant B: (batch, dim, 1, n)), which it
        zeroes first (the slots need no zeroing before the call); the same for C.
        Per chunk: its inputs copied into contiguous scratch (as in the forward), its states again from its
        checkpoint, the adjoint recurrence alone backwards through the chunk, and everything else in loops without a
        recurrence, which vectorise."""
        batch, dim, length = u.shape
        dstate = constant_states or A_log2.shape[1]
        has_z, has_D, has_bias = z.shape[0] > 0, D.shape[0] > 0, delta_bias.shape[0] > 0
        blocks = block_starts.shape[0] - 1
        chunks = checkpoints.shape[2]
        dtype = A_log2.dtype
        for task in prange(batch * blocks):
            b, block = task // blocks, task % blocks
            states = np.empty((chunk + 1, dstate), dtype=dtype)  # h before the chunk, then h_t of each step
            decays = np.empty((chunk, dstate), dtype=dtype)
            adjoints = np.empty((chunk, dstate), dtype=dtype)  # g_t = dL/dh_t
            us = np.empty(chunk, dtype=dtype)
            zs = np.empty(chunk, dtype=dtype)
            raw_deltas = np.empty(chunk, dtype=dtype)
            deltas = np.empty(chunk, dtype=dtype)
            delta_us = np.empty(chunk, dtype=dtype)
            gates = np.empty(chunk, dtype=dtype)  # y + D u, before the gate
            dys = np.empty(chunk, dtype=dtype)  # dL/dy_t, through the gate
            dzs = np.empty(chunk, dtype=dtype)
            dus = np.empty(chunk, dtype=dtype)
            d_delta_us = np.empty(chunk, dtype=dtype)  # dL/d(delta_t u_t) through the input term, then d_delta
            d_exponents = np.empty(chunk, dtype=dtype)  # sum_k g_k h_{t-1,k} exp(delta_t A_k) A_k log2(e)
            carry = np.empty(dstate, dtype=dtype)  # exp(delta_{t+1} A) g_{t+1}: what g_t receives from step t + 1
            dA_d = np.empty(dstate, dtype=dtype)
            if not B_constant:
                dB_partial[b, block] = ZERO
            if not C_constant:
                dC_partial[b, block] = ZERO
            for d in range(block_starts[block], block_starts[block + 1]):
                bB, gB, stepB = coefficient_index(B, b, d, dim)
                bC, gC, stepC = coefficient_index(C, b, d, dim)
                slot_B, partial_step_B = (d, 0) if B_constant else (block, 1)
                slot_C, partial_step_C = (d, 0) if C_constant else (block, 1)
                D_d = D[d] if has_D else ZERO
                bias_d = delta_bias[d] if has_bias else ZERO
                if B_constant:
                    dB_partial[b, d] = ZERO
                if C_constant:
                    dC_partial[b, d] = ZERO
                carry[:] = ZERO
                dA_d[:] = ZERO
                dD_d = ZERO
                dbias_d = ZERO
                for c in range(chunks - 1, -1, -1):
                    start = c * chunk
                    steps = min(chunk, length - start)
                    us[:steps] = u[b, d, start:start + steps]
                    raw_deltas[:steps] = delta[b, d, start:start + steps]
                    dys[:steps] = dout[b, d, start:start + steps]
                    for s in range(steps):
                        raw = raw_deltas[s] + bias_d
                        delta_t = step_delta(raw, softplus)
                        raw_deltas[s], deltas[s] = raw, delta_t
                        delta_us[s] = delta_t * us[s]
                    states[0, :] = checkpoints[b, d, c, :]
                    for s in range(steps):  # the chunk's states again, from its checkpoint
                        t = coefficient_step(start + s, length, coefficients_reversed)
                        delta_t, delta_u = deltas[s], delta_us[s]
                        for k in range(dstate):
                            decay = exp2(delta_t * A_log2[d, k])
                            decays[s, k] = decay
                            states[s + 1, k] = decay * states[s, k] + delta_u * B[bB, gB, t * stepB, k]
                    if has_z:  # out = (y + D u) z sigmoid(z): dz, and dy through the gate
                        zs[:steps] = z[b, d, start:start + steps]
                        if writes_dz:
                            gates[:steps] = gate_inputs[b, d, start:start + steps]
                            for s in range(steps):
                                z_t = zs[s]
                                sig = sigmoid(z_t)
                                dzs[s] = dys[s] * gates[s] * sig * (ONE + z_t * (ONE - sig))
                                dys[s] *= z_t * sig
                            dz[b, d, start:start + steps] = dzs[:steps]
                        else:
                            for s in range(steps):
                                dys[s] *= zs[s] * sigmoid(zs[s])
                    for s in range(steps):
                        dD_d += dys[s] * us[s]
                    for s in range(steps - 1, -1, -1):  # the adjoint recurrence alone, backwards through the chunk
                        t = coefficient_step(start + s, length, coefficients_reversed)
                        dy = dys[s]
                        for k in range(dstate):
                            g = dy * C[bC, gC, t * stepC, k] + carry[k]
                            adjoints[s, k] = g
                            carry[k] = decays[s, k] * g
                    # what the adjoints give, step by step: one array written per loop, so that LLVM's checks that
                    # the arrays do not overlap stay few (they run each time a loop over the states starts)
                    for s in range(steps):
                        t = coefficient_step(start + s, length, coefficients_reversed)
                        dy = dys[s]
                        for k in range(dstate):
                            dC_partial[b, slot_C, t * partial_step_C, k] += dy * states[s + 1, k]
                    for s in range(steps):
                        t = coefficient_step(start + s, length, coefficients_reversed)
                        delta_u = delta_us[s]
                        for k in range(dstate):
                            dB_partial[b, slot_B, t * partial_step_B, k] += adjoints[s, k] * delta_u
                    for s in range(steps):
                        t = coefficient_step(start + s, length, coefficients_reversed)
                        delta_t = deltas[s]
                        d_delta_u = ZERO
                        d_exponent = ZERO
                        for k in range(dstate):
                            g = adjoints[s, k]
                            d_delta_u += g * B[bB, gB, t * stepB, k]
                            through_decay = g * decays[s, k] * states[s, k]
                            d_exponent += through_decay * A_log2[d, k]
                            dA_d[k] += through_decay * delta_t
                        d_delta_us[s] = d_delta_u
                        d_exponents[s] = d_exponent
                    for s in range(steps):
                        dus[s] = dys[s] * D_d + d_delta_us[s] * deltas[s]
                        d_delta = d_delta_us[s] * us[s] + d_exponents[s] * ln_2_as(d_exponents[s])
                        raw = raw_deltas[s]
                        if softplus and raw <= SOFTPLUS_LINEAR_ABOVE:
                            d_delta *= sigmoid(raw)
                        d_delta_us[s] = d_delta
                    for s in range(steps):
                        dbias_d += d_delta_us[s]
                    du[b, d, start:start + steps] = dus[:steps]
                    ddelta[b, d, start:start + steps] = d_delta_us[:steps]
                dA_rows[b, d, :] = dA_d
                dD_rows[b, d] = dD_d
                dbias_rows[b, d] = dbias_d

    return SimpleNamespace(forward=forward, backward=backward)


def _arithmetic_limit(rows, steps, A_log2, B, C, y):
    """The scan's arithmetic and nothing else: per state update one exp2 and two fused multiply-adds
    (h = exp2(x) h + b; y += h c), over `rows` independent rows of n states, with no memory traffic beyond
    n-sized arrays. Its updates per second are the limit the benchmark holds the scan against."""
    dstate = A_log2.shape[0]
    for row in prange(rows):
        h = np.zeros(dstate, dtype=A_log2.dtype)
        total = ZERO
        scale = ONE / np.float32(steps)
        for t in range(steps):
            x = np.float32(t) * scale
            for k in range(dstate):
                h_k = exp2(x * A_log2[k]) * h[k] + B[k]
                h[k] = h_k
                total += h_k * C[k]
        y[row] = total


coefficient_index = numba.njit(inline="always", cache=True)(_coefficient_index)
coefficient_step = numba.njit(inline="always", cache=True)(_coefficient_step)


def _signatures(scalar: types.Float) -> SimpleNamespace:
    strided3, rows3 = types.Array(scalar, 3, "A"), types.Array(scalar, 3, "C")
    vector, matrix, array4 = types.Array(scalar, 1, "C"), types.Array(scalar, 2, "C"), types.Array(scalar, 4, "C")
    flag, count = types.boolean, types.int64
    return SimpleNamespace(
        forward=types.void(strided3, strided3, strided3, matrix, array4, array4, vector, vector, flag, count, flag,
                           flag, strided3, rows3, array4, strided3),
        backward=types.void(strided3, strided3, strided3, matrix, array4, array4, vector, vector, flag, count, flag,
                            flag, array4, strided3, strided3, types.Array(types.int64, 1, "C"), flag, flag, strided3,
                            strided3, strided3, rows3, array4, array4, matrix, matrix),
        limit=types.void(count, count, vector, vector, vector, vector))


@contextlib.contextmanager
def _state_loops_kept_vectorised():
    """LLVM's cost model vectorises the loops over the n states 8 lanes wide and interleaves them 4 ways (on the
    development machine's Xeon): 32 states per vector iteration, so with Mamba's 16 states the vector body never
    runs and the whole loop runs scalar, as LLVM's loop-vectorize remarks show. Without interleaving, 16 states
    are two vector iterations. Where n is a constant (`_scan_kernel_functions`), LLVM's full unrolling, which runs
    before the vectoriser, would turn each loop over 16 states into 16 scalar statements that its straight-line
    vectoriser then leaves scalar (it cannot tell the arrays apart): a forward + backward 27 % slower than with n
    read at run time. Full unrolling limited to 2 iterations leaves those loops to the loop vectoriser.
    The options are LLVM's process-wide settings, so they are set only while these kernels compile."""
    llvmlite.binding.set_option("", "-force-vector-interleave=1")
    llvmlite.binding.set_option("", f"-unroll-full-max-count={FULL_UNROLL_MAX_COUNT}")
    try:
        yield
    finally:
        llvmlite.binding.set_option("", "-force-vector-interleave=0")  # 0: the cost model decides again
        llvmlite.binding.set_option("", f"-unroll-full-max-count={LLVM_FULL_UNROLL_MAX_COUNT}")


def _compile(function, signature):
    # the numpy error model: a float division by zero gives inf as in PyTorch, and no check blocks vectorisation
    with _state_loops_kept_vectorised():
        return numba.njit(signature, parallel=True, cache=True, fastmath=FASTMATH, nogil=True,
                          error_model="numpy")(function)


def compiled(float64: bool, constant_states: int = 0) -> SimpleNamespace:
    """The kernels for float64 (else float32), for `constant_states` states only where given (0: any number, read
    from A at run time), compiled now or loaded from Numba's on-disk cache."""
    signatures = _signatures(types.float64 if float64 else types.float32)
    functions = _scan_kernel_functions(constant_states)
    return SimpleNamespace(forward=_compile(functions.forward, signatures.forward),
                           backward=_compile(functions.backward, signatures.backward))


def compiled_arithmetic_limit() -> numba.core.registry.CPUDispatcher:
    """The float32 arithmetic-limit kernel (for the benchmark)."""
    return _compile(_arithmetic_limit, _signatures(types.float32).limit)
