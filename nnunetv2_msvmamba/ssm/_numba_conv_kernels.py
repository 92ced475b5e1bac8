"""The Numba kernels of `causal_conv1d_numba` (imported only where that backend runs: it imports numba).

Layouts: x and dx (batch, L, dim) with any strides (Mamba's in_proj output and its gradient, channels last);
weight_t (K, dim), the depthwise weights with the taps first so that a loop over channels reads them contiguously;
bias (dim,); out and dout (directions, batch, L, dim), contiguous. Direction 0 is the causal convolution of x,
direction 1 the causal convolution of x reversed, kept in x's order (an anti-causal convolution with the taps
reversed):

    pre[0, t] = bias + sum_k w_k x[t - (K - 1) + k]        pre[1, t] = bias + sum_k w_k x[t + (K - 1) - k]
    out = silu(pre)

Each batch row is copied once into a scratch padded with K - 1 zero steps at both ends, so that every tap is a
plain loop over contiguous channels, which vectorises, with no test at the sequence's ends.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from numba import prange, types

from ._numba_kernels import EXP2_CONSTANTS_FIXED, INLINED_CODE_DIGEST, ONE, _compile, sigmoid


def _padded_row(x, row, taps):
    """x[row] (L, dim) copied between K - 1 zero steps at each end."""
    length, dim = x.shape[1], x.shape[2]
    padded = np.zeros((length + 2 * (taps - 1), dim), dtype=x.dtype)
    for t in range(length):
        padded[taps - 1 + t, :] = x[row, t, :]
    return padded


def _tap_row(t, k, taps, direction):
    """The padded scratch's row that tap k reads for step t: x[t - (K - 1) + k] causally, x[t + (K - 1) - k]
    for the reversed direction."""
    return t + k if direction == 0 else t + 2 * (taps - 1) - k


def _pre_activation(padded, weight_t, bias, t, direction, pre):
    """pre = bias + sum_k w_k x[the step tap k reads], over all channels."""
    taps = weight_t.shape[0]
    pre[:] = bias
    for k in range(taps):
        row = tap_row(t, k, taps, direction)
        for c in range(pre.shape[0]):
            pre[c] += weight_t[k, c] * padded[row, c]


def _kernel_functions() -> SimpleNamespace:
    """The forward and backward kernels as Python functions, for `_compile`. They inline _numba_kernels' sigmoid and
    exp2, and Numba's on-disk cache keys a kernel on its own file and the values its closure holds, not on the files
    it inlines from: they close over INLINED_CODE_DIGEST, so that an edit there recompiles them too."""
    inlined_code = INLINED_CODE_DIGEST

    def forward(x, weight_t, bias, out):
        inlined_code  # in the cache key (INLINED_CODE_DIGEST)
        directions, batch, length, dim = out.shape
        for row in prange(batch):
            padded = padded_row(x, row, weight_t.shape[0])
            pre = np.empty(dim, dtype=x.dtype)
            for direction in range(directions):
                for t in range(length):
                    pre_activation(padded, weight_t, bias, t, direction, pre)
                    for c in range(dim):
                        out[direction, row, t, c] = pre[c] * sigmoid(pre[c], EXP2_CONSTANTS_FIXED)

    def backward(x, weight_t, bias, dout, dx, dweight_rows, dbias_rows):
        """dx (any strides), and each batch row's own share of the weight and bias gradients (dweight_rows (batch, K,
        dim), dbias_rows (batch, dim)), which PyTorch sums afterwards: no two threads write one element."""
        inlined_code  # in the cache key (INLINED_CODE_DIGEST)
        directions, batch, length, dim = dout.shape
        taps = weight_t.shape[0]
        for row in prange(batch):
            padded = padded_row(x, row, taps)
            dpadded = np.zeros_like(padded)
            pre = np.empty(dim, dtype=x.dtype)
            dpre = np.empty(dim, dtype=x.dtype)
            dweight = np.zeros((taps, dim), dtype=x.dtype)
            dbias = np.zeros(dim, dtype=x.dtype)
            for direction in range(directions):
                for t in range(length):
                    pre_activation(padded, weight_t, bias, t, direction, pre)
                    for c in range(dim):  # silu'(p) = sigmoid(p) (1 + p (1 - sigmoid(p)))
                        sig = sigmoid(pre[c], EXP2_CONSTANTS_FIXED)
                        dpre[c] = dout[direction, row, t, c] * sig * (ONE + pre[c] * (ONE - sig))
                        dbias[c] += dpre[c]
                    for k in range(taps):
                        tap = tap_row(t, k, taps, direction)
                        for c in range(dim):
                            dweight[k, c] += dpre[c] * padded[tap, c]
                            dpadded[tap, c] += weight_t[k, c] * dpre[c]
            for t in range(length):
                dx[row, t, :] = dpadded[taps - 1 + t, :]
            dweight_rows[row] = dweight
            dbias_rows[row] = dbias

    return SimpleNamespace(forward=forward, backward=backward)


def _inline(function):
    import numba
    return numba.njit(inline="always", cache=True, error_model="numpy")(function)


padded_row, tap_row, pre_activation = _inline(_padded_row), _inline(_tap_row), _inline(_pre_activation)


def compiled(float64: bool) -> SimpleNamespace:
    """The forward and backward kernels for float64 (else float32), compiled now or loaded from Numba's cache."""
    scalar = types.float64 if float64 else types.float32
    strided3, rows3 = types.Array(scalar, 3, "A"), types.Array(scalar, 3, "C")
    vector, matrix, array4 = types.Array(scalar, 1, "C"), types.Array(scalar, 2, "C"), types.Array(scalar, 4, "C")
    functions = _kernel_functions()
    return SimpleNamespace(forward=_compile(functions.forward, types.void(strided3, matrix, vector, array4)),
                           backward=_compile(functions.backward, types.void(strided3, matrix, vector, array4, strided3,
                                                                            rows3, matrix)))
