"""nnU-Net's folders in a temporary directory, and the installed command-line tools run in a subprocess."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_msvmamba.common.commands import command_path


@dataclass
class NnUNetFolders:
    """nnUNet_raw, nnUNet_preprocessed and nnUNet_results of one test."""
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
