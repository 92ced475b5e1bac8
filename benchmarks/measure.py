"""What the benchmarks share: peak-memory measurement through /proc, the machine's description, ratios, and
running nnU-Net's and our commands.
Imported by the benchmark scripts, which run with this folder first on sys.path."""
from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Callable, Optional


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_rise_mib(run: Callable[[], None]) -> Optional[float]:
    """Runs `run` once; returns how far the peak RSS rose above the RSS before it (None where /proc lacks it)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
        before = _proc_status_kib("VmRSS")
    except OSError:
        run()
        return None
    run()
    return (_proc_status_kib("VmHWM") - before) / 1024


def cpu_and_cores() -> str:
    """The CPU model and how many cores this process may run on, e.g. 'AMD EPYC ..., 2 CPU cores available'."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as cpuinfo:
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu}, {cores} CPU cores available"


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    """numerator / denominator, or None where either figure is missing or the denominator is 0."""
    return None if numerator is None or not denominator else numerator / denominator


def make_nnunet_folders(workspace: Path) -> dict[str, Path]:
    """nnUNet_raw, nnUNet_preprocessed and nnUNet_results, made new under `workspace`, by their variable's name."""
    folders = {name: workspace / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in folders.values():
        folder.mkdir()
    return folders


def run_command_or_exit(arguments: list[str], environment: dict[str, str]) -> None:
    """Runs an installed command (nnU-Net's or ours) by name; exits with its stderr's tail when it fails."""
    from nnunetv2_msvmamba.common.commands import command_path
    command = [command_path(arguments[0]), *arguments[1:]]
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        raise SystemExit(f"error: {arguments[0]}: exited {completed.returncode}:\n{completed.stderr[-3000:]}")
