"""The selective scan written the obvious way: a Python loop over the steps of the recurrence.

This is the math the fast scans (`selective_scan_torch`, `selective_scan_triton`, mamba_ssm's fused kernel) must
reproduce, kept short so that it can be read against the paper; tests and benchmarks hold the fast ones against
it, next to upstream's `selective_scan_ref`. It is slow (one small graph per step under autograd) and never used
to train.

    delta' = softplus(delta + delta_bias)   (each part optional)
    h_t    = exp(delta'_t A) h_{t-1} + delta'_t u_t B_t,   h_{-1} = 0      (per batch and channel, h in R^n)
    y_t    = <C_t, h_t> + D u_t
    out_t  = y_t * silu(z_t)                                              (when z is given)

Shapes: u, delta, z (batch, dim, L); A (dim, n); D, delta_bias (dim,). B and C are constant (dim, n), shared over
channels (batch, n, L), or grouped (batch, groups, n, L), where channel d reads group d // (dim / groups).
Computed in the dtype of `u` (pass float64 tensors for a float64 reference); gradients come from autograd
through the loop, so they are independent of the hand-derived backward passes of the fast scans.
"""
from __future__ import annotations

from typing import Optional

import torch

SOFTPLUS_LINEAR_ABOVE = 20.0  # torch.nn.functional.softplus's default threshold, which mamba_ssm relies on


def softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x), taken as x itself above the threshold, as PyTorch (and so mamba_ssm) defines it."""
    return torch.where(x > SOFTPLUS_LINEAR_ABOVE, x, torch.log1p(torch.exp(x.clamp(max=SOFTPLUS_LINEAR_ABOVE))))


def coefficient_at_step(coefficient: torch.Tensor, step: int, batch: int, dim: int) -> torch.Tensor:
    """The (batch, dim, n) B or C that each channel reads at `step`, whatever the input layout."""
    if coefficient.dim() == 2:  # (dim, n), the same at every step
        return coefficient.unsqueeze(0).expand(batch, -1, -1)
    if coefficient.dim() == 3:  # (batch, n, L), shared by every channel
        return coefficient[:, :, step].unsqueeze(1).expand(-1, dim, -1)
    groups = coefficient.shape[1]  # (batch, groups, n, L), channels split into equal consecutive groups
    group_of_channel = torch.arange(dim, device=coefficient.device) // (dim // groups)
    return coefficient[:, group_of_channel, :, step]


def selective_scan_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                       delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                       return_last_state: bool = False):
    """`out` (batch, dim, L), or `(out, last_state)` with last_state = h_{L-1} (batch, dim, n); same signature
    as `selective_scan`."""
    dtype = u.dtype
    u, delta, A, B, C, D, z, delta_bias = (None if t is None else t.to(dtype)
                                           for t in (u, delta, A, B, C, D, z, delta_bias))
    batch, dim, length = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = softplus(delta)

    state = u.new_zeros(batch, dim, A.shape[1])
    outputs = []
    for step in range(length):
        delta_step, u_step = delta[:, :, step, None], u[:, :, step, None]
        state = torch.exp(delta_step * A) * state + delta_step * u_step * coefficient_at_step(B, step, batch, dim)
        y_step = (state * coefficient_at_step(C, step, batch, dim)).sum(dim=-1)
        if D is not None:
            y_step = y_step + D * u[:, :, step]
        if z is not None:
            z_step = z[:, :, step]
            y_step = y_step * z_step * torch.sigmoid(z_step)
        outputs.append(y_step)
    out = torch.stack(outputs, dim=-1)
    return (out, state.detach()) if return_last_state else out


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """The parity checks' error measure: max|ours - reference| / max|reference|, so that a tensor with entries
    near zero is judged at its own scale rather than entry by entry."""
    scale = reference.abs().max().item()
    return (ours.double() - reference.double()).abs().max().item() / (scale if scale > 0 else 1.0)
