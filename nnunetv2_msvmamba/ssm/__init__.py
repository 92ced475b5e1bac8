"""Selective-scan backends and the Mamba mixer. Depends on PyTorch only (no nnU-Net imports)."""
from .backend import BACKEND_ENV, resolve_backend, selective_scan
from .mamba import Mamba
from .selective_scan_torch import selective_scan_torch

__all__ = ["BACKEND_ENV", "Mamba", "resolve_backend", "selective_scan", "selective_scan_torch"]
