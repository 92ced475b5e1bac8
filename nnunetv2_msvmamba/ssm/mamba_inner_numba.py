"""The Mamba mixer's inner part on CPU tensors with the Numba kernels, as one autograd node: from in_proj's output to
the scan's output summed over the directions, before out_proj (`mamba_ssm`'s `mamba_inner_fn` for the CPU, less
out_proj, which stays an ordinary linear layer).

Composed of autograd's ops, the backward concatenated the gradients of in_proj's two halves and of x_proj's three
outputs into fresh tensors, added x_proj's input gradient to the scan's in a third, and copied B and C for the
kernels in the forward and again in the backward: a full-resolution mixer's training step (1024 windows x 256 x 32
channels, 2 threads) took 4-7 % longer. Here each gradient is written where it goes: dz by the scan kernels and the
convolution's dx by its kernel into the two halves of one in_proj gradient, B's and C's into x_proj's output
gradient, and x_proj's input gradient added in place to the scan's du. B and C are made contiguous once and kept.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._recycled_memory import empty_output
from .causal_conv1d_numba import conv_backward, conv_forward
from .selective_scan_numba import check_cpu, scan_backward, scan_forward
from .selective_scan_torch import compute_dtype_for

REVERSE = (False, True)  # direction 0 scans forward, direction 1 (bidirectional) backward


def _rows(x: torch.Tensor) -> torch.Tensor:
    """A (..., features) tensor as a (positions, features) matrix."""
    return x.reshape(-1, x.shape[-1])


def _scan_inputs(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 D: torch.Tensor, z: torch.Tensor, delta_bias: torch.Tensor) -> tuple:
    """The channels-last tensors as the scan takes them, (..., dim or n, L): views, nothing copied."""
    return (u.transpose(2, 3), delta.transpose(2, 3), A, B.transpose(2, 3), C.transpose(2, 3), D, z.transpose(1, 2),
            delta_bias)


class _MambaInnerNumba(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D,
                directions: int, grad_enabled: bool):
        dtype = compute_dtype_for(xz)
        # the caller's grad mode: inside forward it is always off, and needs_input_grad is True for a parameter even
        # under torch.no_grad(), where checkpoints and gate inputs would be kept for no backward
        needs_grad = grad_enabled and any(ctx.needs_input_grad[:8])
        with torch.autocast("cpu", enabled=False):
            xz_computed = xz.detach().to(dtype)
            x, z = xz_computed.chunk(2, dim=-1)
            u = conv_forward(x, conv_weight, conv_bias, directions)  # (directions, batch, L, d_inner)
            x_proj_w, dt_proj_w = x_proj_weight.detach().to(dtype), dt_proj_weight.detach().to(dtype)
            rank = dt_proj_w.shape[1]
            dstate = (x_proj_w.shape[0] - rank) // 2
            # x_proj's output (directions, batch, L, dt_rank + 2 n) as three contiguous tensors, which are kept for
            # the backward instead of it (no larger in all), so that it is freed before the scan runs
            dt, B, C = (part.contiguous() for part in F.linear(u, x_proj_w).split([rank, dstate, dstate], dim=-1))
            delta = F.linear(dt, dt_proj_w)  # its bias is applied inside the scan
            A = -torch.exp(A_log.detach().to(dtype))
            D, delta_bias = D.detach().to(dtype), dt_proj_bias.detach().to(dtype)
            out, _, checkpoints, gate_inputs = scan_forward(*_scan_inputs(u, delta, A, B, C, D, z, delta_bias), True,
                                                            REVERSE[:directions], needs_grad)
        if needs_grad:
            # delta is kept (mamba_ssm's mamba_inner_fn recomputes it from dt in the backward: a mixer's training
            # step took 4-5 % longer that way on the CPU, for one (directions, batch, L, d_inner) tensor less kept)
            ctx.save_for_backward(xz_computed, conv_weight, conv_bias, x_proj_w, dt_proj_w, u, dt, delta, A, B, C, D,
                                  delta_bias, checkpoints, gate_inputs)
            ctx.input_dtypes = [t.dtype if t is not None else None
                                for t in (xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias,
                                          A_log, D)]
        return out.transpose(1, 2).to(xz.dtype)  # out is channels last: (batch, L, d_inner), contiguous

    @staticmethod
    def backward(ctx, dy):
        (xz, conv_weight, conv_bias, x_proj_w, dt_proj_w, u, dt, delta, A, B, C, D, delta_bias, checkpoints,
         gate_inputs) = ctx.saved_tensors
        directions = u.shape[0]
        rank, dstate = dt.shape[-1], B.shape[-1]
        with torch.autocast("cpu", enabled=False):
            x, z = xz.chunk(2, dim=-1)
            dxz = empty_output(xz.shape, xz.dtype)
            dx, dz = dxz.chunk(2, dim=-1)
            grads = scan_backward(*_scan_inputs(u, delta, A, B, C, D, z, delta_bias), True, REVERSE[:directions],
                                  checkpoints, gate_inputs, dy.to(xz.dtype).transpose(1, 2), dz=dz.transpose(1, 2))
            du, ddelta = grads.du.transpose(2, 3), grads.ddelta.transpose(2, 3)  # channels last, contiguous
            d_x_dbl = empty_output((*u.shape[:-1], rank + 2 * dstate), u.dtype)
            d_x_dbl[..., :rank] = ddelta @ dt_proj_w
            for s in range(directions):
                d_x_dbl[s, ..., rank:rank + dstate] = grads.dB[s].transpose(1, 2)
                d_x_dbl[s, ..., rank + dstate:] = grads.dC[s].transpose(1, 2)
            # dt_proj's weight gradient as (dt^T ddelta)^T: the CPU BLAS took 9x as long for PyTorch's
            # ddelta^T dt, whose inner dimension is half a million rows of rank 2 (205 ms against 24 ms)
            d_dt_proj_w = (_rows(dt).t() @ _rows(ddelta)).t()
            del ddelta, grads.ddelta
            d_x_proj_w = _rows(d_x_dbl).t() @ _rows(u)
            _rows(du).addmm_(_rows(d_x_dbl), x_proj_w)
            _, d_conv_weight, d_conv_bias = conv_backward(x, conv_weight, conv_bias, du, dx=dx)
            grads = (dxz, d_conv_weight, d_conv_bias, d_x_proj_w, d_dt_proj_w, grads.ddelta_bias, grads.dA * A,
                     grads.dD)
        return (*(g.to(dtype) if g is not None else None for g, dtype in zip(grads, ctx.input_dtypes)), None, None)


def mamba_inner_numba(xz: torch.Tensor, conv_weight: torch.Tensor, conv_bias: Optional[torch.Tensor],
                      x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor, dt_proj_bias: torch.Tensor,
                      A_log: torch.Tensor, D: torch.Tensor, directions: int = 1) -> torch.Tensor:
    """A Mamba mixer's scan output before out_proj, from in_proj's output xz (batch, L, 2 d_inner), on CPU tensors:
    silu(causal conv1d) of its first half, x_proj into dt, B and C, dt_proj (its bias as the scan's delta_bias),
    A = -exp(A_log), and the selective scan gated by the second half -> (batch, L, d_inner). With `directions=2`
    the sum of that and of the same for the sequences reversed, turned back. Computes in float32 (float64 for
    float64 xz) whatever the autocast state, and returns xz's dtype."""
    check_cpu(xz, "Mamba mixer")
    if directions not in (1, 2):
        raise ValueError(f"directions must be 1 or 2, got {directions}")
    return _MambaInnerNumba.apply(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, dt_proj_bias, A_log, D,
                                  directions, torch.is_grad_enabled())
