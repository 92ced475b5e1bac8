"""Fixtures for every test, Triton's interpreter for the CPU, the `e2e` mark for every test under tests/e2e/, and
the order the suite starts its files in. What tests share besides fixtures lives in tests/helpers/."""
from __future__ import annotations

import os
from pathlib import Path

# Set before anything loads PyTorch's OpenMP runtime, which reads it once; its subprocesses (nnU-Net's commands, the
# demo) inherit it. Two test workers share 2 cores: OpenMP threads that spin while waiting take the core from the
# other worker's threads (two MSV-Mamba trainings side by side took 3.7x-5.8x one alone; letting them sleep, 1.7x).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Triton kernels run on CPU tensors under Triton's interpreter, which triton reads once, when it is imported
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from helpers.nnunet import NnUNetFolders
from helpers.recycled_memory import PoisonedMemory
from helpers.toy_models import shared_learned_toy_model

END_TO_END = Path(__file__).resolve().parent / "e2e"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test is end-to-end (marked `e2e`, deselected by `-m "not e2e"`) because its file is under tests/e2e/.
    The longest files come first: `starts_first`, then end-to-end, then unit tests (README's command keeps this
    order with `--no-loadscope-reorder`), so that one worker runs the longest file while the other takes the rest,
    and the short unit tests fill the end, instead of the longest file starting last."""
    for item in items:
        if item.path.is_relative_to(END_TO_END):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=start_rank)  # stable: the collection order within each rank


def start_rank(item: pytest.Item) -> int:
    if item.get_closest_marker("starts_first"):
        return 0
    return 1 if item.get_closest_marker("e2e") else 2


@pytest.fixture(autouse=True)
def poisoned_kernel_outputs(monkeypatch: pytest.MonkeyPatch) -> PoisonedMemory:
    """Every Numba kernel output of the test's own process in recycled memory filled with NaN first, whatever its size
    (helpers/recycled_memory.py): an element a kernel leaves unwritten, or reads before writing, shows."""
    import nnunetv2_msvmamba.ssm._recycled_memory as recycled_memory_module
    pool = PoisonedMemory()
    monkeypatch.setattr(recycled_memory_module, "recycled_memory", pool)
    return pool


@pytest.fixture
def nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NnUNetFolders:
    """Empty nnUNet_raw / nnUNet_preprocessed / nnUNet_results, also set in this process's environment."""
    folders = NnUNetFolders(tmp_path / "nnUNet_raw", tmp_path / "nnUNet_preprocessed", tmp_path / "nnUNet_results")
    for name, path in (("nnUNet_raw", folders.raw), ("nnUNet_preprocessed", folders.preprocessed),
                       ("nnUNet_results", folders.results)):
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    return folders


@pytest.fixture(scope="session")
def learned_toy_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results folder of a 2D MSV-Mamba model that has learned the toy dataset, trained once per test run
    (tests/helpers/toy_models.py); read it, or copy it before changing it."""
    return shared_learned_toy_model(tmp_path_factory)
