"""An independent float64 selective scan, written step by step from the recurrence, and the error measure of
the parity tests.

    delta' = softplus(delta + delta_bias)   (each part optional)
    h_t    = exp(delta'_t A) h_{t-1} + delta'_t u_t B_t,   h_{-1} = 0      (per batch and channel, h in R^n)
    y_t    = <C_t, h_t> + D u_t
    out_t  = y_t * silu(z_t)

B and C are constant (dim, n), shared over channels (batch, n, L), or grouped (batch, groups, n, L), where
channel d reads group d // (dim / groups). Gradients come from autograd through this loop, in float64, so
they are independent of the analytic backward under test.
"""
from __future__ import annotations

from typing import Optional

import torch

SOFTPLUS_LINEAR_ABOVE = 20.0  # torch.nn.functional.softplus's default threshold, which mamba_ssm relies on


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """The parity tests' error measure: max|ours - reference| / max|reference|, so that a tensor with entries
    near zero is judged at its own scale rather than entry by entry."""
    scale = reference.abs().max().item()
    return (ours.double() - reference.double()).abs().max().item() / (scale if scale > 0 else 1.0)


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
    group_of_channel = torch.arange(dim) // (dim // groups)
    return coefficient[:, group_of_channel, :, step]


def reference_selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                             delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, last_state) in float64: out (batch, dim, L), last_state = h_{L-1} (batch, dim, n)."""
    as64 = (lambda t: None if t is None else t.to(torch.float64))
    u, delta, A, B, C, D, z, delta_bias = map(as64, (u, delta, A, B, C, D, z, delta_bias))
    batch, dim, length = u.shape
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = softplus(delta)

    state = torch.zeros(batch, dim, A.shape[1], dtype=torch.float64)
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
    return torch.stack(outputs, dim=-1), state
