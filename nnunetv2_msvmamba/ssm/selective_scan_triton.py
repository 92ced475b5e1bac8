"""Selective scan as Triton kernels: fast on any NVIDIA GPU that Triton supports, with nothing to compile at
install time (Triton ships with PyTorch's CUDA wheels and compiles the kernels on first use).

Same contract as `selective_scan_torch` (and `mamba_ssm`'s `selective_scan_fn`, real A only):

    u, delta, z: (batch, dim, L)     A: (dim, n)     D, delta_bias: (dim,)
    B, C: (dim, n) constant, (batch, n, L), or (batch, groups, n, L) with dim divisible by groups

Each program owns one batch row and a block of BLOCK_D channels, all of which read the same B/C group; it walks
the L steps in order with the (BLOCK_D, n) states in registers, computing in float32 whatever the input dtype
or autocast state. The forward writes the state at the start of every CHUNK steps (L / CHUNK states per channel,
only when a gradient is needed); the backward walks the chunks in reverse, recomputes a chunk's states from its
checkpoint into a per-program scratch of CHUNK states, and runs the adjoint recurrence

    g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}          (g_t = dL/dh_t)

so memory is O(batch * dim * n * (L / CHUNK + CHUNK)), never (L, n) states per channel. Gradients of the
B/C vectors shared by a group of channels are summed over each program's channels in registers and written per
channel block, then summed over the blocks of a group by PyTorch (deterministic, no atomics).

Tested on the CPU with Triton's interpreter (TRITON_INTERPRET=1, set before triton is imported).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from .selective_scan_torch import _groups

CHUNK = 32  # steps between checkpointed states: memory L / CHUNK + CHUNK states per channel
MAX_BLOCK_D = 32  # channels per program; BLOCK_D x n states live in registers
INT32_OFFSETS = 2 ** 31 - 1  # the kernels index with 32-bit offsets: bigger batches are scanned in slices
LOG2_E = tl.constexpr(math.log2(math.e))  # exp(x) is taken as exp2(x log2(e))
SOFTPLUS_LINEAR_ABOVE = tl.constexpr(20.0)  # torch.nn.functional.softplus's threshold


@triton.jit
def _softplus(x):
    return tl.where(x > SOFTPLUS_LINEAR_ABOVE, x, tl.log(1.0 + tl.exp(tl.minimum(x, SOFTPLUS_LINEAR_ABOVE))))


@triton.jit
def _step_inputs(u_ptr, delta_ptr, bias, offset, channel_mask, t, DELTA_SOFTPLUS: tl.constexpr):
    """u_t, raw delta_t (+ bias) and the delta_t the recurrence uses, (BLOCK_D,) each."""
    u = tl.load(u_ptr + offset + t, mask=channel_mask, other=0.0)
    raw = tl.load(delta_ptr + offset + t, mask=channel_mask, other=0.0) + bias
    delta = _softplus(raw) if DELTA_SOFTPLUS else raw
    return u, raw, delta


@triton.jit
def _coefficient(ptr, row_offset, block_offset, t, state_mask, vector_mask, CONSTANT: tl.constexpr):
    """B or C at step t: the (BLOCK_D, n) constant block, or the group's (1, n) vector."""
    if CONSTANT:  # one return statement: Triton's compiler checks every return's type, even a pruned branch's
        value = tl.load(ptr + block_offset, mask=state_mask, other=0.0)
    else:
        value = tl.load(ptr + row_offset + t, mask=vector_mask, other=0.0)
    return value


@triton.jit
def _block(dim, n, L, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """This program's batch row, channels and states with their masks, and its offsets into (dim, n) tensors and
    (batch, dim, L) ones (+ t)."""
    batch_row = tl.program_id(0)
    channels = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    states = tl.arange(0, BLOCK_N)
    channel_mask = channels < dim
    row_mask = (states < n)[None, :]
    state_mask = channel_mask[:, None] & row_mask
    per_channel_state = channels[:, None] * n + states[None, :]
    sequence_offset = (batch_row * dim + channels) * L
    return batch_row, channels, states, channel_mask, row_mask, state_mask, per_channel_state, sequence_offset


@triton.jit
def _channel_parameters(A_ptr, D_ptr, bias_ptr, channels, channel_mask, per_channel_state, state_mask,
                        HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr):
    """A (BLOCK_D, n), D and delta_bias (BLOCK_D,) of this block's channels (0 where absent)."""
    A = tl.load(A_ptr + per_channel_state, mask=state_mask, other=0.0)
    D = tl.load(D_ptr + channels, mask=channel_mask, other=0.0) if HAS_D else 0.0
    bias = tl.load(bias_ptr + channels, mask=channel_mask, other=0.0) if HAS_BIAS else 0.0
    return A, D, bias


@triton.jit
def _coefficient_row(batch_row, groups, channels_per_group, n, L, states, BLOCK_D: tl.constexpr):
    """Offset of the (1, n) B/C vector of the group that this block's channels read, at step 0 (+ t): a block
    never spans two groups."""
    return (batch_row * groups + tl.program_id(1) * BLOCK_D // channels_per_group) * n * L + states[None, :] * L


@triton.jit
def _selective_scan_forward_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr,
        out_ptr, last_state_ptr, checkpoint_ptr,
        dim, L, n, b_channels_per_group, c_channels_per_group, b_groups, c_groups,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr,
        B_CONSTANT: tl.constexpr, C_CONSTANT: tl.constexpr, SAVE_CHECKPOINTS: tl.constexpr,
        CHUNK_STEPS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    batch_row, channels, states, channel_mask, row_mask, state_mask, per_channel_state, sequence_offset = _block(
        dim, n, L, BLOCK_D, BLOCK_N)
    A, D, bias = _channel_parameters(A_ptr, D_ptr, bias_ptr, channels, channel_mask, per_channel_state, state_mask,
                                     HAS_D, HAS_BIAS)
    A = A * LOG2_E
    b_row = _coefficient_row(batch_row, b_groups, b_channels_per_group, n, L, states, BLOCK_D)
    c_row = _coefficient_row(batch_row, c_groups, c_channels_per_group, n, L, states, BLOCK_D)

    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    n_chunks = tl.cdiv(L, CHUNK_STEPS)
    for chunk in range(0, n_chunks):
        if SAVE_CHECKPOINTS:  # the state before the chunk, (batch, chunks, dim, n)
            tl.store(checkpoint_ptr + (batch_row * n_chunks + chunk) * dim * n + per_channel_state, h,
                     mask=state_mask)
        start = chunk * CHUNK_STEPS
        for t in range(start, tl.minimum(start + CHUNK_STEPS, L)):
            u, raw, delta = _step_inputs(u_ptr, delta_ptr, bias, sequence_offset, channel_mask, t, DELTA_SOFTPLUS)
            B = _coefficient(B_ptr, b_row, per_channel_state, t, state_mask, row_mask, B_CONSTANT)
            C = _coefficient(C_ptr, c_row, per_channel_state, t, state_mask, row_mask, C_CONSTANT)
            h = tl.exp2(delta[:, None] * A) * h + (delta * u)[:, None] * B
            y = tl.sum(h * C, axis=1)
            if HAS_D:
                y += D * u
            if HAS_Z:
                z = tl.load(z_ptr + sequence_offset + t, mask=channel_mask, other=0.0)
                y = y * z * tl.sigmoid(z)
            tl.store(out_ptr + sequence_offset + t, y, mask=channel_mask)
    tl.store(last_state_ptr + batch_row * dim * n + per_channel_state, h, mask=state_mask)


@triton.jit
def _selective_scan_backward_kernel(
        u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, dout_ptr, checkpoint_ptr, scratch_ptr,
        du_ptr, ddelta_ptr, dz_ptr, dA_ptr, dB_ptr, dC_ptr, dD_ptr, dbias_ptr,
        dim, L, n, b_channels_per_group, c_channels_per_group, b_groups, c_groups,
        HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, DELTA_SOFTPLUS: tl.constexpr,
        B_CONSTANT: tl.constexpr, C_CONSTANT: tl.constexpr,
        CHUNK_STEPS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Per batch row: du, ddelta, dz (batch, dim, L); dA, dD, ddelta_bias and a constant dB/dC for this row (summed
    over rows by the caller); an input-dependent dB/dC per channel block, (batch, blocks, n, L)."""
    batch_row, channels, states, channel_mask, row_mask, state_mask, per_channel_state, sequence_offset = _block(
        dim, n, L, BLOCK_D, BLOCK_N)
    channel_block = tl.program_id(1)
    n_blocks = tl.num_programs(1)
    row_state_offset = batch_row * dim * n + per_channel_state  # into (batch, dim, n) partial sums
    block_vector_offset = (batch_row * n_blocks + channel_block) * n * L + states * L  # (batch, blocks, n, L)
    vector_mask = states < n
    scratch_offset = ((batch_row * n_blocks + channel_block) * CHUNK_STEPS * BLOCK_D
                      + tl.arange(0, BLOCK_D)[:, None]) * BLOCK_N + states[None, :]

    A_natural, D, bias = _channel_parameters(A_ptr, D_ptr, bias_ptr, channels, channel_mask, per_channel_state,
                                             state_mask, HAS_D, HAS_BIAS)
    A = A_natural * LOG2_E
    b_row = _coefficient_row(batch_row, b_groups, b_channels_per_group, n, L, states, BLOCK_D)
    c_row = _coefficient_row(batch_row, c_groups, c_channels_per_group, n, L, states, BLOCK_D)

    dA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dB_constant = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dC_constant = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD = tl.zeros([BLOCK_D], dtype=tl.float32)
    dbias = tl.zeros([BLOCK_D], dtype=tl.float32)
    carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # exp(delta_{t+1} A) g_{t+1}
    n_chunks = tl.cdiv(L, CHUNK_STEPS)
    for reverse_chunk in range(0, n_chunks):
        chunk = n_chunks - 1 - reverse_chunk
        start = chunk * CHUNK_STEPS
        stop = tl.minimum(start + CHUNK_STEPS, L)
        h_before = tl.load(checkpoint_ptr + (batch_row * n_chunks + chunk) * dim * n + per_channel_state,
                           mask=state_mask, other=0.0)
        # recompute the chunk's states into this program's scratch
        h = h_before
        for t in range(start, stop):
            u, raw, delta = _step_inputs(u_ptr, delta_ptr, bias, sequence_offset, channel_mask, t, DELTA_SOFTPLUS)
            B = _coefficient(B_ptr, b_row, per_channel_state, t, state_mask, row_mask, B_CONSTANT)
            h = tl.exp2(delta[:, None] * A) * h + (delta * u)[:, None] * B
            tl.store(scratch_ptr + scratch_offset + (t - start) * BLOCK_D * BLOCK_N, h)
        tl.debug_barrier()
        for step in range(0, stop - start):
            t = stop - 1 - step
            u, raw, delta = _step_inputs(u_ptr, delta_ptr, bias, sequence_offset, channel_mask, t, DELTA_SOFTPLUS)
            B = _coefficient(B_ptr, b_row, per_channel_state, t, state_mask, row_mask, B_CONSTANT)
            C = _coefficient(C_ptr, c_row, per_channel_state, t, state_mask, row_mask, C_CONSTANT)
            h = tl.load(scratch_ptr + scratch_offset + (t - start) * BLOCK_D * BLOCK_N)
            h_previous = tl.load(scratch_ptr + scratch_offset + tl.maximum(t - start - 1, 0) * BLOCK_D * BLOCK_N)
            h_previous = tl.where(t > start, h_previous, h_before)
            dy = tl.load(dout_ptr + sequence_offset + t, mask=channel_mask, other=0.0)
            if HAS_Z:  # out = y * z * sigmoid(z)
                z = tl.load(z_ptr + sequence_offset + t, mask=channel_mask, other=0.0)
                y = tl.sum(h * C, axis=1)
                if HAS_D:
                    y += D * u
                sigmoid_z = tl.sigmoid(z)
                tl.store(dz_ptr + sequence_offset + t, dy * y * sigmoid_z * (1.0 + z * (1.0 - sigmoid_z)),
                         mask=channel_mask)
                dy = dy * z * sigmoid_z
            du = dy * D if HAS_D else tl.zeros([BLOCK_D], dtype=tl.float32)
            if HAS_D:
                dD += dy * u
            # y_t = <C_t, h_t>: dC_t = h_t dy_t, and the adjoint of h_t
            dC = h * dy[:, None]
            g = carry + C * dy[:, None]
            decay = tl.exp2(delta[:, None] * A)
            # through exp(delta_t A): d(delta_t A) = g_t h_{t-1} exp(delta_t A)
            d_exponent = g * h_previous * decay
            ddelta = tl.sum(d_exponent * A_natural, axis=1)
            dA += d_exponent * delta[:, None]
            # through delta_t u_t B_t
            d_delta_u = tl.sum(g * B, axis=1)
            dB = g * (delta * u)[:, None]
            ddelta += d_delta_u * u
            du += d_delta_u * delta
            if DELTA_SOFTPLUS:
                ddelta = ddelta * tl.where(raw > SOFTPLUS_LINEAR_ABOVE, 1.0, tl.sigmoid(raw))
            dbias += ddelta
            if B_CONSTANT:
                dB_constant += dB
            else:
                tl.store(dB_ptr + block_vector_offset + t, tl.sum(tl.where(state_mask, dB, 0.0), axis=0),
                         mask=vector_mask)
            if C_CONSTANT:
                dC_constant += dC
            else:
                tl.store(dC_ptr + block_vector_offset + t, tl.sum(tl.where(state_mask, dC, 0.0), axis=0),
                         mask=vector_mask)
            tl.store(du_ptr + sequence_offset + t, du, mask=channel_mask)
            tl.store(ddelta_ptr + sequence_offset + t, ddelta, mask=channel_mask)
            carry = decay * g
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(dA_ptr + row_state_offset, dA, mask=state_mask)
    if B_CONSTANT:
        tl.store(dB_ptr + row_state_offset, dB_constant, mask=state_mask)
    if C_CONSTANT:
        tl.store(dC_ptr + row_state_offset, dC_constant, mask=state_mask)
    if HAS_D:
        tl.store(dD_ptr + batch_row * dim + channels, dD, mask=channel_mask)
    if HAS_BIAS:
        tl.store(dbias_ptr + batch_row * dim + channels, dbias, mask=channel_mask)


def _as_grouped(x: torch.Tensor) -> torch.Tensor:
    """B or C as float32 contiguous: constant (dim, n) kept, (batch, n, L) as one group (batch, 1, n, L)."""
    x = x.float()
    return (x.unsqueeze(1) if x.dim() == 3 else x).contiguous()


def _block_channels(dim: int, grouped_channels: list[int]) -> int:
    """Channels per program: a power of two, at most MAX_BLOCK_D, dividing the channels of every group (so a
    block reads one B/C vector); any size with one group, the last block masked."""
    block = min(MAX_BLOCK_D, triton.next_power_of_2(dim))
    for channels in grouped_channels:
        block = math.gcd(block, channels & -channels)  # largest power of two dividing `channels`
    return block


class _Launch:
    """What the two kernels share: shapes, flags, grid and the float32 contiguous inputs."""

    def __init__(self, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool):
        self.batch, self.dim, self.length = u.shape
        self.dstate = A.shape[1]
        b_groups, c_groups = _groups(B, "B", self.dim, self.dstate), _groups(C, "C", self.dim, self.dstate)
        self.b_constant, self.c_constant = B.dim() == 2, C.dim() == 2
        self.b_groups, self.c_groups = b_groups, c_groups
        self.block_d = _block_channels(self.dim, [self.dim // g for g, constant in
                                                  ((b_groups, self.b_constant), (c_groups, self.c_constant))
                                                  if g > 1 and not constant])
        self.block_n = max(triton.next_power_of_2(self.dstate), 2)
        self.n_blocks = triton.cdiv(self.dim, self.block_d)
        self.grid = (self.batch, self.n_blocks)
        self.n_chunks = triton.cdiv(self.length, CHUNK)

        def prepared(t):
            return None if t is None else t.float().contiguous()
        self.u, self.delta, self.z = prepared(u), prepared(delta), prepared(z)
        self.A, self.D, self.delta_bias = prepared(A), prepared(D), prepared(delta_bias)
        self.B, self.C = _as_grouped(B), _as_grouped(C)
        self.flags = dict(HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
                          DELTA_SOFTPLUS=bool(delta_softplus), B_CONSTANT=self.b_constant,
                          C_CONSTANT=self.c_constant, CHUNK_STEPS=CHUNK, BLOCK_D=self.block_d,
                          BLOCK_N=self.block_n)

    def shape_arguments(self) -> tuple:
        return (self.dim, self.length, self.dstate, self.dim // self.b_groups, self.dim // self.c_groups,
                self.b_groups, self.c_groups)

    def inputs(self) -> tuple:
        placeholder = self.u  # never read: the kernel's flag says the tensor is absent
        return (self.u, self.delta, self.A, self.B, self.C, placeholder if self.D is None else self.D,
                placeholder if self.z is None else self.z,
                placeholder if self.delta_bias is None else self.delta_bias)

    def forward(self, save_checkpoints: bool):
        out = torch.empty_like(self.u)
        last_state = self.u.new_empty(self.batch, self.dim, self.dstate)
        checkpoints = self.u.new_empty((self.batch, self.n_chunks, self.dim, self.dstate) if save_checkpoints
                                       else (1,))
        _selective_scan_forward_kernel[self.grid](*self.inputs(), out, last_state, checkpoints,
                                                  *self.shape_arguments(), SAVE_CHECKPOINTS=save_checkpoints,
                                                  **self.flags)
        return out, last_state, checkpoints

    def backward(self, dout: torch.Tensor, checkpoints: torch.Tensor) -> list[Optional[torch.Tensor]]:
        """Gradients of (u, delta, A, B, C, D, z, delta_bias) in float32, None for an absent input."""
        batch, dim, dstate = self.batch, self.dim, self.dstate
        dout = dout.float().contiguous()
        scratch = self.u.new_empty(batch * self.n_blocks * CHUNK * self.block_d * self.block_n)
        du, ddelta = torch.empty_like(self.u), torch.empty_like(self.u)
        dz = torch.empty_like(self.u) if self.z is not None else None
        dA = self.u.new_empty(batch, dim, dstate)
        row_partials = self.u.new_empty(batch, dim)

        def coefficient_partials(constant: bool) -> torch.Tensor:
            return self.u.new_empty((batch, dim, dstate) if constant else
                                    (batch, self.n_blocks, dstate, self.length))
        dB, dC = coefficient_partials(self.b_constant), coefficient_partials(self.c_constant)
        dD = row_partials if self.D is not None else None
        dbias = torch.empty_like(row_partials) if self.delta_bias is not None else None
        _selective_scan_backward_kernel[self.grid](
            *self.inputs(), dout, checkpoints, scratch, du, ddelta, du if dz is None else dz, dA, dB, dC,
            du if dD is None else dD, du if dbias is None else dbias, *self.shape_arguments(), **self.flags)
        return [du, ddelta, dA.sum(0), self._coefficient_grad(dB, self.b_constant, self.b_groups),
                self._coefficient_grad(dC, self.c_constant, self.c_groups),
                None if dD is None else dD.sum(0), dz, None if dbias is None else dbias.sum(0)]

    def _coefficient_grad(self, partial: torch.Tensor, constant: bool, groups: int) -> torch.Tensor:
        """(batch, G, n, L) from the per-block sums: the blocks of a group are consecutive."""
        if constant:
            return partial.sum(0)
        return partial.reshape(self.batch, groups, self.n_blocks // groups, self.dstate, self.length).sum(2)


class _SelectiveScanTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, return_last_state: bool):
        if A.is_complex():
            raise NotImplementedError("the Triton selective scan supports real A only")
        ctx.input_dtypes = [None if t is None else t.dtype for t in (u, delta, A, B, C, D, z, delta_bias)]
        ctx.b_shape, ctx.c_shape = B.shape, C.shape
        with torch.autocast(u.device.type, enabled=False):
            launch = _Launch(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
            save = any(ctx.needs_input_grad[:8])  # forward runs without grad mode; this says who needs one
            out, last_state, checkpoints = launch.forward(save_checkpoints=save)
        ctx.launch = launch if save else None
        if save:  # the launch holds the float32 inputs; keep them alive only through ctx
            ctx.save_for_backward(checkpoints)
        out = out.to(u.dtype)
        if return_last_state:
            ctx.mark_non_differentiable(last_state)
            return out, last_state
        return out

    @staticmethod
    def backward(ctx, dout, *unused_last_state_grad):
        (checkpoints,) = ctx.saved_tensors
        with torch.autocast(dout.device.type, enabled=False):
            grads = ctx.launch.backward(dout, checkpoints)
        grads[3], grads[4] = grads[3].reshape(ctx.b_shape), grads[4].reshape(ctx.c_shape)
        grads = [None if g is None else g.to(dtype) for g, dtype in zip(grads, ctx.input_dtypes)]
        return (*grads, None, None)


def selective_scan_triton(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                          C: torch.Tensor, D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                          delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                          return_last_state: bool = False):
    """Selective scan on CUDA tensors (CPU tensors under TRITON_INTERPRET=1); returns `out` or
    `(out, last_state)` like `selective_scan_torch`. Computes in float32; `out` and the gradients come back in
    the input dtypes, `last_state` in float32; no gradient flows through `last_state`."""
    rows = _rows_per_launch(u, A, B, C)
    if rows >= u.shape[0]:
        return _SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    def rows_of(x: Optional[torch.Tensor], start: int) -> Optional[torch.Tensor]:
        per_row = x is not None and x.dim() > 2  # constant B/C, A, D and delta_bias are shared by every row
        return x[start:start + rows] if per_row else x
    parts = [_SelectiveScanTriton.apply(*(rows_of(x, start) for x in (u, delta, A, B, C, D, z, delta_bias)),
                                        delta_softplus, True) for start in range(0, u.shape[0], rows)]
    out = torch.cat([part[0] for part in parts])
    return (out, torch.cat([part[1] for part in parts])) if return_last_state else out


def _elements_per_row(u: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> int:
    """Elements of one batch row in the largest tensor a launch indexes: the inputs, B/C, the checkpoints or the
    backward's scratch (whose channel blocks are padded, at most to MAX_BLOCK_D)."""
    _, dim, length = u.shape
    dstate = A.shape[1]
    scratch = triton.cdiv(dim, MAX_BLOCK_D) * MAX_BLOCK_D * triton.next_power_of_2(max(dstate, 2)) * CHUNK
    return max(dim * length, scratch, triton.cdiv(length, CHUNK) * dim * dstate,
               *(x[0].numel() for x in (B, C) if x.dim() > 2))


def _rows_per_launch(u: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor) -> int:
    """Batch rows per launch, so that every offset fits in 32 bits."""
    return max(1, INT32_OFFSETS // _elements_per_row(u, A, B, C))
