"""Benchmark: the selective-scan backends against each other and against the references, in the same run.

    --device cpu  (default)  the Numba kernels ("numba", the CPU backend) and our pure-PyTorch scan ("torch")
                             against upstream's `selective_scan_ref` ("upstream"); targets: torch forward+backward
                             >= 30x faster than upstream, forward not slower, peak memory <= 2x; numba
                             forward+backward >= 5x torch's (issue 22), also at a full-resolution LMS shape
                             (1024 x 64 x 256, without upstream, whose backward would take many minutes there).
                             The Numba worker also measures the arithmetic limit, one exp2 and two fused
                             multiply-adds per state update, with a tiny Numba kernel (same exp2) in the same
                             process, and itself, each on 1 thread and on all, sample by sample in alternation (best
                             of at least 10 rounds; its speedup over the pure-PyTorch scan comes from rounds of their
                             own, the two alternated): it prints updates per second against that limit (targets:
                             forward within 2x of the limit on one thread, forward+backward within 2x of three
                             forwards at the limit) and the speedup from 1 thread to all (target >= 1.8x, on a
                             2-core machine; n/a with one thread).
    --device cuda            the Triton scan, the pure-PyTorch scan on CUDA and, where it imports, mamba_ssm's
                             fused kernel ("mamba_ssm"); targets: Triton forward+backward >= 20x faster than the
                             PyTorch scan, and within 3x of mamba_ssm's fused kernel.

For each decoder-like shape (batch x windows, d_inner, L; d_state 16; B and C as the Mamba mixer passes them,
with D, z, delta_bias and softplus, in the mixer's memory layouts) it measures the forward time without autograd
(inference) and with it (training), the backward time, and the peak memory of a forward and of a forward+backward
step; each implementation runs in a fresh process (on the CPU one per shape and mode, so that freed memory stays
out of the next peak). Every implementation is first held against the package's readable reference,
`nnunetv2_msvmamba.ssm.selective_scan_ref` in float64, at a small shape (output and every gradient; target:
relative error <= 1e-4). Prints the figures, the ratios and PASS/FAIL per target; `--strict` exits with status 1
when one is missed.

    python benchmarks/bench_selective_scan.py                  # CPU, three shapes; minutes (upstream's backward)
    python benchmarks/bench_selective_scan.py --quick          # one small shape, seconds: a smoke run
    python benchmarks/bench_selective_scan.py --device cuda    # GPU: Triton, PyTorch, mamba_ssm
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import math
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
# a full-resolution LMS stage on the CPU: the compiled scans only (upstream's reference would take many minutes)
LMS_SHAPE = (1024, 64, 256)
CPU_SHAPES = FULL_SHAPES + (LMS_SHAPE,)
SKIPPED_SHAPES = {"upstream": {LMS_SHAPE}}
# on a GPU also a whole decoder stage's windows at once: 4 images x 2 directions x 64 windows of 16 x 16
CUDA_SHAPES = FULL_SHAPES + ((512, 64, 256),)
QUICK_SHAPES = ((4, 32, 128),)
PARITY_SHAPE = (2, 8, 40)
D_STATE = 16
PARITY_TOLERANCE = 1e-4
IMPLEMENTATIONS = ("numba", "torch", "triton", "mamba_ssm", "upstream")
DEFAULT_IMPLEMENTATIONS = {"cpu": ("numba", "torch", "upstream"), "cuda": ("triton", "torch", "mamba_ssm")}
# the arithmetic-limit kernel's work: rows x steps updates of D_STATE x LANES states (~17 M updates, milliseconds)
LIMIT_ROWS, LIMIT_STEPS = 16, 2048
# rounds of the Numba scan's paired 1-thread / all-thread samples at least: its times are milliseconds, and on a
# shared machine consecutive samples vary by 30 % and more
THREAD_ROUNDS = 10
MODES = ("inference", "training")
UNAVAILABLE = 3  # a worker's exit status when its implementation cannot run here
MEMORY_NOTE = {
    "cpu": "peak memory = rise of the process's peak resident set size (Linux VmHWM, reset through "
           "/proc/self/clear_refs)\nover its resident size just before the first call at the shape, inputs "
           "already allocated; {isolation}\nwith the default allocator, so the figure is what the OS had to "
           "provide, memory the allocator kept after\nfrees included. (Python's tracemalloc would not see "
           "PyTorch's allocations.)",
    "cuda": "peak memory = torch.cuda.max_memory_allocated during the call over the memory allocated just before, "
            "inputs\nalready allocated; {isolation}",
}


class Bounded:
    """A figure's target: at least or at most `bound` (the dataclasses below give `title`, `bound`, `at_least`)."""
    title: str
    bound: float
    at_least: bool

    def passes(self, value: float) -> bool:
        return value >= self.bound if self.at_least else value <= self.bound

    def describe(self) -> str:
        return f"{self.title} {'>=' if self.at_least else '<='} {self.bound:.2g}x"


@dataclasses.dataclass(frozen=True)
class Target(Bounded):
    """`implementation` against `baseline` on `metric` (a speedup: the baseline's time over ours, or a memory
    ratio: ours over the baseline's); `at_least` or `at_most` `bound`."""
    title: str
    implementation: str
    baseline: str
    metric: str  # "fwd+bwd speedup", "fwd speedup" (the worse of inference and training), "peak ratio"
    bound: float
    at_least: bool


TARGETS = (
    Target("torch vs upstream fwd+bwd speedup", "torch", "upstream", "fwd+bwd speedup", 30.0, True),
    Target("torch vs upstream fwd speedup", "torch", "upstream", "fwd speedup", 1.0, True),
    Target("torch / upstream peak memory", "torch", "upstream", "peak ratio", 2.0, False),
    Target("numba vs torch fwd+bwd speedup", "numba", "torch", "fwd+bwd speedup", 5.0, True),
    Target("triton vs torch fwd+bwd speedup", "triton", "torch", "fwd+bwd speedup", 20.0, True),
    # within 3x of the fused kernel: its time over ours at least 1/3
    Target("triton within 3x of mamba_ssm: fwd+bwd speedup", "triton", "mamba_ssm", "fwd+bwd speedup", 1 / 3, True),
)


@dataclasses.dataclass(frozen=True)
class LimitTarget(Bounded):
    """A figure of the Numba scan against the arithmetic limit or its own thread scaling (see `limit_metrics`)."""
    title: str
    bound: float
    at_least: bool


LIMIT_TARGETS = (
    LimitTarget("numba fwd (1 thread) / the limit's time", 2.0, False),
    LimitTarget("numba fwd+bwd (1 thread) / three forwards at the limit", 2.0, False),
    LimitTarget("numba speedup 1 thread -> all (the worse of fwd and fwd+bwd)", 1.8, True),
)
THREAD_SCALING = LIMIT_TARGETS[2]


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
        unavailable("mamba_ssm is not installed; install mamba-ssm==2.3.2.post1 without its CUDA build (see "
                    ".ci/setup) to compare with upstream")
    package = types.ModuleType("mamba_ssm")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = package
    return importlib.import_module("mamba_ssm.ops.selective_scan_interface").selective_scan_ref


def load_mamba_ssm_kernel() -> Callable:
    """mamba_ssm's fused CUDA scan, through the package's own detection (as `MSVMAMBA_SSM_BACKEND=cuda` uses it)."""
    from nnunetv2_msvmamba.ssm.backend import cuda_kernels
    kernels = cuda_kernels()
    if not kernels.available:
        unavailable(kernels.reason)
    return kernels.selective_scan_fn


def unavailable(reason: str) -> None:
    print(reason, file=sys.stderr)
    sys.exit(UNAVAILABLE)


def load_implementation(name: str) -> Callable:
    sys.path.insert(0, str(REPOSITORY))  # measure this checkout, not an installed copy
    if name == "upstream":
        return load_upstream_reference()
    if name == "mamba_ssm":
        return load_mamba_ssm_kernel()
    if name == "numba":
        try:
            import numba  # noqa: F401
        except ImportError as error:
            unavailable(f"numba does not import ({error})")
        from nnunetv2_msvmamba.ssm import selective_scan_numba
        return selective_scan_numba
    if name == "triton":
        try:
            from nnunetv2_msvmamba.ssm.selective_scan_triton import selective_scan_triton
        except ImportError as error:
            unavailable(f"triton does not import ({error})")
        return selective_scan_triton
    from nnunetv2_msvmamba.ssm import selective_scan_torch
    return selective_scan_torch


def scan_inputs(batch: int, dim: int, length: int, requires_grad: bool, device: str = "cpu") -> dict:
    """Inputs as the Mamba mixer's generic path produces them (its path on GPUs, under torch.compile and with the
    pure-PyTorch scan), with a fixed seed: the values, and the memory layouts. u is the convolution's (batch, dim,
    L) output; delta, B and C are (batch, L, .) projections seen transposed, and z is the second half of in_proj's
    (batch, L, 2 dim) output seen transposed, so along L they step by the row length."""
    import torch
    generator = torch.Generator().manual_seed(0)
    sequence = (batch, dim, length)

    def tensor(values):
        return values.to(device).requires_grad_(requires_grad)
    dt_init = torch.exp(torch.rand(dim, generator=generator) * 4.6 - 6.9)  # in [0.001, 0.1], upstream's range
    u = torch.randn(sequence, generator=generator)
    delta = 0.1 * torch.randn(sequence, generator=generator)
    B, C = (torch.randn(batch, D_STATE, length, generator=generator) for _ in range(2))
    z = torch.randn(sequence, generator=generator)
    # made on the device: moving a slice of it would give a contiguous copy, losing the row stride
    in_proj_output = torch.empty(batch, length, 2 * dim, device=device)
    in_proj_output[..., dim:] = z.transpose(1, 2).to(device)
    return dict(
        u=tensor(u),
        delta=tensor(as_mixer_projection(delta)),
        A=tensor(-torch.arange(1, D_STATE + 1, dtype=torch.float32).repeat(dim, 1)),
        B=tensor(as_mixer_projection(B)),
        C=tensor(as_mixer_projection(C)),
        D=tensor(torch.ones(dim)),
        z=tensor(in_proj_output[..., dim:].transpose(1, 2)),
        delta_bias=tensor(dt_init + torch.log(-torch.expm1(-dt_init))),
    )


def as_mixer_projection(x):
    """The values of a (batch, channels, L) tensor in the layout of a (batch, L, channels) projection's output seen
    transposed, as the mixer passes delta, B and C, and as the scan's output gradient arrives from out_proj."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


def output_gradient(shape: tuple[int, int, int], device: str = "cpu"):
    """A fixed random gradient of the scan's (batch, dim, L) output, in the layout out_proj's backward gives it."""
    import torch
    return as_mixer_projection(torch.randn(shape, generator=torch.Generator().manual_seed(1))).to(device)


def forward(scan: Callable, inputs: dict):
    return scan(**inputs, delta_softplus=True)


def synchronize(device: str) -> None:
    if device == "cuda":
        import torch
        torch.cuda.synchronize()


def peak_rise(run: Callable[[], None], device: str) -> Optional[float]:
    """MiB that `run` needed at its peak beyond what was in use before: process RSS on the CPU, the caching
    allocator's allocated memory on CUDA."""
    if device != "cuda":
        return peak_rise_mib(run)
    import torch
    synchronize(device)
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    synchronize(device)
    return (torch.cuda.max_memory_allocated() - before) / 2 ** 20


def parity_error(scan: Callable, device: str) -> float:
    """Largest relative error (max|ours - ref| / max|ref|) of the output and of every input's gradient against
    the package's float64 `selective_scan_ref`, at PARITY_SHAPE."""
    import torch
    from nnunetv2_msvmamba.ssm.selective_scan_ref import relative_error, selective_scan_ref
    inputs = scan_inputs(*PARITY_SHAPE, requires_grad=True, device=device)
    reference_inputs = {name: value.detach().double().requires_grad_() for name, value in inputs.items()}
    output_grad = output_gradient(PARITY_SHAPE, device)
    results = []
    for function, arguments in ((scan, inputs), (selective_scan_ref, reference_inputs)):
        out = forward(function, arguments)
        results.append([out, *torch.autograd.grad(out, list(arguments.values()), output_grad.to(out.dtype))])
    return max(relative_error(ours, reference) for ours, reference in zip(*results))


def warm_up(scan: Callable, dim: int, device: str) -> None:
    """Initialises lazily set-up libraries, thread pools and compiled kernels outside the measurements."""
    import torch
    inputs = scan_inputs(1, dim, 16, requires_grad=True, device=device)
    torch.autograd.grad(forward(scan, inputs), list(inputs.values()), torch.ones(1, dim, 16, device=device))
    synchronize(device)


def measure_inference(scan: Callable, batch: int, dim: int, length: int, repeats: int,
                      device: str) -> dict[str, float]:
    """Forward without autograd; the first call gives the peak memory and the first time sample."""
    import torch
    inputs = scan_inputs(batch, dim, length, requires_grad=False, device=device)
    times: list[float] = []

    def timed_forward() -> None:
        synchronize(device)
        start = time.perf_counter()
        forward(scan, inputs)
        synchronize(device)
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        peak = peak_rise(timed_forward, device)
        for _ in range(repeats - 1):
            timed_forward()
    return dict(forward_inference=min(times), peak_forward_mib=peak)


def measure_training(scan: Callable, batch: int, dim: int, length: int, repeats: int,
                     backward_repeats: int, device: str) -> dict[str, float]:
    """Forward with autograd, then backward to every input; the first step gives the peak memory and the first
    time sample. Forward samples beyond the backward ones are taken alone, as upstream's backward is slow."""
    import torch
    inputs = scan_inputs(batch, dim, length, requires_grad=True, device=device)
    output_grad = output_gradient((batch, dim, length), device)
    forward_times: list[float] = []
    backward_times: list[float] = []

    def timed_step() -> None:
        synchronize(device)
        start = time.perf_counter()
        out = forward(scan, inputs)
        synchronize(device)
        middle = time.perf_counter()
        torch.autograd.grad(out, list(inputs.values()), output_grad)
        synchronize(device)
        forward_times.append(middle - start)
        backward_times.append(time.perf_counter() - middle)
    peak = peak_rise(timed_step, device)
    for _ in range(backward_repeats - 1):
        timed_step()
    while len(forward_times) < repeats:
        synchronize(device)
        start = time.perf_counter()
        forward(scan, inputs)
        synchronize(device)
        forward_times.append(time.perf_counter() - start)
    return dict(forward_training=min(forward_times), backward=min(backward_times), peak_step_mib=peak)


def arithmetic_limit_runner() -> Callable[[int], float]:
    """A function that runs the arithmetic-limit kernel (`_numba_kernels._arithmetic_limit_function`: one exp2, the
    scan's own, and two fused multiply-adds per state update, vectorised over a block of channels as the scan is) once
    on the given number of threads and returns its updates per second; the kernel is compiled (or loaded) and run
    once here."""
    import numba
    import numpy as np
    from nnunetv2_msvmamba.ssm._numba_kernels import EXP2_CONSTANTS, compiled_arithmetic_limit
    from nnunetv2_msvmamba.ssm.selective_scan_numba import LANES
    kernel = compiled_arithmetic_limit(LANES)
    A_log2 = -np.linspace(0.01, 0.2, D_STATE * LANES, dtype=np.float32).reshape(D_STATE, LANES)
    B, C, y = np.ones(D_STATE, np.float32), np.ones(D_STATE, np.float32), np.empty((LIMIT_ROWS, LANES), np.float32)

    def run(threads: int) -> float:
        numba.set_num_threads(threads)
        start = time.perf_counter()
        kernel(LIMIT_ROWS, LIMIT_STEPS, A_log2, B, C, y, EXP2_CONSTANTS)
        return LIMIT_ROWS * LIMIT_STEPS * D_STATE * LANES / (time.perf_counter() - start)
    run(1)
    return run


def best_times(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Each run's best time over `rounds` rounds, one sample of each per round, in alternating order."""
    best: dict[str, float] = {}
    for round_index in range(rounds):
        for name, run in (runs.items() if round_index % 2 == 0 else reversed(runs.items())):
            start = time.perf_counter()
            run()
            best[name] = min(best.get(name, math.inf), time.perf_counter() - start)
    return best


def training_step(scan: Callable, shape: tuple[int, int, int]) -> Callable[[], None]:
    """A forward and a backward to every input at `shape`, on inputs made once."""
    import torch
    inputs, output_grad = scan_inputs(*shape, requires_grad=True), output_gradient(shape)
    return lambda: torch.autograd.grad(forward(scan, inputs), list(inputs.values()), output_grad)


def paired_thread_figures(scan: Callable, modes: list[str], shape: tuple[int, int, int], rounds: int) -> dict:
    """The Numba scan's extra figures at `shape`: its forward (inference) and forward+backward times on 1 thread
    and on PyTorch's thread count, and the arithmetic limit's updates per second on both, best of `rounds` rounds;
    and the limit's own speedup from 1 thread to all in those rounds ("limit_speedup"), which says whether the
    machine gave the process's arithmetic both cores. Each round takes one sample of each on both thread counts, in
    alternating order, so that a shared machine's drifting speed falls on both sides of every ratio (timings taken
    minutes apart, or in separate processes, differed by up to 2x). Nothing else runs in these rounds: with the
    pure-PyTorch scan's forward+backward among them (hundreds of MiB of intermediate tensors at the larger shapes),
    the Numba scan's samples after it were 5-13 % longer, on both thread counts (see `alternated_with_baseline`)."""
    import torch
    threads = torch.get_num_threads()
    counts = (1, threads) if threads > 1 else (1,)
    runs = {}
    if "inference" in modes:
        inference_inputs = scan_inputs(*shape, requires_grad=False)

        def forward_inference() -> None:
            with torch.no_grad():
                forward(scan, inference_inputs)
        runs["forward_inference"] = forward_inference
    if "training" in modes:
        runs["forward_backward"] = training_step(scan, shape)
    limit = arithmetic_limit_runner()
    best: dict[int, dict[str, float]] = {count: {"limit": 0.0} for count in counts}
    try:
        for round_index in range(rounds):
            for count in counts if round_index % 2 == 0 else counts[::-1]:
                torch.set_num_threads(count)
                for name, time_taken in best_times(runs, 1).items():
                    best[count][name] = min(best[count].get(name, math.inf), time_taken)
                best[count]["limit"] = max(best[count]["limit"], limit(count))
    finally:
        torch.set_num_threads(threads)
    limits = {count: figures.pop("limit") for count, figures in best.items()}
    return {"threads": threads, "limit_one": limits[1], "limit_all": limits[threads],
            "single_thread": {shape_name(shape): best[1]}, "all_threads": {shape_name(shape): best[threads]},
            "limit_speedup": {shape_name(shape): limits[threads] / limits[1]}}


def alternated_with_baseline(scan: Callable, baseline: Callable, shape: tuple[int, int, int], rounds: int) -> dict:
    """The Numba scan's and `baseline`'s (the pure-PyTorch scan's) forward+backward on PyTorch's thread count, best
    of `rounds` rounds of one sample each, alternately in one process ("forward_backward_beside_torch",
    "torch_forward_backward"), for the speedup target: times from separate processes put the machine's drift into
    the ratio. In rounds of their own, apart from `paired_thread_figures`' against the limit."""
    times = best_times({"forward_backward_beside_torch": training_step(scan, shape),
                        "torch_forward_backward": training_step(baseline, shape)}, rounds)
    return {"all_threads": {shape_name(shape): times}}


def worker(implementation: str, modes: list[str], device: str, shapes: list[tuple[int, int, int]], repeats: int,
           reference_backward_repeats: int) -> None:
    """Prints one JSON line: {"parity_error": ..., "figures": {"BxDxL": {...}}, "runtime": ...} (the Numba scan:
    also "scaling", see `paired_thread_figures`)."""
    scan = load_implementation(implementation)
    backward_repeats = reference_backward_repeats if implementation == "upstream" else repeats
    started = time.perf_counter()
    warm_up(scan, max(shape[1] for shape in shapes), device)
    first_call_s = time.perf_counter() - started
    figures = {}
    for shape in shapes:
        shape_figures = {}
        if "inference" in modes:
            shape_figures.update(measure_inference(scan, *shape, repeats=repeats, device=device))
        if "training" in modes:
            shape_figures.update(measure_training(scan, *shape, repeats=repeats, backward_repeats=backward_repeats,
                                                  device=device))
        figures[shape_name(shape)] = shape_figures
    report = {"parity_error": parity_error(scan, device), "figures": figures, "runtime": runtime_description(device)}
    if implementation == "numba":
        report["scaling"] = {"first_call_s": first_call_s}
        rounds = max(repeats, THREAD_ROUNDS)
        for shape in shapes:
            merge_scaling(report["scaling"], paired_thread_figures(scan, modes, shape, rounds))
            if "training" in modes:
                merge_scaling(report["scaling"], alternated_with_baseline(scan, load_implementation("torch"), shape,
                                                                          rounds))
    print(json.dumps(report))


def runtime_description(device: str) -> str:
    import torch
    threads = torch.get_num_threads()
    versions = f"torch {torch.__version__}"
    if importlib.util.find_spec("triton") is not None:
        import triton
        versions += f", triton {triton.__version__}"
    if device == "cuda":
        return f"{versions}; CUDA tensors on {torch.cuda.get_device_name(0)}"
    gpu = f"GPU {torch.cuda.get_device_name(0)} unused" if torch.cuda.is_available() else "no GPU"
    return f"{versions} with {threads} thread{'s' if threads != 1 else ''}, CPU tensors; {gpu}"


def shape_name(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape))


# ---------------------------------------------------------------------------------------------- parent side

@dataclasses.dataclass
class Measured:
    """What one implementation's workers reported, or why it could not run."""
    parity_error: Optional[float] = None
    figures: dict = dataclasses.field(default_factory=dict)
    unavailable: Optional[str] = None
    scaling: dict = dataclasses.field(default_factory=dict)  # the Numba scan's, merged over its workers


def run_worker(implementation: str, modes: str, shapes: tuple[tuple[int, int, int], ...],
               args: argparse.Namespace) -> dict:
    """Measures in a fresh process; returns its report, or {"unavailable": reason}."""
    command = [sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--worker", implementation,
               modes, ",".join(map(shape_name, shapes)), "--repeats", str(args.repeats),
               "--reference-backward-repeats", str(args.reference_backward_repeats)]
    environment = dict(os.environ)
    if args.threads is not None:
        environment.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode == UNAVAILABLE:
        return {"unavailable": completed.stderr.strip().splitlines()[-1]}
    if completed.returncode != 0:
        last_line = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        fail(command[1], f"measuring {implementation} ({modes}) at {', '.join(map(shape_name, shapes))} failed "
                         f"with status {completed.returncode}: {last_line}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_all(args: argparse.Namespace, shapes, implementations) -> tuple[dict[str, Measured], set[str]]:
    """Every implementation at every shape. On the CPU a fresh process per shape and mode keeps one run's freed
    memory out of the next one's peak (the smoke run shares one process per implementation); on CUDA the
    allocator's peak is reset per call, and one process per implementation does every shape."""
    from tqdm import tqdm
    def measured_shapes(implementation: str) -> tuple:
        return tuple(shape for shape in shapes if shape not in SKIPPED_SHAPES.get(implementation, ()))
    if args.device == "cuda" or args.quick:
        jobs = [(implementation, ",".join(MODES), measured_shapes(implementation))
                for implementation in implementations]
    else:
        jobs = [(implementation, mode, (shape,)) for shape in shapes for implementation in implementations
                for mode in MODES if shape in measured_shapes(implementation)]
    results = {implementation: Measured() for implementation in implementations}
    runtimes = set()
    with tqdm(jobs, desc="measuring", unit="process", file=sys.stderr) as progress:
        for implementation, modes, job_shapes in progress:
            measured = results[implementation]
            if measured.unavailable:
                continue
            progress.set_postfix_str(f"{implementation} {modes} {', '.join(map(shape_name, job_shapes))}")
            report = run_worker(implementation, modes, job_shapes, args)
            if "unavailable" in report:
                measured.unavailable = report["unavailable"]
                continue
            measured.parity_error = max(report["parity_error"], measured.parity_error or 0.0)
            for name, figures in report["figures"].items():
                measured.figures.setdefault(name, {}).update(figures)
            merge_scaling(measured.scaling, report.get("scaling"))
            runtimes.add(report["runtime"])
    return results, runtimes


def merge_scaling(total: dict, report: Optional[dict]) -> None:
    """Adds one worker's (or shape's) scaling figures: the best limit measured (other processes only ever slow it
    down), the paired 1-thread and all-thread times per shape and mode (and those alternated with the pure-PyTorch
    scan's), the slowest first call."""
    if not report:
        return
    if "threads" in report:
        total["threads"] = report["threads"]
    for key in ("limit_one", "limit_all", "first_call_s"):
        if key in report:
            total[key] = max(total.get(key, 0.0), report[key])
    for paired in ("single_thread", "all_threads"):
        for name, figures in report.get(paired, {}).items():
            total.setdefault(paired, {}).setdefault(name, {}).update(figures)
    total.setdefault("limit_speedup", {}).update(report.get("limit_speedup", {}))


def limit_metrics(shape: tuple[int, int, int], scaling: dict) -> dict[str, Optional[float]]:
    """The LIMIT_TARGETS' values at `shape`: the forward's time on one thread over the limit's for the same
    updates; forward+backward's over three forwards at the limit; the worse speedup from 1 thread to all (all from
    the paired samples of `paired_thread_figures`)."""
    updates = math.prod(shape) * D_STATE
    single, every = (scaling[paired][shape_name(shape)] for paired in ("single_thread", "all_threads"))
    limit_time = updates / scaling["limit_one"]
    speedups = [ratio(single.get(name), every.get(name)) for name in ("forward_inference", "forward_backward")]
    titles = [target.title for target in LIMIT_TARGETS]
    return {titles[0]: ratio(single.get("forward_inference"), limit_time),
            titles[1]: ratio(single.get("forward_backward"), 3 * limit_time),
            titles[2]: None if scaling["threads"] == 1 or None in speedups else min(speedups)}


def report_limit(shapes, numba: Measured) -> bool:
    """Prints the Numba scan's updates per second (batch x d x L x n over the time) against the arithmetic limit,
    on one thread and on all, and the LIMIT_TARGETS' verdicts; True when none is missed."""
    scaling, threads = numba.scaling, numba.scaling["threads"]
    print(f"arithmetic limit (one exp2 + two FMAs per state update; a Numba kernel in the same process, best of its "
          f"workers): {scaling['limit_one']:.3g} updates/s on 1 thread, {scaling['limit_all']:.3g} on {threads}")
    print(f"numba's first call in a process (kernels compiled, or loaded from Numba's on-disk cache): "
          f"{scaling['first_call_s']:.1f} s")
    print(f"numba on 1 thread and on {threads}, alternated sample by sample with the limit (best of at least "
          f"{THREAD_ROUNDS} rounds):")
    print(f"numba, updates/s: {'shape (b*w, d, L)':<20} {'fwd 1 thr':>10} {'fwd+bwd 1 thr':>14} "
          f"{f'fwd {threads} thr':>10} {f'fwd+bwd {threads} thr':>14}")
    by_shape = {}
    for shape in shapes:
        single, every = (scaling[paired][shape_name(shape)] for paired in ("single_thread", "all_threads"))
        updates = math.prod(shape) * D_STATE
        by_shape[shape] = limit_metrics(shape, scaling)
        rates = (updates / single["forward_inference"], updates / single["forward_backward"],
                 updates / every["forward_inference"], updates / every["forward_backward"])
        print(f"{'':<18}{shape_name(shape):<20} " + " ".join(f"{rate:>{width}.3g}"
                                                            for rate, width in zip(rates, (10, 14, 10, 14))))
    print()
    all_pass = True
    for target in LIMIT_TARGETS:
        print(f"target {target.describe()}:")
        for shape, values in by_shape.items():
            value = values[target.title]
            verdict = "n/a" if value is None else ("PASS" if target.passes(value) else "FAIL")
            all_pass &= verdict != "FAIL"
            print(f"  {shape_name(shape):<20} {'n/a' if value is None else f'{value:.2f}x':>10} {verdict}"
                  + machine_speedup(target, shape, scaling))
    return all_pass


def machine_speedup(target: LimitTarget, shape: tuple[int, int, int], scaling: dict) -> str:
    """Beside the thread-scaling verdict, the arithmetic-limit kernel's own speedup in the same rounds: on a shared
    VM it fell to 1.37x in one process of six (1.94x-1.99x in the others), and the scan's with it; where it stays
    near 2x and the scan's does not, the machine gave the arithmetic both cores but not the scan's memory traffic."""
    machine = scaling.get("limit_speedup", {}).get(shape_name(shape))
    if target != THREAD_SCALING or scaling["threads"] == 1 or machine is None:
        return ""
    return f" (the arithmetic-limit kernel in the same rounds: {machine:.2f}x)"


def metric(name: str, ours: Measurement, baseline: Measurement) -> Optional[float]:
    if name == "fwd+bwd speedup":
        return ratio(baseline.forward_backward, ours.forward_backward)
    if name == "fwd speedup":
        return min(ratio(baseline.forward_inference, ours.forward_inference),
                   ratio(baseline.forward_training, ours.forward_training))
    peaks = [ratio(ours.peak_forward_mib, baseline.peak_forward_mib), ratio(ours.peak_step_mib, baseline.peak_step_mib)]
    return None if None in peaks else max(peaks)


def alternated_times(target: Target, shape: tuple[int, int, int],
                     measured: dict[str, Measured]) -> Optional[tuple[float, float]]:
    """For the Numba scan's speedup over the pure-PyTorch scan: both scans' forward+backward on all threads as the
    Numba worker took them, alternately in one process (`paired_thread_figures`); None for every other target, or
    where the worker did not take them. Times from separate processes put the machine's drift into the ratio."""
    if (target.implementation, target.baseline, target.metric) != ("numba", "torch", "fwd+bwd speedup"):
        return None
    paired = measured["numba"].scaling.get("all_threads", {}).get(shape_name(shape), {})
    if "torch_forward_backward" not in paired:
        return None
    return paired["forward_backward_beside_torch"], paired["torch_forward_backward"]


def report(shapes, measured: dict[str, Measured]) -> bool:
    """Prints the parity check, the figures and the targets; True when none is missed."""
    def mib(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.1f}"

    all_pass = True
    print(f"parity with nnunetv2_msvmamba.ssm.selective_scan_ref (float64) at {shape_name(PARITY_SHAPE)}, output and "
          f"every gradient (target: max relative error <= {PARITY_TOLERANCE:g}):")
    for implementation, result in measured.items():
        if result.unavailable:
            print(f"  {implementation:<10} not measured: {result.unavailable}")
            continue
        passes = result.parity_error <= PARITY_TOLERANCE
        all_pass &= passes
        print(f"  {implementation:<10} {result.parity_error:.1e} {'PASS' if passes else 'FAIL'}")
    print()

    available = {name: result for name, result in measured.items() if not result.unavailable}
    by_shape = {shape: {name: Measurement(**result.figures[shape_name(shape)]) for name, result in available.items()
                        if shape_name(shape) in result.figures}
                for shape in shapes}
    print(f"{'shape (b*w, d, L)':<20} {'impl':<10} {'fwd no_grad s':>13} {'fwd s':>9} {'bwd s':>9} "
          f"{'fwd+bwd s':>10} {'peak fwd MiB':>12} {'peak step MiB':>13}")
    for shape, by_implementation in by_shape.items():
        for implementation, m in by_implementation.items():
            print(f"{shape_name(shape):<20} {implementation:<10} {m.forward_inference:>13.4f} "
                  f"{m.forward_training:>9.4f} {m.backward:>9.4f} {m.forward_backward:>10.4f} "
                  f"{mib(m.peak_forward_mib):>12} {mib(m.peak_step_mib):>13}")
    print()
    targets = [target for target in TARGETS if target.implementation in measured and target.baseline in measured]
    for target in targets:
        print(f"target {target.describe()}:")
        missing = [measured[name].unavailable for name in (target.implementation, target.baseline)
                   if measured[name].unavailable]
        if missing:
            print(f"  n/a (not measured: {'; '.join(missing)})")
            continue
        for shape, by_implementation in by_shape.items():
            if not {target.implementation, target.baseline} <= set(by_implementation):
                print(f"  {shape_name(shape):<20} {'n/a':>10} (not measured at this shape)")
                continue
            ours, baseline = by_implementation[target.implementation], by_implementation[target.baseline]
            alternated = alternated_times(target, shape, measured)
            value = ratio(alternated[1], alternated[0]) if alternated else metric(target.metric, ours, baseline)
            verdict = "n/a" if value is None else ("PASS" if target.passes(value) else "FAIL")
            all_pass &= verdict != "FAIL"
            source = (f" (alternated in one process: numba {alternated[0]:.4f} s, torch {alternated[1]:.4f} s)"
                      if alternated else "")
            print(f"  {shape_name(shape):<20} {'n/a' if value is None else f'{value:.2f}x':>10} {verdict}{source}")
    numba = measured.get("numba")
    if numba is not None and numba.scaling:
        print()
        all_pass &= report_limit(shapes, numba)
    return all_pass


def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Forward, backward, peak memory and parity of nnunetv2_msvmamba's selective-scan backends: on the "
                    "CPU the Numba kernels and the pure-PyTorch scan against mamba_ssm's selective_scan_ref and "
                    "the arithmetic limit; on CUDA the Triton scan "
                    "against the pure-PyTorch scan and mamba_ssm's fused kernel; with their targets.")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the scans run (default: cpu)")
    parser.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=None,
                        help="what to measure (default: " + "; ".join(
                            f"{' '.join(names)} on {device.upper() if device == 'cuda' else 'the CPU'}"
                            for device, names in DEFAULT_IMPLEMENTATIONS.items())
                        + "; triton on the CPU needs TRITON_INTERPRET=1 and is only a dry run)")
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
    parser.add_argument("--worker", nargs=3, metavar=("IMPLEMENTATION", "MODES", "SHAPES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.reference_backward_repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--repeats, --reference-backward-repeats and --threads must be at least 1")
    if args.worker and (args.worker[0] not in IMPLEMENTATIONS or not set(args.worker[1].split(",")) <= set(MODES)):
        parser.error(f"--worker: unknown implementation or mode in {args.worker[:2]}")
    args.implementations = tuple(args.implementations or DEFAULT_IMPLEMENTATIONS[args.device])
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_arguments(argv)
    if args.worker:
        implementation, modes, shapes = args.worker
        worker(implementation, modes.split(","), args.device,
               [tuple(int(size) for size in shape.split("x")) for shape in shapes.split(",")], args.repeats,
               args.reference_backward_repeats)
        return 0
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            fail("--device cuda", "PyTorch sees no CUDA device")
    shapes = QUICK_SHAPES if args.quick else (CUDA_SHAPES if args.device == "cuda" else CPU_SHAPES)
    cpu_at_start = f"{cpu_and_cores()}" + (f", load average {os.getloadavg()[0]:.1f}"
                                           if hasattr(os, "getloadavg") else "")
    measured, runtimes = measure_all(args, shapes, args.implementations)

    print(f"machine: {cpu_at_start} (at the start; other processes skew CPU timings)")
    print(f"runtime: {'; '.join(sorted(runtimes))}")
    print(f"d_state {D_STATE}; B, C (batch, n, L); D, z, delta_bias, softplus; float32; delta, z, B, C and the "
          f"output gradient strided along L as the mixer passes them. Times in seconds: best of "
          f"{args.repeats} run(s) (upstream's backward: of {args.reference_backward_repeats}); on a shared machine other "
          f"processes only ever add time.")
    isolation = ("each implementation runs in a fresh process," if args.quick or args.device == "cuda" else
                 "each implementation, shape and mode runs in a fresh process,")
    print(MEMORY_NOTE[args.device].format(isolation=isolation))
    print()
    all_pass = report(shapes, measured)
    return 1 if args.strict and not all_pass else 0


if __name__ == "__main__":
    sys.exit(main())
