"""Shared fixtures: nnU-Net folders in a temporary directory, and the installed command-line tools."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from nnunetv2_msvmamba.common.commands import BIN, command_path  # noqa: F401  (BIN: for the tests that use it)
# Triton kernels run on CPU tensors under Triton's interpreter, which triton reads once, when it is imported
os.environ.setdefault("TRITON_INTERPRET", "1")


@dataclass
class NnUNetFolders:
    raw: Path
    preprocessed: Path
    results: Path

    def env(self, **extra: str) -> dict[str, str]:
        """The process environment for a subprocess that uses these folders. (nnUNet_n_proc_DA=0, data
        augmentation in the main process, suits training but breaks planning: pass it only to training.)"""
        env = dict(os.environ)
        env.update(nnUNet_raw=str(self.raw), nnUNet_preprocessed=str(self.preprocessed),
                   nnUNet_results=str(self.results), nnUNet_def_n_proc="1")
        env.update(extra)
        return env

    @classmethod
    def make(cls, root: Path) -> "NnUNetFolders":
        """Empty raw, preprocessed and results folders under `root`."""
        folders = cls(root / "raw", root / "preprocessed", root / "results")
        for path in (folders.raw, folders.preprocessed, folders.results):
            path.mkdir(parents=True)
        return folders


@pytest.fixture
def nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> NnUNetFolders:
    """Empty nnUNet_raw / nnUNet_preprocessed / nnUNet_results, also set in this process's environment."""
    folders = NnUNetFolders(tmp_path / "nnUNet_raw", tmp_path / "nnUNet_preprocessed", tmp_path / "nnUNet_results")
    for name, path in (("nnUNet_raw", folders.raw), ("nnUNet_preprocessed", folders.preprocessed),
                       ("nnUNet_results", folders.results)):
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    return folders


def run_command(args: list[str], env: dict[str, str] | None = None, check: bool = True,
                timeout: float = 1800, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs an installed console command (looked up beside this Python) and captures its output.
    On an unexpected exit status the assertion message carries the command's output."""
    command = [command_path(args[0]), *args[1:]]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if check:
        assert result.returncode == 0, (
            f"{' '.join(command)} exited {result.returncode}\n--- stdout ---\n{result.stdout[-6000:]}"
            f"\n--- stderr ---\n{result.stderr[-6000:]}")
    return result
