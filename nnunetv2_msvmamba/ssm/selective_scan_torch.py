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

Layout: the channels are innermost. The states of a chunk are held as (steps, rows, G, n, dim // G), where G
is the number of channel groups that B and C need (1 for the (batch, n, L) layout); per-channel tensors
(delta, u, y, ...) are (batch, L, dim) (Mamba's delta and z already are, transposed), viewed per chunk as
(steps, rows, G, 1, dim // G), and an input-dependent B or C is (batch, L, G, n, 1). Every elementwise op over
the states then runs along the long, contiguous channel axis (SIMD-friendly) instead of along n = 16, and
y = C^T h is a (1 x n) @ (n x channels) matmul instead of a matrix-vector product. On a CPU the batch is
scanned in slices of rows whose chunk buffers stay in the cache; on a GPU in as few slices as memory allows (each
op is a kernel launch); the buffers are reused from chunk to chunk.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

# Steps per chunk: the boundary states kept for the backward cost (L / CHUNK) * batch * dim * n, about one
# activation for n = 16; fewer steps per chunk mean more boundary states, more make no faster scan.
CHUNK = 16
# Elements of one chunk buffer, (CHUNK, rows, G, n, p): on a CPU the batch is scanned in slices of rows small
# enough that the few buffers of a chunk (4 MiB each in float32) stay in the cache, as every op on them is a
# memory-bound elementwise one. Measured on a CPU: 2^18 and 2^20 are about as fast, 2^22 is ~1.4x slower.
CHUNK_BUFFER_ELEMENTS = 1 << 20
# On a GPU every op is one kernel launch whatever its size, so slicing the batch would multiply the launches:
# the batch is sliced only to bound the buffers' memory (256 MiB each in float32).
GPU_CHUNK_BUFFER_ELEMENTS = 1 << 26

LOG2_E = math.log2(math.e)


def compute_dtype_for(u: torch.Tensor) -> torch.dtype:
    """The dtype the CPU scans compute in for input `u`: float64 for float64 input, else float32."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _groups(x: torch.Tensor, name: str, dim: int, dstate: int) -> int:
    """Channel groups that an input-dependent B/C distinguishes (a constant one is per channel: any)."""
    if x.dim() == 2:
        if x.shape != (dim, dstate):
            raise ValueError(f"constant {name} must have shape (dim, n) = {(dim, dstate)}, got {tuple(x.shape)}")
        return 1
    if x.dim() == 3:
        return 1
    if x.dim() == 4:
        if dim % x.shape[1]:
            raise ValueError(f"{name} has {x.shape[1]} groups, which does not divide dim={dim}")
        return x.shape[1]
    raise ValueError(f"{name} must have 2, 3 or 4 dimensions, got shape {tuple(x.shape)}")


def _channels_last(x: torch.Tensor, groups: int) -> torch.Tensor:
    """A (dim, n) tensor (A or a constant B/C) as (groups, n, dim // groups): channels innermost."""
    dim, dstate = x.shape
    return x.reshape(groups, dim // groups, dstate).transpose(1, 2).contiguous()


def _bc_to_layout(x: torch.Tensor, groups: int) -> torch.Tensor:
    """B or C in the scan's layout: constant (1, 1, G, n, dim // G); input-dependent (batch, L, G, n, 1), each
    of its own groups repeated so that G channel groups share one B/C vector."""
    if x.dim() == 2:
        return _channels_last(x, groups).unsqueeze(0).unsqueeze(0)
    grouped = x.unsqueeze(1) if x.dim() == 3 else x  # (batch, groups_x, n, L)
    sequence_major = grouped.permute(0, 3, 1, 2)  # (batch, L, groups_x, n)
    return sequence_major.repeat_interleave(groups // grouped.shape[1], dim=2).unsqueeze(-1).contiguous()


def _bc_grad_to_input_layout(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of `_bc_to_layout` for a gradient: sums the repeated groups and returns the input's layout."""
    if like.dim() == 2:  # (1, 1, G, n, dim // G)
        return grad[0, 0].transpose(1, 2).reshape(like.shape)
    batch, length, groups, dstate = grad.shape[:4]
    groups_x = 1 if like.dim() == 3 else like.shape[1]
    summed = grad.reshape(batch, length, groups_x, groups // groups_x, dstate).sum(dim=3)
    return summed.permute(0, 2, 3, 1).reshape(like.shape)


def _channels_innermost(x: torch.Tensor) -> torch.Tensor:
    """(batch, dim, L) -> (batch, L, dim) with the channels contiguous; no copy when x already is such a
    tensor transposed, as Mamba's delta, z and output gradient are (they come out of linear layers)."""
    x = x.transpose(1, 2)
    return x if x.stride(-1) == 1 else x.contiguous()


def _split_channels(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(batch, L, dim) -> a (batch, L, G, 1, dim // G) view."""
    return x.unflatten(-1, (groups, 1, x.shape[-1] // groups))


def _rows_step_major(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Batch rows [start, stop) of a (batch, L, ...) tensor as a (L, rows, ...) view: the recurrence indexes
    steps first, and each step's rows keep their contiguous channels."""
    return x[start:stop].transpose(0, 1)


def _softplus_grad(delta_raw: torch.Tensor) -> torch.Tensor:
    # matches F.softplus(beta=1, threshold=20), which is the identity above the threshold
    return torch.where(delta_raw > 20, torch.ones_like(delta_raw), torch.sigmoid(delta_raw))


def _chunk_bounds(length: int) -> list[tuple[int, int]]:
    return [(start, min(start + CHUNK, length)) for start in range(0, length, CHUNK)]


def _row_bounds(batch: int, row_elements: int, device: torch.device) -> list[tuple[int, int]]:
    """Batch rows per slice so that a chunk buffer, (CHUNK, rows, G, n, p), holds about CHUNK_BUFFER_ELEMENTS on
    a CPU (GPU_CHUNK_BUFFER_ELEMENTS elsewhere)."""
    budget = CHUNK_BUFFER_ELEMENTS if device.type == "cpu" else GPU_CHUNK_BUFFER_ELEMENTS
    rows = max(1, min(batch, budget // (CHUNK * row_elements)))
    return [(start, min(start + rows, batch)) for start in range(0, batch, rows)]


class _Coefficient(NamedTuple):
    """B or C in the scan's layout (`_bc_to_layout`), and whether it is the constant (dim, n) kind."""
    value: torch.Tensor
    constant: bool

    def rows(self, start: int, stop: int) -> "_Coefficient":
        return self if self.constant else _Coefficient(_rows_step_major(self.value, start, stop), False)

    def steps(self, start: int, stop: int) -> torch.Tensor:
        return self.value if self.constant else self.value[start:stop]


def _sum_over_n(x: torch.Tensor, coefficient: torch.Tensor, constant: bool, scratch: torch.Tensor) -> torch.Tensor:
    """sum_n x * coefficient: (steps, rows, G, n, p) states or adjoints against a B/C -> (steps, rows, G, 1, p).
    An input-dependent coefficient, (steps, rows, G, n, 1), makes it a (1 x n) @ (n x p) matmul per step and
    row; a constant one, (1, 1, G, n, p), is multiplied into `scratch` and summed."""
    if constant:
        return torch.mul(x, coefficient, out=scratch).sum(dim=-2, keepdim=True)
    return torch.matmul(coefficient.transpose(-1, -2), x)


def _coefficient_grad(x: torch.Tensor, per_channel: torch.Tensor, constant: bool,
                      scratch: torch.Tensor) -> torch.Tensor:
    """The gradient of a B/C from sum_p x * per_channel, x (steps, rows, G, n, p), per_channel
    (steps, rows, G, 1, p): summed over the channels for an input-dependent one (a batched matrix-vector
    product, which is faster as a multiply and a contiguous sum than as bmm), and over steps and rows for a
    constant one."""
    product = torch.mul(x, per_channel, out=scratch)
    return product.sum(dim=(0, 1), keepdim=True) if constant else product.sum(dim=-1, keepdim=True)


class _ChunkBuffers:
    """Buffers of one chunk's size, (CHUNK, rows, G, n, p), allocated once and reused by every chunk and batch
    slice, so that the big per-chunk tensors neither page-fault in fresh memory nor leave the cache."""

    def __init__(self, names: tuple[str, ...], like: torch.Tensor, steps: int, rows: int, state_shape):
        self.state_shape = tuple(state_shape)
        self.flat = {name: like.new_empty(steps * rows * math.prod(state_shape)) for name in names}

    def take(self, name: str, steps: int, rows: int) -> torch.Tensor:
        """A contiguous (steps, rows, G, n, p) view at the start of the buffer."""
        return self.flat[name][:steps * rows * math.prod(self.state_shape)].view(steps, rows, *self.state_shape)


def _chunk_states(delta: torch.Tensor, delta_u: torch.Tensor, A_log2e: torch.Tensor, B: torch.Tensor,
                  h_before: Optional[torch.Tensor], decay: torch.Tensor, states: torch.Tensor) -> None:
    """Fills `decay` = exp(delta A) and `states` = h_t of one chunk, given the state before it (None: zero).
    delta, delta_u: (steps, rows, G, 1, p); A_log2e = A * log2(e): (G, n, p); decay, states: (steps, rows, G,
    n, p). exp(x) is taken as exp2(x * log2(e)): about 3x faster on a CPU, where the exp is a large part of the
    scan, and off by a relative error of about |x| ulp at most."""
    torch.mul(delta, A_log2e, out=decay).exp2_()
    torch.mul(delta_u, B, out=states)
    if h_before is not None:
        states[0].addcmul_(decay[0], h_before)
    for t in range(1, len(states)):  # h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, one fused op per step
        states[t].addcmul_(decay[t], states[t - 1])


def _scan_rows(delta: torch.Tensor, delta_u: torch.Tensor, A_log2e: torch.Tensor, B: _Coefficient,
               C: _Coefficient, y: torch.Tensor, boundary_states: torch.Tensor, buffers: _ChunkBuffers) -> torch.Tensor:
    """The forward scan of one batch slice, chunk by chunk: fills y (L, rows, G, 1, p) and the state before
    every chunk, boundary_states (chunks, rows, G, n, p); returns the last state (a view into `buffers`)."""
    rows = delta.shape[1]
    states = None
    for index, (start, stop) in enumerate(_chunk_bounds(len(delta))):
        h_before = None
        if index > 0:  # a copy: the states buffer is overwritten by this chunk
            h_before = boundary_states[index]
            h_before.copy_(states[-1])
        decay, states = buffers.take("decay", stop - start, rows), buffers.take("states", stop - start, rows)
        _chunk_states(delta[start:stop], delta_u[start:stop], A_log2e, B.steps(start, stop), h_before, decay,
                      states)
        y[start:stop] = _sum_over_n(states, C.steps(start, stop), C.constant,
                                    buffers.take("scratch", stop - start, rows))
    return states[-1]


def _accumulate(total: torch.Tensor, chunk_grad: torch.Tensor, constant: bool, start: int, stop: int) -> None:
    """Stores an input-dependent B/C's gradient of one chunk, or adds a constant one's."""
    if constant:
        total += chunk_grad
    else:
        total[start:stop] = chunk_grad


def _scan_rows_backward(delta: torch.Tensor, delta_u: torch.Tensor, A: torch.Tensor, A_log2e: torch.Tensor,
                        B: _Coefficient, C: _Coefficient, dy: torch.Tensor, boundary_states: torch.Tensor,
                        buffers: _ChunkBuffers, ddelta: torch.Tensor, d_delta_u: torch.Tensor, dA: torch.Tensor,
                        dB: torch.Tensor, dC: torch.Tensor) -> None:
    """The backward of `_scan_rows` for one batch slice, chunks in reverse: recomputes a chunk's states from
    its boundary state and runs the adjoint recurrence. Fills ddelta (the part through exp(delta A)) and
    d_delta_u, (L, rows, G, 1, p), and dB/dC (their rows, or added to for a constant B/C); adds to dA."""
    rows = delta.shape[1]
    carry = None  # exp(delta_s A) * g_s of the chunk after: what g_{s-1} receives from step s
    bounds = _chunk_bounds(len(delta))
    for index in range(len(bounds) - 1, -1, -1):
        start, stop = bounds[index]
        steps = stop - start
        h_before = boundary_states[index] if index > 0 else None
        decay, states = buffers.take("decay", steps, rows), buffers.take("states", steps, rows)
        adjoint, scratch = buffers.take("adjoint", steps, rows), buffers.take("scratch", steps, rows)
        delta_chunk, delta_u_chunk, dy_chunk = delta[start:stop], delta_u[start:stop], dy[start:stop]
        B_chunk, C_chunk = B.steps(start, stop), C.steps(start, stop)
        _chunk_states(delta_chunk, delta_u_chunk, A_log2e, B_chunk, h_before, decay, states)
        _accumulate(dC, _coefficient_grad(states, dy_chunk, C.constant, scratch), C.constant, start, stop)

        # adjoint recurrence: g_t = dL/dh_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}
        torch.mul(dy_chunk, C_chunk, out=adjoint)
        if carry is not None:
            adjoint[-1] += carry
        for t in range(steps - 2, -1, -1):
            adjoint[t].addcmul_(decay[t + 1], adjoint[t + 1])
        carry = decay[0] * adjoint[0]

        # dL/d(delta_t A) = g_t * h_{t-1} * exp(delta_t A), with h_{-1} = 0; built in place of decay
        d_exponent = decay
        d_exponent[1:].mul_(adjoint[1:]).mul_(states[:-1])
        if h_before is None:
            d_exponent[0].zero_()
        else:
            d_exponent[0].mul_(adjoint[0]).mul_(h_before)
        # ... so its part of ddelta_t is sum_n A * d_exponent, and dA = sum over steps and rows of
        # delta_t * d_exponent
        ddelta[start:stop] = torch.mul(d_exponent, A, out=scratch).sum(dim=-2, keepdim=True)
        dA += torch.mul(d_exponent, delta_chunk, out=scratch).sum(dim=(0, 1))

        # the input term delta_t B_t u_t: d(delta_t u_t) = sum_n B_t g_t, dB_t = sum_p delta_t u_t g_t
        d_delta_u[start:stop] = _sum_over_n(adjoint, B_chunk, B.constant, scratch)
        _accumulate(dB, _coefficient_grad(adjoint, delta_u_chunk, B.constant, scratch), B.constant, start, stop)


class _SelectiveScanTorch(torch.autograd.Function):
    """Chunked over L: the forward keeps only the state at each chunk boundary, the backward recomputes a
    chunk's states from it and runs the adjoint recurrence, so memory is O(CHUNK * batch * dim * n). The batch
    is cut into slices whose chunk buffers stay in the cache, and scanned one slice after the other.
    Per-channel tensors are handled as (batch, L, dim), channels innermost, like the states."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, return_last_state: bool):
        if A.is_complex():
            raise NotImplementedError("the pure-PyTorch selective scan supports real A only")
        ctx.input_dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias)]
        compute_dtype = compute_dtype_for(u)
        batch, dim, length = u.shape
        dstate = A.shape[1]
        groups = math.lcm(_groups(B, "B", dim, dstate), _groups(C, "C", dim, dstate))
        with torch.autocast(u.device.type, enabled=False):
            u_c = _channels_innermost(u.to(compute_dtype))
            delta_raw = _channels_innermost(delta.to(compute_dtype))
            if delta_bias is not None:
                delta_raw = delta_raw + delta_bias.to(compute_dtype)
            delta_c = F.softplus(delta_raw) if delta_softplus else delta_raw
            delta_u = delta_c * u_c
            A_l = _channels_last(A.to(compute_dtype), groups)
            B_coef = _Coefficient(_bc_to_layout(B.to(compute_dtype), groups), B.dim() == 2)
            C_coef = _Coefficient(_bc_to_layout(C.to(compute_dtype), groups), C.dim() == 2)

            state_shape = (groups, dstate, dim // groups)
            slices = _row_bounds(batch, math.prod(state_shape), u_c.device)
            boundary_states = u_c.new_empty((len(_chunk_bounds(length)), batch, *state_shape))
            buffers = _ChunkBuffers(("decay", "states", "scratch"), u_c, min(CHUNK, length),
                                    slices[0][1] - slices[0][0], state_shape)
            y = u_c.new_empty((batch, length, dim))
            last_state = u_c.new_empty((batch, *state_shape)) if return_last_state else None
            for rows in slices:
                rows_last_state = _scan_rows(
                    _rows_step_major(_split_channels(delta_c, groups), *rows),
                    _rows_step_major(_split_channels(delta_u, groups), *rows), A_l * LOG2_E, B_coef.rows(*rows),
                    C_coef.rows(*rows), _rows_step_major(_split_channels(y, groups), *rows),
                    boundary_states[:, slice(*rows)], buffers)
                if return_last_state:
                    last_state[slice(*rows)] = rows_last_state
            if D is not None:
                y.addcmul_(u_c, D.to(compute_dtype))
            z_c = None if z is None else _channels_innermost(z.to(compute_dtype))
            out = y if z is None else y * F.silu(z_c)
            if return_last_state:  # (batch, G, n, p) -> (batch, dim, n)
                last_state = last_state.transpose(-1, -2).reshape(batch, dim, dstate)

        ctx.delta_softplus = delta_softplus
        ctx.b_constant, ctx.c_constant = B_coef.constant, C_coef.constant
        ctx.save_for_backward(u_c, delta_raw if delta_softplus else None, delta_c, delta_u, A_l, B, C,
                              B_coef.value, C_coef.value, D, z_c, boundary_states, y if z is not None else None)
        out = out.to(u.dtype).transpose(1, 2)
        if return_last_state:
            ctx.mark_non_differentiable(last_state)
            return out, last_state
        return out

    @staticmethod
    def backward(ctx, dout, *unused_last_state_grad):
        (u_c, delta_raw, delta_c, delta_u, A_l, B, C, B_l, C_l, D, z_c, boundary_states,
         y) = ctx.saved_tensors
        batch = u_c.shape[0]
        groups = A_l.shape[0]
        with torch.autocast(u_c.device.type, enabled=False):
            dout = _channels_innermost(dout.to(u_c.dtype))
            dz = None
            if z_c is not None:
                sig = torch.sigmoid(z_c)
                dz = dout * y * sig * (1 + z_c * (1 - sig))
                dout = dout * z_c * sig
            dD = (dout * u_c).sum(dim=(0, 1)) if D is not None else None
            du = dout * D.to(u_c.dtype) if D is not None else None

            B_coef, C_coef = _Coefficient(B_l, ctx.b_constant), _Coefficient(C_l, ctx.c_constant)
            dA = torch.zeros_like(A_l)
            dB_l = torch.zeros_like(B_l)
            dC_l = torch.zeros_like(C_l)
            ddelta = torch.empty_like(delta_c)
            d_delta_u = torch.empty_like(delta_c)
            state_shape = boundary_states.shape[2:]
            slices = _row_bounds(batch, math.prod(state_shape), u_c.device)
            buffers = _ChunkBuffers(("decay", "states", "adjoint", "scratch"), u_c, min(CHUNK, u_c.shape[1]),
                                    slices[0][1] - slices[0][0], state_shape)
            for rows in slices:
                def of_rows(x: torch.Tensor) -> torch.Tensor:
                    return _rows_step_major(_split_channels(x, groups), *rows)

                _scan_rows_backward(of_rows(delta_c), of_rows(delta_u), A_l, A_l * LOG2_E, B_coef.rows(*rows),
                                    C_coef.rows(*rows), of_rows(dout), boundary_states[:, slice(*rows)], buffers,
                                    of_rows(ddelta), of_rows(d_delta_u), dA,
                                    dB_l if B_coef.constant else _rows_step_major(dB_l, *rows),
                                    dC_l if C_coef.constant else _rows_step_major(dC_l, *rows))

            # delta_u = delta * u: its gradient goes to both factors
            ddelta.addcmul_(d_delta_u, u_c)
            du = d_delta_u.mul_(delta_c) if du is None else du.addcmul_(d_delta_u, delta_c)
            if ctx.delta_softplus:
                ddelta.mul_(_softplus_grad(delta_raw))
            ddelta_bias = ddelta.sum(dim=(0, 1))
            dA = dA.transpose(1, 2).reshape(-1, dA.shape[1])  # (G, n, p) -> (dim, n)

        grads = [du.transpose(1, 2), ddelta.transpose(1, 2), dA, _bc_grad_to_input_layout(dB_l, B),
                 _bc_grad_to_input_layout(dC_l, C), dD, None if dz is None else dz.transpose(1, 2), ddelta_bias]
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
