"""Fixtures for every test, Triton's interpreter for the CPU, and the `e2e` mark for every test under tests/e2e/.
What tests share besides fixtures lives in tests/helpers/."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.nnunet import NnUNetFolders

# Triton kernels run on CPU tensors under Triton's interpreter, which triton reads once, when it is imported
os.environ.setdefault("TRITON_INTERPRET", "1")

END_TO_END = Path(__file__).resolve().parent / "e2e"
# The default demo takes about 20 minutes on one worker. pytest-xdist's `--dist loadfile` hands files out in
# collection order (pyproject.toml turns off its reordering by test count, which put the one-test files last), so
# collected first it starts at once beside the rest of the suite, and the other end-to-end files, the next
# longest, follow before the unit tests. In its alphabetical place it started 23 min into a 47 min run.
STARTS_FIRST = END_TO_END / "test_demo_full.py"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test is end-to-end (marked `e2e`, deselected by `-m "not e2e"`) because its file is under tests/e2e/.
    The longest file comes first (STARTS_FIRST), then the end-to-end tests, then the unit tests."""
    for item in items:
        if item.path.is_relative_to(END_TO_END):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: (item.path != STARTS_FIRST, not item.path.is_relative_to(END_TO_END)))  # stable


@pytest.fixture
def nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NnUNetFolders:
    """Empty nnUNet_raw / nnUNet_preprocessed / nnUNet_results, also set in this process's environment."""
    folders = NnUNetFolders(tmp_path / "nnUNet_raw", tmp_path / "nnUNet_preprocessed", tmp_path / "nnUNet_results")
    for name, path in (("nnUNet_raw", folders.raw), ("nnUNet_preprocessed", folders.preprocessed),
                       ("nnUNet_results", folders.results)):
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    return folders
