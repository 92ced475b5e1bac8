"""Chooses the selective-scan backend: mamba_ssm's fused CUDA kernels, the Triton kernels, the Numba CPU kernels or
the pure-PyTorch scan.

`MSVMAMBA_SSM_BACKEND` = `auto` (default: on CUDA tensors mamba_ssm's fused kernels when they import, else the
Triton scan when `triton` imports and the GPU can run it, else the pure-PyTorch scan; on CPU tensors the Numba
kernels when `numba` imports, else the pure-PyTorch scan; on any other device the pure-PyTorch scan), or `torch`,
`numba`, `triton`, `cuda` to force one (a clear error where it cannot run). Under `torch.compile` the scan is an
opaque custom op (`custom_op.py`) that makes the same choice when it runs.
"""
from __future__ import annotations

import functools
import os
import sys
from types import SimpleNamespace
from typing import Optional

import torch

from .selective_scan_numba import selective_scan_numba
from .selective_scan_torch import compute_dtype_for, selective_scan_torch

BACKEND_ENV = "MSVMAMBA_SSM_BACKEND"
BACKENDS = ("auto", "torch", "numba", "triton", "cuda")
# Triton's NVIDIA backend needs Turing or newer; older GPUs get the pure-PyTorch scan
TRITON_MIN_CAPABILITY = (7, 5)


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
                                                       f"install them with the cuda extra: `pip install \".[cuda]\"` "
                                                       f"in a clone of nnunetv2-msvmamba")
    try:
        from causal_conv1d import causal_conv1d_fn  # noqa: F401
        fused_mixer = mamba_inner_fn
    except Exception:
        fused_mixer = None
    return SimpleNamespace(available=True, reason="", selective_scan_fn=selective_scan_fn,
                           mamba_inner_fn=fused_mixer)


def triton_interpreter_on() -> bool:
    """Triton's interpreter (TRITON_INTERPRET=1, read when triton is imported) runs the kernels on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "").strip() == "1"


@functools.lru_cache(maxsize=None)
def triton_support() -> SimpleNamespace:
    """Whether the Triton scan can run on this machine's CUDA device, or `available=False` with the reason."""
    try:
        import triton  # noqa: F401
    except Exception as error:
        return SimpleNamespace(available=False, reason=f"triton does not import ({error!r}); it ships with "
                                                       f"PyTorch's CUDA wheels, or `pip install triton`")
    if not torch.cuda.is_available():
        return SimpleNamespace(available=False, reason="PyTorch sees no CUDA device")
    capability = torch.cuda.get_device_capability()
    if capability < TRITON_MIN_CAPABILITY:
        return SimpleNamespace(available=False, reason=f"the GPU's compute capability {capability[0]}.{capability[1]} "
                                                       f"is below the {TRITON_MIN_CAPABILITY[0]}."
                                                       f"{TRITON_MIN_CAPABILITY[1]} Triton needs")
    return SimpleNamespace(available=True, reason="")


@functools.lru_cache(maxsize=None)
def numba_support() -> SimpleNamespace:
    """Whether the Numba CPU kernels can run (numba imports), or `available=False` with the reason."""
    try:
        import numba  # noqa: F401
    except Exception as error:  # a missing or broken install (numba/numpy mismatch) surfaces as several types
        return SimpleNamespace(available=False, reason=f"numba does not import ({error!r}); "
                                                       f"`pip install numba` for the compiled CPU kernels")
    return SimpleNamespace(available=True, reason="")


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


def _forced_triton(device: torch.device) -> str:
    if device.type == "cpu" and triton_interpreter_on():
        _announce("triton", f"forced by {BACKEND_ENV}=triton, Triton's interpreter on CPU tensors")
        return "triton"
    if device.type != "cuda":
        raise RuntimeError(f"{BACKEND_ENV}=triton, but the tensors are on {device}; the Triton kernels need CUDA "
                           f"tensors (or TRITON_INTERPRET=1 for CPU tensors; unset {BACKEND_ENV} to fall back to the "
                           f"pure-PyTorch scan)")
    support = triton_support()
    if not support.available:
        raise RuntimeError(f"{BACKEND_ENV}=triton, but the Triton backend cannot run: {support.reason}")
    _announce("triton", f"forced by {BACKEND_ENV}=triton")
    return "triton"


def _forced_numba(device: torch.device) -> str:
    if device.type != "cpu":
        raise RuntimeError(f"{BACKEND_ENV}=numba, but the tensors are on {device}; the Numba kernels need CPU "
                           f"tensors (unset {BACKEND_ENV} to let the backend follow the device)")
    support = numba_support()
    if not support.available:
        raise RuntimeError(f"{BACKEND_ENV}=numba, but the Numba backend cannot run: {support.reason}")
    _announce("numba", f"forced by {BACKEND_ENV}=numba")
    return "numba"


def _auto_on_cpu() -> str:
    support = numba_support()
    if support.available:
        _announce("numba", "Numba kernels, CPU tensors")
        return "numba"
    _announce("torch", f"pure PyTorch, CPU tensors: {support.reason}")
    return "torch"


def resolve_backend(device: torch.device) -> str:
    """'cuda', 'triton', 'numba' or 'torch' for tensors on `device`, following MSVMAMBA_SSM_BACKEND; logged once
    per choice."""
    requested = requested_backend()
    if requested == "torch":
        _announce("torch", f"forced by {BACKEND_ENV}=torch")
        return "torch"
    if requested == "triton":
        return _forced_triton(device)
    if requested == "numba":
        return _forced_numba(device)
    kernels = cuda_kernels()
    if requested == "cuda":
        if not kernels.available:
            raise RuntimeError(f"{BACKEND_ENV}=cuda, but the CUDA backend cannot run: {kernels.reason}")
        if device.type != "cuda":
            raise RuntimeError(f"{BACKEND_ENV}=cuda, but the tensors are on {device}; the fused kernels need CUDA "
                               f"tensors (unset {BACKEND_ENV} to fall back to the pure-PyTorch scan)")
        _announce("cuda", f"forced by {BACKEND_ENV}=cuda")
        return "cuda"
    if device.type == "cpu":
        return _auto_on_cpu()
    if device.type != "cuda":
        _announce("torch", "pure PyTorch: tensors not on CUDA")
        return "torch"
    if kernels.available:
        _announce("cuda", "mamba_ssm fused kernels, CUDA tensors")
        return "cuda"
    support = triton_support()
    if support.available:
        _announce("triton", f"Triton kernels, CUDA tensors; mamba_ssm's fused kernels unavailable: {kernels.reason}")
        return "triton"
    _announce("torch", f"pure PyTorch: {kernels.reason}; Triton: {support.reason}")
    return "torch"


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                   return_last_state: bool = False):
    """`mamba_ssm.ops.selective_scan_interface.selective_scan_fn`, on whichever backend fits `u`'s device.
    Runs in float32 (the torch and numba backends: float64 for float64 input) whatever the autocast state. Under
    torch.compile it is one opaque custom op, which chooses the backend when it runs."""
    if torch.compiler.is_compiling():
        from .custom_op import selective_scan_op
        return selective_scan_op(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return selective_scan_eager(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)


def selective_scan_eager(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                         D: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None,
                         delta_bias: Optional[torch.Tensor] = None, delta_softplus: bool = False,
                         return_last_state: bool = False):
    """`selective_scan` outside torch.compile: the backend's autograd function, called directly."""
    backend = resolve_backend(u.device)
    if backend == "torch":
        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "numba":
        return selective_scan_numba(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if backend == "triton":
        from .selective_scan_triton import selective_scan_triton  # imports triton: only where it runs
        return selective_scan_triton(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    dtype = compute_dtype_for(u)
    as_compute = (lambda t: None if t is None else t.to(dtype))
    with torch.autocast("cuda", enabled=False):
        result = cuda_kernels().selective_scan_fn(
            as_compute(u), as_compute(delta), A.float(), as_compute(B), as_compute(C), as_compute(D),
            as_compute(z), as_compute(delta_bias), delta_softplus, return_last_state)
    if return_last_state:
        return result[0].to(u.dtype), result[1]
    return result.to(u.dtype)
