"""The Mamba mixer, interchangeable with `mamba_ssm.modules.mamba_simple.Mamba`.

Parameter names, shapes and initialisation are upstream's, so a state dict moves both ways: a model trained
on a GPU with the fused kernels predicts on a CPU-only machine and vice versa.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backend import cuda_kernels, resolve_backend, selective_scan
from .mamba_inner_numba import mamba_inner_numba


class Mamba(nn.Module):
    """Selective state-space mixer over (batch, length, d_model) sequences (Gu & Dao, 2023)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank="auto",
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random", dt_scale: float = 1.0,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False,
                 use_fast_path: bool = True, layer_idx=None, device=None, dtype=None):
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(self.expand * self.d_model)
        self.dt_rank = math.ceil(self.d_model / 16) if dt_rank == "auto" else dt_rank
        self.use_fast_path = use_fast_path
        self.layer_idx = layer_idx

        self.in_proj = nn.Linear(self.d_model, self.d_inner * 2, bias=bias, **factory_kwargs)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias, **factory_kwargs)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + self.d_state * 2, bias=False, **factory_kwargs)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory_kwargs)

        # upstream's initialisation: dt_proj keeps the variance, and softplus(dt bias) lies in [dt_min, dt_max]
        dt_init_std = self.dt_rank ** -0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, dt_init_std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -dt_init_std, dt_init_std)
        else:
            raise NotImplementedError(f"dt_init={dt_init!r}")
        dt = torch.exp(torch.rand(self.d_inner, **factory_kwargs) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))
        with torch.no_grad():
            self.dt_proj.bias.copy_(inv_dt)
        self.dt_proj.bias._no_reinit = True

        # S4D real initialisation, kept in float32
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, device=device))
        self.D._no_weight_decay = True

        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=bias, **factory_kwargs)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, length, d_model) -> (batch, length, d_model)."""
        return self._mix(hidden_states, bidirectional=False)

    def forward_bidirectional(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`self(x) + self(x reversed)` reversed back along the length: (batch, length, d_model) -> the same.

        The position-wise in_proj runs once for both directions (a projection commutes with reversing the
        sequence), as does out_proj on the CPU paths (it is linear, so projecting the sum of the directions equals
        summing their projections). With the Numba kernels the reverse direction is read in place (see
        `_numba_forward`); on the other paths both directions go through one batched scan of the sequences and
        their flipped copies."""
        return self._mix(hidden_states, bidirectional=True)

    def _mix(self, hidden_states: torch.Tensor, bidirectional: bool) -> torch.Tensor:
        # under torch.compile the scan is one opaque custom op (it picks its backend when it runs), and the
        # projections and convolution around it are compiled; mamba_ssm's whole-mixer kernel is not traced
        if torch.compiler.is_compiling():
            return self._reference_forward(hidden_states, bidirectional)
        backend = resolve_backend(hidden_states.device)
        if backend == "numba":
            return self._numba_forward(hidden_states, bidirectional)
        if backend == "cuda" and self.use_fast_path:
            fused = cuda_kernels().mamba_inner_fn
            if fused is not None:
                return self._fused_forward(hidden_states, fused, bidirectional)
        return self._reference_forward(hidden_states, bidirectional)

    def _reference_forward(self, hidden_states: torch.Tensor, bidirectional: bool) -> torch.Tensor:
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (batch, 2 * d_inner, L)
        if bidirectional:
            xz = _with_reversed(xz)
        y = self._scan(xz)
        return self._project_out(_sum_directions(y) if bidirectional else y, bidirectional)

    def _project_out(self, y: torch.Tensor, bidirectional: bool) -> torch.Tensor:
        """out_proj of the scan's output, (batch, L, d_inner), or of the sum of both directions' outputs."""
        out = self.out_proj(y)
        if bidirectional and self.out_proj.bias is not None:
            out = out + self.out_proj.bias  # each direction adds the bias
        return out

    def _scan(self, xz: torch.Tensor) -> torch.Tensor:
        """The convolution, the input-dependent scan parameters and the selective scan on in_proj's output:
        (batch, 2 * d_inner, L) -> (batch, L, d_inner), before out_proj."""
        seqlen = xz.shape[-1]
        x, z = xz.chunk(2, dim=1)
        x = self.act(self.conv1d(x)[..., :seqlen])
        x_dbl = self.x_proj(x.transpose(1, 2))  # (batch, L, dt_rank + 2 * d_state)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # the bias is applied inside the scan
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), self.D.float(), z=z,
                           delta_bias=self.dt_proj.bias.float(), delta_softplus=True)
        return y.transpose(1, 2)

    def _numba_forward(self, hidden_states: torch.Tensor, bidirectional: bool) -> torch.Tensor:
        """The CPU path of the Numba kernels (`mamba_inner_numba`: everything between in_proj and out_proj in one
        autograd node), channels last from in_proj to out_proj. The reverse direction is never flipped: its
        convolution reads the sequence backwards and its scan runs from the last step, so both directions' outputs
        are in the sequence's own order and their sum, which the scan kernels accumulate, goes to out_proj as it
        is, with no flip, concatenation or transposed copy on the way."""
        y = mamba_inner_numba(self.in_proj(hidden_states), self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
                              self.dt_proj.weight, self.dt_proj.bias, self.A_log, self.D, 2 if bidirectional else 1)
        return self._project_out(y, bidirectional)

    def _fused_forward(self, hidden_states: torch.Tensor, mamba_inner_fn, bidirectional: bool) -> torch.Tensor:
        # the fused kernel runs in float32: Mamba's recurrence produces NaNs in float16
        with torch.autocast("cuda", enabled=False):
            hidden = hidden_states.float()
            xz = F.linear(hidden, self.in_proj.weight.float(),
                          None if self.in_proj.bias is None else self.in_proj.bias.float()).transpose(1, 2)
            if bidirectional:
                xz = _with_reversed(xz)
            out = mamba_inner_fn(xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight, self.dt_proj.weight,
                                 self.out_proj.weight, self.out_proj.bias, -torch.exp(self.A_log.float()),
                                 None, None, self.D.float(), delta_bias=self.dt_proj.bias.float(),
                                 delta_softplus=True)
            if bidirectional:
                out = _sum_directions(out)
        return out.to(hidden_states.dtype)


def _with_reversed(xz: torch.Tensor) -> torch.Tensor:
    """(batch, channels, L) -> (2 * batch, channels, L): the sequences, then each of them reversed."""
    return torch.cat((xz, xz.flip(-1)), dim=0)


def _sum_directions(y: torch.Tensor) -> torch.Tensor:
    """(2 * batch, L, channels) from `_with_reversed` inputs -> (batch, L, channels): the forward outputs plus
    the reversed ones turned back."""
    forward, backward = y.chunk(2, dim=0)
    return forward + backward.flip(1)
