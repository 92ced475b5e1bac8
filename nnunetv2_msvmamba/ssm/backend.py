"""Chooses between mamba_ssm's fused CUDA kernels and the pure-PyTorch scan.

`MSVMAMBA_SSM_BACKEND` = `auto` (default: the CUDA kernels for CUDA tensors when `mamba_ssm` imports, the
pure-PyTorch scan otherwise), `torch` or `cuda` (an error where the kernels cannot run).
"""
from __future__ import annotations

import functools
import os
import sys
from types import SimpleNamespace
from typing import Optional

import torch

from .selective_scan_torch import selective_scan_torch

BACKEND_ENV = "MSVMAMBA_SSM_BACKEND"
BACKENDS = ("auto", "torch", "cuda")


@functools.lru_cache(maxsize=None)
def cuda_kernels() -> SimpleNamespace:
    """mamba_ssm's fused functions, or `available=False` with the reason they cannot be used."""
    if not torch.cuda.is_available():
        return SimpleNamespace(available=False, reason="PyTorch sees no CUDA device")
    try:
        import selective_scan_cuda  # noqa: F401  (compiled extension of mamba_ssm)
        from mamba_ssm.ops.selective_scan_interface import mamba_inner_fn, selective_scan_fn
    except Exception as error:  # a missing or broken build surfaces as several exception types
        return SimpleNamespace(available=False, reason=f"mamba_ssm's CUDA kernels do not import ({error!r}); "
                                                       f"install them with `pip install nnunetv2-msvmamba[cuda]`")
    try:
        from causal_conv1d import causal_conv1d_fn  # noqa: F401
        fused_mixer = mamba_inner_fn
    except Exception:
        fused_mixer = None
    return SimpleNamespace(available=True, reason="", selective_scan_fn=selective_scan_fn,
                           mamba_inner_fn=fused_mixer)


def requested_backend() -> str:
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={os.environ[BACKEND_ENV]!r} is not one of {', '.join(BACKENDS)}")
    return value


_announced: set = set()


def _announce(backend: str, why: str) -> None:
    if backend not in _announced:
        _announced.add(backend)
        print(f"[nnunetv2_msvmamba] selective scan backend: {backend} ({why})", file=sys.stderr, flush=True)


def resolve_backend(device: torch.device) -> str:
    """'cuda' or 'torch' for tensors on `device`, following MSVMAMBA_SSM_BACKEND; logged once per choice."""
    requested = requested_backend()
    if requested == "torch":
        _announce("torch", f"forced by {BACKEND_ENV}=torch")
        return "torch"
    kernels = cuda_kernels()
    if requested == "cuda":
        if not kernels.available:
            raise RuntimeError(f"{BACKEND_ENV}=cuda, but the CUDA backend cannot run: {kernels.reason}")
        if device.type != "cuda":
            raise RuntimeError(f"{BACKEND_ENV}=cuda, but the tensors are on {device}; the fused kernels need CUDA "
                               f"tensors (unset {BACKEND_ENV} to fall back to the pure-PyTorch scan)")
        _announce("cuda", f"forced by {BACKEND_ENV}=cuda")
        return "cuda"
    if device.type == "cuda" and kernels.available:
        _announce("cuda", "mamba_ssm fused kernels, CUDA tensors")
        return "cuda"
    _announce("torch", "pure PyTorch: " + ("tensors not on CUDA" if device.type != "cuda" else kernels.reason))
    return "torch"


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                   return_last_state: bool = False):
    """`mamba_ssm.ops.selective_scan_interface.selective_scan_fn`, on whichever backend fits `u`'s device.
    Runs in float32 (float64 for float64 input) whatever the autocast state."""
    if resolve_backend(u.device) == "torch":
        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    as_compute = (lambda t: None if t is None else t.to(dtype))
    with torch.autocast("cuda", enabled=False):
        result = cuda_kernels().selective_scan_fn(
            as_compute(u), as_compute(delta), A.float(), as_compute(B), as_compute(C), as_compute(D),
            as_compute(z), as_compute(delta_bias), delta_softplus, return_last_state)
    if return_last_state:
        return result[0].to(u.dtype), result[1]
    return result.to(u.dtype)
