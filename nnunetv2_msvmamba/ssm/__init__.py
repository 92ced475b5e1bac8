"""Selective-scan backends and the Mamba mixer. Depends on PyTorch only (no nnU-Net imports); the Triton scan
(`selective_scan_triton`) is imported where it runs, as it needs `triton`, and the Numba scan imports `numba` (and
compiles its kernels, or loads them from Numba's cache) on its first call."""
from . import custom_op  # noqa: F401  (registers msvmamba::selective_scan, which torch.compile'd code calls)
from ._recycled_memory import release_recycled_memory
from .backend import BACKEND_ENV, resolve_backend, selective_scan
from .mamba import Mamba
from .selective_scan_numba import selective_scan_numba
from .selective_scan_ref import selective_scan_ref
from .selective_scan_torch import selective_scan_torch

__all__ = ["BACKEND_ENV", "Mamba", "release_recycled_memory", "resolve_backend", "selective_scan",
           "selective_scan_numba", "selective_scan_ref", "selective_scan_torch"]
