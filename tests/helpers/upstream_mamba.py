"""Reaches upstream `mamba_ssm` (2.3.2.post1) on a machine without its CUDA build, for the parity tests only.

`mamba_ssm.ops.selective_scan_interface` does `import selective_scan_cuda` (its compiled extension) at import
time, although `selective_scan_ref` and `mamba_simple.Mamba`'s non-fused path never call it. A placeholder
module of that name stands in while upstream imports and is removed right after, so that nothing else (the
package's own backend detection in particular) ever sees it. This lives in tests/, never in the package.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types

PLACEHOLDER = "selective_scan_cuda"


@functools.lru_cache(maxsize=None)
def _import_upstream() -> tuple[types.ModuleType, types.ModuleType]:
    inserted = False
    if PLACEHOLDER not in sys.modules and importlib.util.find_spec(PLACEHOLDER) is None:
        sys.modules[PLACEHOLDER] = types.ModuleType(PLACEHOLDER)
        inserted = True
    try:
        interface = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
        mamba_simple = importlib.import_module("mamba_ssm.modules.mamba_simple")
    finally:
        if inserted:
            del sys.modules[PLACEHOLDER]
    return interface, mamba_simple


def selective_scan_interface() -> types.ModuleType:
    """`mamba_ssm.ops.selective_scan_interface` (holds `selective_scan_ref`)."""
    return _import_upstream()[0]


def mamba_simple() -> types.ModuleType:
    """`mamba_ssm.modules.mamba_simple` (holds upstream's `Mamba`)."""
    return _import_upstream()[1]
