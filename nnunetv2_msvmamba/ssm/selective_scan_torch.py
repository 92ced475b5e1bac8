"""Pure-PyTorch selective scan with its own backward pass.

Same contract as `mamba_ssm.ops.selective_scan_interface.selective_scan_fn` (real A only):

    u, delta, z: (batch, dim, L)     A: (dim, n)     D, delta_bias: (dim,)
    B, C: (dim, n) constant, (batch, n, L), or (batch, groups, n, L) with dim divisible by groups

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t        y_t = <C_t, h_t> + D * u_t
    out = y * silu(z)                                             (when z is given)

Autograd through a Python loop over L records L small graphs and costs ~45x the forward on a CPU; here the
forward loop is one fused in-place multiply-add per step on a time-major buffer, and the backward recomputes
the states chunk by chunk and runs the adjoint recurrence the same way, so it costs about two forwards and
never holds more than one chunk of the (L, batch, dim, n) states.
Everything is computed in float32 (float64 for float64 inputs) with autocast disabled, because the
recurrence overflows and loses precision in half precision.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

# Steps per chunk: the states of one chunk, (CHUNK, batch, dim, n), are all that is held at once; the
# boundary states kept for the backward cost (L / CHUNK) * batch * dim * n, about one activation for n = 16.
CHUNK = 16

# A (L, batch, groups, dim_per_group, n) view is used for every tensor so that constant, shared and
# grouped B/C go through the same batched matmuls; a B/C tensor is held as (L|1, batch|1, groups, 1, n).


def _bc_to_grouped(x: torch.Tensor, name: str, dim: int, dstate: int) -> torch.Tensor:
    if x.dim() == 2:
        if x.shape != (dim, dstate):
            raise ValueError(f"constant {name} must have shape (dim, n) = {(dim, dstate)}, got {tuple(x.shape)}")
        return x.reshape(1, 1, dim, 1, dstate)
    if x.dim() == 3:
        return x.permute(2, 0, 1).unsqueeze(2).unsqueeze(3)
    if x.dim() == 4:
        if dim % x.shape[1]:
            raise ValueError(f"{name} has {x.shape[1]} groups, which does not divide dim={dim}")
        return x.permute(3, 0, 1, 2).unsqueeze(3)
    raise ValueError(f"{name} must have 2, 3 or 4 dimensions, got shape {tuple(x.shape)}")


def _grouped_grad_to_input_layout(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sums a (L, batch, groups, 1, n) gradient over what the input broadcast and returns it in its layout."""
    if like.dim() == 2:
        return grad.sum(dim=(0, 1)).reshape(like.shape)
    if like.dim() == 3:
        return grad[:, :, 0, 0, :].permute(1, 2, 0)
    return grad[:, :, :, 0, :].permute(1, 2, 3, 0)


def _sum_over_broadcast(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sums the step and batch axes that a constant B/C was broadcast over."""
    axes = [axis for axis in (0, 1) if like.shape[axis] == 1 and grad.shape[axis] != 1]
    return grad.sum(dim=axes, keepdim=True) if axes else grad  # sum(dim=[]) would reduce everything


def _split_groups(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(L, batch, dim, ...) -> (L, batch, groups, dim // groups, ...)."""
    return x.reshape(x.shape[0], x.shape[1], groups, x.shape[2] // groups, *x.shape[3:])


def _decay(delta_t: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """exp(delta * A) for every step, (L, batch, dim, n)."""
    return torch.exp(delta_t.unsqueeze(-1) * A)


def _softplus_grad(delta_raw: torch.Tensor) -> torch.Tensor:
    # matches F.softplus(beta=1, threshold=20), which is the identity above the threshold
    return torch.where(delta_raw > 20, torch.ones_like(delta_raw), torch.sigmoid(delta_raw))


def _steps(x5: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Steps [start, stop) of a grouped B/C tensor; a constant one is the same at every step."""
    return x5[start:stop] if x5.shape[0] > 1 else x5


def _chunk_bounds(length: int) -> list[tuple[int, int]]:
    return [(start, min(start + CHUNK, length)) for start in range(0, length, CHUNK)]


def _chunk_states(delta_t: torch.Tensor, delta_u_t: torch.Tensor, A: torch.Tensor, B5: torch.Tensor,
                  h_before: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The decays and the states h_t of one chunk, given the state before it (None: zero)."""
    steps, batch, dim = delta_t.shape
    decay = _decay(delta_t, A)
    states = (_split_groups(delta_u_t.unsqueeze(-1), B5.shape[2]) * B5).reshape(steps, batch, dim, A.shape[1])
    if h_before is not None:
        states[0].addcmul_(decay[0], h_before)
    for t in range(1, steps):  # h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, one fused op per step
        states[t].addcmul_(decay[t], states[t - 1])
    return decay, states


def _accumulate(total: torch.Tensor, chunk_grad: torch.Tensor, like: torch.Tensor, start: int, stop: int) -> None:
    if like.shape[0] > 1:
        total[start:stop] = chunk_grad
    else:
        total += _sum_over_broadcast(chunk_grad, like)


class _SelectiveScanTorch(torch.autograd.Function):
    """Chunked over L: the forward keeps only the state at each chunk boundary, the backward recomputes a
    chunk's states from it and runs the adjoint recurrence, so memory is O(CHUNK * batch * dim * n)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, return_last_state: bool):
        if A.is_complex():
            raise NotImplementedError("the pure-PyTorch selective scan supports real A only")
        ctx.input_dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
        compute_dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
        batch, dim, length = u.shape
        dstate = A.shape[1]
        with torch.autocast(u.device.type, enabled=False):
            u_c, A_c = u.to(compute_dtype), A.to(compute_dtype)
            delta_raw = delta.to(compute_dtype)
            if delta_bias is not None:
                delta_raw = delta_raw + delta_bias.to(compute_dtype).unsqueeze(-1)
            delta_c = F.softplus(delta_raw) if delta_softplus else delta_raw
            B5 = _bc_to_grouped(B.to(compute_dtype), "B", dim, dstate)
            C5 = _bc_to_grouped(C.to(compute_dtype), "C", dim, dstate)

            delta_t = delta_c.permute(2, 0, 1).contiguous()  # (L, batch, dim): one contiguous slab per step
            delta_u_t = (delta_c * u_c).permute(2, 0, 1).contiguous()
            bounds = _chunk_bounds(length)
            boundary_states = u_c.new_empty((len(bounds), batch, dim, dstate))
            y_t = u_c.new_empty((length, batch, dim))
            h = None
            for index, (start, stop) in enumerate(bounds):
                if h is not None:
                    boundary_states[index] = h
                _, states = _chunk_states(delta_t[start:stop], delta_u_t[start:stop], A_c,
                                          _steps(B5, start, stop), h)
                y_t[start:stop] = (_split_groups(states, C5.shape[2])
                                   @ _steps(C5, start, stop).transpose(-1, -2)).reshape(stop - start, batch, dim)
                h = states[-1]
            y = y_t.permute(1, 2, 0)
            if D is not None:
                y = y + u_c * D.to(compute_dtype).unsqueeze(-1)
            out = y if z is None else y * F.silu(z.to(compute_dtype))

        ctx.delta_softplus = delta_softplus
        ctx.save_for_backward(u_c, delta_raw, delta_t, delta_u_t, A_c, B, C, B5, C5, D, z, boundary_states,
                              y if z is not None else None)
        out = out.to(u.dtype)
        if return_last_state:
            last_state = h.clone()
            ctx.mark_non_differentiable(last_state)
            return out, last_state
        return out

    @staticmethod
    def backward(ctx, dout, *unused_last_state_grad):
        (u_c, delta_raw, delta_t, delta_u_t, A_c, B, C, B5, C5, D, z, boundary_states,
         y) = ctx.saved_tensors
        length, batch, dim = delta_t.shape
        with torch.autocast(u_c.device.type, enabled=False):
            dout = dout.to(u_c.dtype)
            dz = None
            if z is not None:
                z_c = z.to(u_c.dtype)
                sig = torch.sigmoid(z_c)
                dz = dout * y * sig * (1 + z_c * (1 - sig))
                dout = dout * z_c * sig
            dD = (dout * u_c).sum(dim=(0, 2)) if D is not None else None
            du = dout * D.to(u_c.dtype).unsqueeze(-1) if D is not None else torch.zeros_like(u_c)

            dy_t = dout.permute(2, 0, 1).contiguous()  # (L, batch, dim)
            dA = torch.zeros_like(A_c)
            dB5 = torch.zeros_like(B5)
            dC5 = torch.zeros_like(C5)
            ddelta_t = torch.empty_like(delta_t)
            d_delta_u = torch.empty_like(delta_t)
            carry = None  # exp(delta_s A) * g_s of the chunk after: what g_{s-1} receives from step s
            bounds = _chunk_bounds(length)
            for index in range(len(bounds) - 1, -1, -1):
                start, stop = bounds[index]
                steps = stop - start
                h_before = boundary_states[index] if index > 0 else None
                B_chunk, C_chunk = _steps(B5, start, stop), _steps(C5, start, stop)
                decay, states = _chunk_states(delta_t[start:stop], delta_u_t[start:stop], A_c, B_chunk, h_before)
                dy_chunk = _split_groups(dy_t[start:stop].unsqueeze(-1), C5.shape[2])
                _accumulate(dC5, dy_chunk.transpose(-1, -2) @ _split_groups(states, C5.shape[2]), C5, start, stop)

                # adjoint recurrence: g_t = dL/dh_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}
                adjoint = (dy_chunk * C_chunk).reshape(steps, batch, dim, A_c.shape[1])
                if carry is not None:
                    adjoint[-1] += carry
                for t in range(steps - 2, -1, -1):
                    adjoint[t].addcmul_(decay[t + 1], adjoint[t + 1])
                carry = decay[0] * adjoint[0]

                # dL/d(delta_t A) = g_t * h_{t-1} * exp(delta_t A), with h_{-1} = 0
                d_exponent = decay
                d_exponent[1:].mul_(adjoint[1:]).mul_(states[:-1])
                if h_before is None:
                    d_exponent[0].zero_()
                else:
                    d_exponent[0].mul_(adjoint[0]).mul_(h_before)
                dA += (d_exponent * delta_t[start:stop].unsqueeze(-1)).sum(dim=(0, 1))
                ddelta_t[start:stop] = (d_exponent.unsqueeze(-2) @ A_c.unsqueeze(-1)).reshape(steps, batch, dim)

                adjoint_by_b = _split_groups(adjoint, B5.shape[2])
                d_delta_u[start:stop] = (adjoint_by_b @ B_chunk.transpose(-1, -2)).reshape(steps, batch, dim)
                delta_u_chunk = _split_groups(delta_u_t[start:stop].unsqueeze(-1), B5.shape[2])
                _accumulate(dB5, delta_u_chunk.transpose(-1, -2) @ adjoint_by_b, B5, start, stop)

            u_t = u_c.permute(2, 0, 1)
            ddelta_t += d_delta_u * u_t
            du = du + (d_delta_u * delta_t).permute(1, 2, 0)
            ddelta = ddelta_t.permute(1, 2, 0)
            if ctx.delta_softplus:
                ddelta = ddelta * _softplus_grad(delta_raw)
            ddelta_bias = ddelta.sum(dim=(0, 2))

        grads = [du, ddelta, dA, _grouped_grad_to_input_layout(dB5, B), _grouped_grad_to_input_layout(dC5, C),
                 dD, dz, ddelta_bias]
        grads = [g.to(dtype) if g is not None and dtype is not None else None
                 for g, dtype in zip(grads, ctx.input_dtypes)]
        return (*grads, None, None)


def selective_scan_torch(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                         C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                         delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                         return_last_state: bool = False):
    """Selective scan on any device; returns `out` or `(out, last_state)` like upstream's `selective_scan_fn`.
    As upstream, no gradient flows through `last_state`."""
    return _SelectiveScanTorch.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
