"""Benchmark: our pure-PyTorch selective scan against upstream's `selective_scan_ref`, on the CPU.

For each decoder-like shape (batch x windows, d_inner, L; d_state 16; B and C as the Mamba mixer passes them,
(batch, n, L), with D, z, delta_bias and softplus), measures in the same run, each implementation, shape and
mode (inference, training) in a fresh subprocess:
  * forward time without autograd (inference) and with it (training), backward time;
  * peak memory of the forward and of a forward+backward step;
then prints a table with the figures and the ratios, and PASS/FAIL for the targets:
  forward+backward >= 30x faster, forward not slower, peak memory <= 2x.

    python benchmarks/bench_selective_scan.py            # the three shapes; several minutes (upstream's backward)
    python benchmarks/bench_selective_scan.py --quick    # one small shape, seconds: a smoke run
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Callable, Optional

from measure import cpu_and_cores, peak_rise_mib, ratio  # benchmarks/measure.py, beside this script

REPOSITORY = Path(__file__).resolve().parents[1]
FULL_SHAPES = ((64, 64, 256), (8, 64, 1024), (2, 128, 4096))  # (batch x windows, d_inner, L)
QUICK_SHAPES = ((4, 32, 128),)
D_STATE = 16
TARGET_FWD_BWD_SPEEDUP = 30.0
TARGET_FWD_SPEEDUP = 1.0
TARGET_PEAK_RATIO = 2.0
IMPLEMENTATIONS = ("ours", "upstream")
MODES = ("inference", "training")
MEMORY_NOTE = (
    "peak memory = rise of the process's peak resident set size (Linux VmHWM, reset through /proc/self/clear_refs)\n"
    "over its resident size just before the first call at the shape, inputs already allocated; {isolation}\n"
    "with the default allocator, so the figure is what the OS had to provide, memory the allocator kept after\n"
    "frees included. (Python's tracemalloc would not see PyTorch's allocations.)")


@dataclasses.dataclass
class Measurement:
    """One implementation at one shape; times in seconds (best of the runs), memory in MiB."""
    forward_inference: float
    forward_training: float
    backward: float
    peak_forward_mib: Optional[float]
    peak_step_mib: Optional[float]

    @property
    def forward_backward(self) -> float:
        return self.forward_training + self.backward


def fail(path: str, problem: str) -> None:
    print(f"error: {path}: {problem}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------- worker side

def load_upstream_reference() -> Callable:
    """Upstream's `selective_scan_ref`, on a machine without mamba_ssm's CUDA build: a placeholder stands in for
    the compiled `selective_scan_cuda` the module imports (and never calls from the reference), and the
    package's `__init__`, which imports Mamba2/Mamba3 and their GPU kernels (~10 s, none of it used here), is
    bypassed by registering the package without executing it. Benchmark-only: the package never does this."""
    sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None or not spec.submodule_search_locations:
        fail("mamba_ssm", "not installed; install mamba-ssm==2.3.2.post1 without its CUDA build (see .ci/setup) "
                          "to compare with upstream")
    package = types.ModuleType("mamba_ssm")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = package
    return importlib.import_module("mamba_ssm.ops.selective_scan_interface").selective_scan_ref


def load_ours() -> Callable:
    sys.path.insert(0, str(REPOSITORY))  # measure this checkout, not an installed copy
    from nnunetv2_msvmamba.ssm import selective_scan_torch
    return selective_scan_torch


def scan_inputs(batch: int, dim: int, length: int, requires_grad: bool) -> dict:
    """Inputs as the Mamba mixer produces them, with a fixed seed."""
    import torch
    generator = torch.Generator().manual_seed(0)
    sequence = (batch, dim, length)

    def tensor(values):
        return values.requires_grad_(requires_grad)
    dt_init = torch.exp(torch.rand(dim, generator=generator) * 4.6 - 6.9)  # in [0.001, 0.1], upstream's range
    return dict(
        u=tensor(torch.randn(sequence, generator=generator)),
        delta=tensor(0.1 * torch.randn(sequence, generator=generator)),
        A=tensor(-torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(dim, 1)),
        B=tensor(torch.randn(batch, D_STATE, length, generator=generator)),
        C=tensor(torch.randn(batch, D_STATE, length, generator=generator)),
        D=tensor(torch.ones(dim)),
        z=tensor(torch.randn(sequence, generator=generator)),
        delta_bias=tensor(dt_init + torch.log(-torch.expm1(-dt_init))),
    )


def forward(scan: Callable, inputs: dict):
    return scan(**inputs, delta_softplus=True)


def warm_up(scan: Callable, dim: int) -> None:
    """Initialises lazily set-up libraries and thread pools outside the measurements, at a tiny length."""
    import torch
    inputs = scan_inputs(1, dim, 16, requires_grad=True)
    torch.autograd.grad(forward(scan, inputs), list(inputs.values()), torch.ones(1, dim, 16))


def measure_inference(scan: Callable, batch: int, dim: int, length: int, repeats: int) -> dict[str, float]:
    """Forward without autograd; the first call gives the peak memory and the first time sample."""
    import torch
    inputs = scan_inputs(batch, dim, length, requires_grad=False)
    times: list[float] = []

    def timed_forward() -> None:
        start = time.perf_counter()
        forward(scan, inputs)
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        peak = peak_rise_mib(timed_forward)
        for _ in range(repeats - 1):
            timed_forward()
    return dict(forward_inference=min(times), peak_forward_mib=peak)


def measure_training(scan: Callable, batch: int, dim: int, length: int, repeats: int,
                     backward_repeats: int) -> dict[str, float]:
    """Forward with autograd, then backward to every input; the first step gives the peak memory and the first
    time sample. Forward samples beyond the backward ones are taken alone, as upstream's backward is slow."""
    import torch
    inputs = scan_inputs(batch, dim, length, requires_grad=True)
    output_grad = torch.randn(batch, dim, length, generator=torch.Generator().manual_seed(1))
    forward_times: list[float] = []
    backward_times: list[float] = []

    def timed_step() -> None:
        start = time.perf_counter()
        out = forward(scan, inputs)
        middle = time.perf_counter()
        torch.autograd.grad(out, list(inputs.values()), output_grad)
        forward_times.append(middle - start)
        backward_times.append(time.perf_counter() - middle)
    peak = peak_rise_mib(timed_step)
    for _ in range(backward_repeats - 1):
        timed_step()
    while len(forward_times) < repeats:
        start = time.perf_counter()
        forward(scan, inputs)
        forward_times.append(time.perf_counter() - start)
    return dict(forward_training=min(forward_times), backward=min(backward_times),
                peak_step_mib=peak)


def worker(implementation: str, modes: list[str], shape: list[int], repeats: int,
           reference_backward_repeats: int) -> None:
    scan = load_ours() if implementation == "ours" else load_upstream_reference()
    warm_up(scan, shape[1])
    figures = {}
    if "inference" in modes:
        figures.update(measure_inference(scan, *shape, repeats=repeats))
    if "training" in modes:
        backward_repeats = repeats if implementation == "ours" else reference_backward_repeats
        figures.update(measure_training(scan, *shape, repeats=repeats, backward_repeats=backward_repeats))
    print(json.dumps({"figures": figures, "runtime": runtime_description()}))


def runtime_description() -> str:
    import torch
    threads = torch.get_num_threads()
    gpu = f"GPU {torch.cuda.get_device_name(0)} unused" if torch.cuda.is_available() else "no GPU"
    return f"torch {torch.__version__} with {threads} thread{'s' if threads != 1 else ''}, CPU tensors; {gpu}"


# ---------------------------------------------------------------------------------------------- parent side

def run_worker(implementation: str, modes: str, shape: tuple[int, int, int], args: argparse.Namespace
               ) -> dict:
    """Measures in a fresh process; returns its {"figures": ..., "runtime": ...}."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", implementation, modes, *map(str, shape),
               "--repeats", str(args.repeats), "--reference-backward-repeats", str(args.reference_backward_repeats)]
    environment = dict(os.environ)
    if args.threads is not None:
        environment.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        fail(command[1], f"measuring {implementation} ({modes}) at {shape} failed with status "
                         f"{completed.returncode}: {last_line}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def cpu_description() -> str:
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{cpu_and_cores()}{load}"



def verdict(value: Optional[float], passes: Callable[[float], bool]) -> str:
    return "n/a" if value is None else ("PASS" if passes(value) else "FAIL")


def report(results: dict[tuple[int, int, int], dict[str, Measurement]]) -> bool:
    """Prints the figures and the targets; True when every target is met."""
    def mib(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    def times(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.2f}x"

    print(f"{'shape (b*w, d, L)':<20} {'impl':<9} {'fwd no_grad s':>13} {'fwd s':>9} {'bwd s':>9} "
          f"{'fwd+bwd s':>10} {'peak fwd MiB':>12} {'peak step MiB':>13}")
    for shape, by_implementation in results.items():
        for implementation, m in by_implementation.items():
            print(f"{'x'.join(map(str, shape)):<20} {implementation:<9} {m.forward_inference:>13.4f} "
                  f"{m.forward_training:>9.4f} {m.backward:>9.4f} {m.forward_backward:>10.4f} "
                  f"{mib(m.peak_forward_mib):>12} {mib(m.peak_step_mib):>13}")
    print()
    print(f"{'shape (b*w, d, L)':<20} {'fwd no_grad speedup':>19} {'fwd speedup':>11} {'fwd+bwd speedup':>15} "
          f"{'peak fwd ratio':>14} {'peak step ratio':>15}   targets (fwd+bwd >= {TARGET_FWD_BWD_SPEEDUP:.0f}x, "
          f"fwd >= {TARGET_FWD_SPEEDUP:.0f}x, peak <= {TARGET_PEAK_RATIO:.0f}x)")
    all_pass = True
    for shape, by_implementation in results.items():
        ours, upstream = by_implementation["ours"], by_implementation["upstream"]
        inference_speedup = ratio(upstream.forward_inference, ours.forward_inference)
        forward_speedup = ratio(upstream.forward_training, ours.forward_training)
        step_speedup = ratio(upstream.forward_backward, ours.forward_backward)
        peak_forward = ratio(ours.peak_forward_mib, upstream.peak_forward_mib)
        peak_step = ratio(ours.peak_step_mib, upstream.peak_step_mib)
        verdicts = [verdict(step_speedup, lambda r: r >= TARGET_FWD_BWD_SPEEDUP),
                    verdict(min(inference_speedup, forward_speedup), lambda r: r >= TARGET_FWD_SPEEDUP),
                    verdict(None if peak_forward is None else max(peak_forward, peak_step),
                            lambda r: r <= TARGET_PEAK_RATIO)]
        all_pass &= "FAIL" not in verdicts
        print(f"{'x'.join(map(str, shape)):<20} {times(inference_speedup):>19} {times(forward_speedup):>11} "
              f"{times(step_speedup):>15} {times(peak_forward):>14} {times(peak_step):>15}   "
              f"fwd+bwd {verdicts[0]}, fwd {verdicts[1]}, peak memory {verdicts[2]}")
    return all_pass


def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Forward, backward and peak memory of nnunetv2_msvmamba's pure-PyTorch selective scan against "
                    "mamba_ssm's selective_scan_ref, on the CPU, with the targets of issue 2.")
    parser.add_argument("--quick", action="store_true",
                        help=f"one small shape {QUICK_SHAPES[0]} and one process per implementation: a smoke run, "
                             f"its figures only indicative")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed repetitions per figure, the best reported (default 5)")
    parser.add_argument("--reference-backward-repeats", type=int, default=1,
                        help="timed backward passes of upstream's reference, which take 30 s and more each at the "
                             "full shapes (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch threads in the measuring processes (default: PyTorch's default, one per "
                             "available core); on a shared machine 1 gives the steadiest figures")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    parser.add_argument("--worker", nargs=5, metavar=("IMPLEMENTATION", "MODES", "BATCH", "DIM", "LENGTH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.reference_backward_repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--repeats, --reference-backward-repeats and --threads must be at least 1")
    if args.worker and (args.worker[0] not in IMPLEMENTATIONS or not set(args.worker[1].split(",")) <= set(MODES)):
        parser.error(f"--worker: unknown implementation or mode in {args.worker[:2]}")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_arguments(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1].split(","), [int(value) for value in args.worker[2:]], args.repeats,
               args.reference_backward_repeats)
        return 0
    from tqdm import tqdm

    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    cpu_at_start = cpu_description()
    figures: dict[tuple[tuple[int, int, int], str], dict[str, float]] = {}
    runtimes = set()
    # a fresh process per mode keeps the inference runs' freed memory out of the training step's peak; the smoke
    # run shares one process per implementation to stay fast
    mode_groups = [",".join(MODES)] if args.quick else list(MODES)
    jobs = [(shape, implementation, modes) for shape in shapes for implementation in IMPLEMENTATIONS
            for modes in mode_groups]
    with tqdm(jobs, desc="measuring", unit="process", file=sys.stderr) as progress:
        for shape, implementation, modes in progress:
            progress.set_postfix_str(f"{implementation} {modes} {'x'.join(map(str, shape))}")
            measured = run_worker(implementation, modes, shape, args)
            figures.setdefault((shape, implementation), {}).update(measured["figures"])
            runtimes.add(measured["runtime"])
    results = {shape: {implementation: Measurement(**figures[shape, implementation])
                       for implementation in IMPLEMENTATIONS} for shape in shapes}

    print(f"machine: {cpu_at_start} (at the start; other processes skew CPU timings)")
    print(f"runtime: {'; '.join(sorted(runtimes))}")
    print(f"d_state {D_STATE}; B, C (batch, n, L); D, z, delta_bias, softplus; float32. Times in seconds: best of "
          f"{args.repeats} run(s) (upstream's backward: of {args.reference_backward_repeats}); on a shared machine other "
          f"processes only ever add time.")
    isolation = ("each implementation runs in a fresh process," if args.quick else
                 "each implementation, shape and mode runs in a fresh process,")
    print(MEMORY_NOTE.format(isolation=isolation))
    print()
    all_pass = report(results)
    return 1 if args.strict and not all_pass else 0


if __name__ == "__main__":
    sys.exit(main())
