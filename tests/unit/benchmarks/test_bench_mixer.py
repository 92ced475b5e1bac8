"""benchmarks/bench_mixer.py: `--quick` for real, in a subprocess: a row per mode with both paths' times, their
ratio and the paths' output difference (which must be float32 rounding); and a clear error where the Numba backend
is not in use. No timing gate."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from helpers.benchmark_scripts import BENCHMARKS

BENCHMARK = BENCHMARKS / "bench_mixer.py"
NUMBER = r"([\d.e+-]+)"
ROW = re.compile(rf"small: 8 x 64 x 16\s+(inference|forward \+ backward)\s+{NUMBER}s\s+{NUMBER}s\s+{NUMBER}x\s+"
                 rf"{NUMBER}$", re.MULTILINE)


def run_benchmark(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARK), *arguments], capture_output=True, text=True,
                          env=dict(os.environ, **environment))


def test_quick_prints_both_paths_their_ratio_and_their_agreement() -> None:
    completed = run_benchmark("--quick", "--threads", "1")
    assert completed.returncode == 0, completed.stderr
    rows = ROW.findall(completed.stdout)
    assert [row[0] for row in rows] == ["inference", "forward + backward"], completed.stdout
    for mode, numba, generic, ratio, difference in rows:
        assert abs(float(generic) / float(numba) - float(ratio)) <= 0.002 * float(ratio) + 0.005, mode  # rounding
        assert float(difference) < 1e-4, mode
    assert "1 threads" in completed.stdout and "median of 1 after 1 warm-up" in completed.stdout


def test_without_the_numba_backend_it_says_so() -> None:
    completed = run_benchmark("--quick", MSVMAMBA_SSM_BACKEND="torch")
    assert completed.returncode == 1
    assert "the Numba backend is not in use on the CPU" in completed.stderr
