"""The selective scan as a `torch.library` custom op, so that `torch.compile` treats it as one opaque operation.

Dynamo cannot trace into the scans' autograd functions (Python loops over the steps, Triton launches, mamba_ssm's
extension), so a compiled network calls `msvmamba::selective_scan` instead: its forward runs the backend that
`selective_scan` would pick outside compile, and its backward (`msvmamba::selective_scan_backward`) recomputes the
forward under autograd and differentiates it, which costs one more forward of the scan per training step but
keeps the op's saved state to its inputs. Outside torch.compile `selective_scan` never goes through here.
"""
from __future__ import annotations

from typing import Optional

import torch

from .backend import selective_scan_eager
from .selective_scan_torch import compute_dtype_for

INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


@torch.library.custom_op("msvmamba::selective_scan", mutates_args=())
def _selective_scan_forward(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                            C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                            delta_bias: Optional[torch.Tensor], delta_softplus: bool
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    out, last_state = selective_scan_eager(u, delta, A, B, C, D, z, delta_bias, delta_softplus, True)
    # contiguous, as the fake promises (the backends return different memory layouts)
    return out.contiguous(), last_state.to(compute_dtype_for(u)).contiguous()


@_selective_scan_forward.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return u.new_empty(u.shape), u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=compute_dtype_for(u))


@torch.library.custom_op("msvmamba::selective_scan_backward", mutates_args=())
def _selective_scan_backward(grad_out: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor,
                             B: torch.Tensor, C: torch.Tensor, D: Optional[torch.Tensor], z: Optional[torch.Tensor],
                             delta_bias: Optional[torch.Tensor], delta_softplus: bool) -> list[torch.Tensor]:
    """The gradient of every input, an empty tensor for an absent one."""
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_() for t in inputs]
        out = selective_scan_eager(*leaves, delta_softplus=delta_softplus)
        present = [leaf for leaf in leaves if leaf is not None]
        grads = iter(torch.autograd.grad(out, present, grad_out))
    return [u.new_empty(0) if leaf is None else next(grads).contiguous() for leaf in leaves]


@_selective_scan_backward.register_fake
def _(grad_out, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return [u.new_empty(0) if t is None else t.new_empty(t.shape) for t in (u, delta, A, B, C, D, z, delta_bias)]


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs[:8])
    ctx.delta_softplus = inputs[8]


def _backward(ctx, grad_out, grad_last_state):
    saved = ctx.saved_tensors
    grads = _selective_scan_backward(grad_out, *saved, ctx.delta_softplus)
    return (*(None if t is None else g for t, g in zip(saved, grads)), None)


_selective_scan_forward.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_op(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                      D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                      delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                      return_last_state: bool = False):
    """`selective_scan` through the custom op (what a compiled network runs)."""
    out, last_state = _selective_scan_forward(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus))
    return (out, last_state.detach()) if return_last_state else out
