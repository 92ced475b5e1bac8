"""Mamba's depthwise causal convolution and SiLU, fused, in both scan directions, as multi-threaded CPU kernels
compiled by Numba (`causal_conv1d`'s `causal_conv1d_fn(x, weight, bias, activation="silu")` for the CPU).

It reads in_proj's output where it lies, channels last, and writes both directions into one channels-last
tensor that x_proj reads as it is: PyTorch's conv1d needs (batch, channels, L), a flipped copy for the reverse
direction, and the concatenation of both directions, and takes several times as long (see docs/benchmarks.md).
Compiled on first use and cached on disk, as the Numba selective scan. The mixer's autograd node
(`mamba_inner_numba`) calls the forward and the backward here, which are not autograd functions themselves.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Optional

import torch

from ._recycled_memory import empty_output
from .selective_scan_numba import _launch_lock, compiled_kernels, set_threads_from_torch
from .selective_scan_torch import compute_dtype_for


def _kernels(compute_dtype: torch.dtype) -> SimpleNamespace:
    return compiled_kernels("_numba_conv_kernels", compute_dtype)


def _kernel_inputs(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype) -> tuple:
    """x (strides kept), the weights as (K, dim) and the bias (zeros when absent), as numpy arrays in `dtype`."""
    weight_t = weight.detach().to(dtype).reshape(weight.shape[0], weight.shape[-1]).t().contiguous()
    bias = torch.zeros(weight.shape[0], dtype=dtype) if bias is None else bias.detach().to(dtype).contiguous()
    return x.detach().to(dtype).numpy(), weight_t.numpy(), bias.numpy()


def conv_forward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], directions: int) -> torch.Tensor:
    """silu(depthwise causal conv1d), channels last: x (batch, L, dim) with any strides, weight (dim, 1, K) or
    (dim, K) (nn.Conv1d's), bias (dim,) or None -> (directions, batch, L, dim), contiguous, in the compute dtype
    (float32; float64 for float64 x). Direction 0 is `silu(conv1d(x.transpose(1, 2), weight, bias, padding=K - 1,
    groups=dim)[..., :L])` transposed back; direction 1 (`directions=2`) the same of x reversed along L, reversed
    back: what a Mamba mixer's reverse scan reads, in x's own order."""
    batch, length, dim = x.shape
    dtype = compute_dtype_for(x)
    with torch.autocast("cpu", enabled=False):
        out = empty_output((directions, batch, length, dim), dtype)
        kernels = _kernels(dtype)
        with _launch_lock:
            set_threads_from_torch()
            kernels.forward(*_kernel_inputs(x, weight, bias, dtype), out.numpy())
    return out


def conv_backward(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dout: torch.Tensor,
                  dx: Optional[torch.Tensor] = None) -> tuple:
    """The backward kernel given the output's gradient: (dx, dweight, dbias) in the compute dtype, dx written into
    `dx` where given (a (batch, L, dim) tensor in any layout), dbias None without a bias."""
    batch, length, dim = x.shape
    dtype = compute_dtype_for(x)
    with torch.autocast("cpu", enabled=False):
        if dx is None:
            dx = empty_output((batch, length, dim), dtype)
        dweight_rows = x.new_empty((batch, weight.shape[-1], dim), dtype=dtype)
        dbias_rows = x.new_empty((batch, dim), dtype=dtype)
        kernels = _kernels(dtype)
        with _launch_lock:
            set_threads_from_torch()
            kernels.backward(*_kernel_inputs(x, weight, bias, dtype), dout.detach().to(dtype).contiguous().numpy(),
                             dx.numpy(), dweight_rows.numpy(), dbias_rows.numpy())
        dweight = dweight_rows.sum(dim=0).t().reshape(weight.shape)
        dbias = dbias_rows.sum(dim=0) if bias is not None else None
    return dx, dweight, dbias
