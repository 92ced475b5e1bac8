"""The benchmark scripts (benchmarks/*.py) as modules, for tests that call their functions in-process."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from helpers.paths import REPOSITORY

BENCHMARKS = REPOSITORY / "benchmarks"


def load_benchmark(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """benchmarks/<name>.py imported as a script runs (its folder first on sys.path, for benchmarks/measure.py)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
