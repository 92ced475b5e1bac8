"""Benchmark: MSV-Mamba against stock nnU-Net's ResEnc-M network, built from the same real 2D plans.

The plans are made for real: a tiny raw dataset (4 echo-like 256x256 images, CAMUS labels) in a temporary
folder, then nnU-Net's own `nnUNetv2_extract_fingerprint` and `nnUNetv2_plan_experiment -pl
nnUNetPlannerResEncM`; both networks come from `nnUNetResEncUNetMPlans.json`'s `2d` configuration, the stock
one through nnU-Net's `get_network_from_plans` (as nnUNetTrainer builds it), MSV-Mamba through
`msvmamba_from_plans` (as nnUNetTrainerMSVMamba builds it). Measured in the same run, per device (CPU, and CUDA
when present):
  * training step: forward + each trainer's deep-supervision DC+CE loss + backward + gradient clipping (12) +
    SGD step (lr 1e-2, momentum 0.99, nesterov, weight decay 3e-5), as nnUNetTrainer.train_step; under fp16
    autocast with a GradScaler on CUDA, like nnU-Net;
  * inference: forward of the full-resolution map only, eval mode, no grad (autocast on CUDA);
  * peak memory of one training step and of one inference;
with MSV-Mamba twice (`--placements`): the default LMS placement (nnUNetTrainerMSVMamba's) and LMS on every decoder
stage (nnUNetTrainerMSVMambaLMSEveryStage's), alternating the networks (ABBA order) so that a busy machine slows
all alike, median of the repeats after a warm-up. Prints the figures, the ratios MSV-Mamba / stock and PASS/FAIL
for the targets: on the CPU (issue 22, the Numba scan) train step and inference <= 1.2x stock with the default
placement, train step <= 2.5x with LMS on every stage; on CUDA (issue 13, AMP) train step and inference <= 1.3x with
the default placement, train step <= 2x with LMS on every stage. Where LMS on every stage costs <= 2x stock on the
CPU, it says so: the case for the paper's every-stage placement as the default (which also waits for GPU figures).
The selective scan runs on the backend `auto` picks (the Numba kernels on the CPU when numba imports; printed
with the figures); MSVMAMBA_SSM_BACKEND=torch measures the pure-PyTorch scan instead. `--strict` exits with
status 1 when a target is missed.

    python benchmarks/bench_network.py                 # 256x256 plans, CPU (+ CUDA when present); minutes
    python benchmarks/bench_network.py --quick         # 32x32 plans, 1 repeat: a smoke run
    python benchmarks/bench_network.py --profile       # also: where MSV-Mamba's training step spends its time
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from measure import cpu_and_cores, make_nnunet_folders, peak_rise_mib, ratio, run_command_or_exit  # see measure.py

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # measure this checkout, not an installed copy

FULL_IMAGE_SIZE = 256
QUICK_IMAGE_SIZE = 32
N_IMAGES = 4
DATASET_ID = 987
PLANNER = "nnUNetPlannerResEncM"
PLANS_NAME = "nnUNetResEncUNetMPlans"
CONFIGURATION = "2d"
LABELS = {"background": 0, "LV_cavity": 1, "LV_myocardium": 2, "left_atrium": 3}  # CAMUS
PLACEMENTS = {"default": "msvmamba", "every-stage": "msvmamba_every_stage"}  # --placements -> network name
NETWORK_TITLES = {"stock": "stock ResEnc-M", "msvmamba": "MSV-Mamba",
                  "msvmamba_every_stage": "MSV-Mamba, LMS on every stage"}
# the most a network may cost relative to the stock one, per device type, network and mode
TARGETS = {
    ("cpu", "msvmamba"): {"train": 1.2, "inference": 1.2},  # issue 22 (the Numba scan)
    ("cpu", "msvmamba_every_stage"): {"train": 2.5},
    ("cuda", "msvmamba"): {"train": 1.3, "inference": 1.3},  # issue 13, under AMP
    ("cuda", "msvmamba_every_stage"): {"train": 2.0},
}
MODES = ("train", "inference")
# LMS on every stage at most this costly against stock on the CPU: the case for making it the default (issue 22)
EVERY_STAGE_DEFAULT_CASE = 2.0
CPU_MEMORY_NOTE = (
    "CPU peak memory: each network and mode in a fresh process; the rise of the process's peak resident set size\n"
    "(Linux VmHWM, reset through /proc/self/clear_refs) during its first step over its resident size just before,\n"
    "network, optimizer and inputs already built, so it counts activations, gradients and SGD momentum (made at\n"
    "the first step) and whatever the allocator kept. CUDA: torch.cuda.max_memory_allocated over the allocated\n"
    "memory before the step.")


# ---------------------------------------------------------------------------------------------- machine

def machine_description() -> str:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return f"{cpu_and_cores()}, torch {torch.__version__} with {torch.get_num_threads()} threads; {gpu}"


# ---------------------------------------------------------------------------------------------- plans

def echo_like_image(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a cavity (1) inside a myocardium ring (2) above an atrium (3); labels as CAMUS."""
    rows, columns = np.indices((size, size), dtype=np.float32) / size
    cavity = (rows - 0.4) ** 2 / 0.06 + (columns - 0.5) ** 2 / 0.02
    label = np.zeros((size, size), np.uint8)
    label[cavity < 1.6] = 2
    label[cavity < 1] = 1
    label[((rows - 0.8) ** 2 + (columns - 0.5) ** 2 < 0.012) & (label == 0)] = 3
    image = np.choose(label, [10.0, 20.0, 90.0, 25.0]) + rng.normal(0, 12, (size, size))
    return image.astype(np.float32), label


def write_raw_dataset(raw: Path, size: int) -> None:
    """nnU-Net raw dataset DatasetNNN_BenchEcho: N_IMAGES 2D NIfTI images with labels and dataset.json."""
    from dataset_conversion.common import write_image_2d
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    folder = raw / f"Dataset{DATASET_ID:03d}_BenchEcho"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for index in range(N_IMAGES):
        image, label = echo_like_image(size, rng)
        write_image_2d(image, (0.3, 0.3), folder / "imagesTr" / f"echo_{index:03d}_0000.nii.gz")
        write_image_2d(label, (0.3, 0.3), folder / "labelsTr" / f"echo_{index:03d}.nii.gz")
    generate_dataset_json(str(folder), {0: "US"}, LABELS, N_IMAGES, ".nii.gz", dataset_name=folder.name)


def make_plans(workspace: Path, size: int) -> Path:
    """Runs nnU-Net's fingerprint extraction and ResEnc-M planner on a fresh raw dataset; returns the
    preprocessed dataset folder, which holds the plans and dataset.json."""
    folders = make_nnunet_folders(workspace)
    write_raw_dataset(folders["nnUNet_raw"], size)
    environment = dict(os.environ, **{name: str(path) for name, path in folders.items()})
    run_command_or_exit(["nnUNetv2_extract_fingerprint", "-d", str(DATASET_ID), "-np", "1"], environment)
    run_command_or_exit(["nnUNetv2_plan_experiment", "-d", str(DATASET_ID), "-pl", PLANNER], environment)
    return folders["nnUNet_preprocessed"] / f"Dataset{DATASET_ID:03d}_BenchEcho"


# ---------------------------------------------------------------------------------------------- workloads

@dataclasses.dataclass
class Setup:
    """What both networks are built and fed from."""
    preprocessed: Path
    batch_size: Optional[int]  # None: the plans' batch size
    device: str
    msvmamba_options: dict
    networks: tuple[str, ...] = ("stock", "msvmamba")
    compile: bool = False  # torch.compile every network, as nnU-Net's trainer does on CUDA


def load_configuration(preprocessed: Path):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    plans_manager = PlansManager(str(preprocessed / f"{PLANS_NAME}.json"))
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    configuration = plans_manager.get_configuration(CONFIGURATION)
    label_manager = plans_manager.get_label_manager(dataset_json)
    return configuration, len(dataset_json["channel_names"]), label_manager.num_segmentation_heads


def build_network(name: str, setup: Setup):
    """The network as its trainer builds it: deep supervision on (the inference measurement turns it off)."""
    configuration, input_channels, classes = load_configuration(setup.preprocessed)
    if name == "stock":
        from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
        return get_network_from_plans(configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
                                      configuration.network_arch_init_kwargs_req_import, input_channels, classes,
                                      allow_init=True, deep_supervision=True)
    from nnunetv2_msvmamba.training.network_from_plans import msvmamba_from_plans
    options = dict(setup.msvmamba_options)
    if name == "msvmamba_every_stage":
        options["lms_max_positions"] = None  # as nnUNetTrainerMSVMambaLMSEveryStage
    return msvmamba_from_plans(configuration, input_channels, classes, True, **options)


def deep_supervision_loss(name: str, n_outputs: int, batch_dice: bool):
    """Each trainer's loss: nnU-Net's DC+CE over the outputs, weights halving per scale; the stock trainer zeroes
    the lowest output's weight, nnUNetTrainerMSVMamba keeps every decoder layer."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    loss = DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                          weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    weights = np.array([1 / 2 ** i for i in range(n_outputs)])
    if name == "stock":
        weights[-1] = 0
    return DeepSupervisionWrapper(loss, weights / weights.sum())


class Workload:
    """One network with its optimizer, loss, inputs and targets; `train_step` and `infer` as nnU-Net runs them."""

    def __init__(self, name: str, setup: Setup):
        import torch
        self.name = name
        self.device = torch.device(setup.device)
        configuration, input_channels, classes = load_configuration(setup.preprocessed)
        self.batch_size = setup.batch_size or configuration.batch_size
        self.patch_size = tuple(configuration.patch_size)
        self.network = build_network(name, setup).to(self.device)
        # nnUNetTrainer compiles the network module itself; the first calls (the warm-up rounds) compile
        self.forward = torch.compile(self.network) if setup.compile else self.network
        self.parameters = sum(p.numel() for p in self.network.parameters())
        self.optimizer = torch.optim.SGD(self.network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99,
                                         nesterov=True)
        self.grad_scaler = torch.amp.GradScaler("cuda") if self.device.type == "cuda" else None
        n_outputs = len(configuration.pool_op_kernel_sizes) - 1
        self.loss = deep_supervision_loss(name, n_outputs, configuration.batch_dice)
        generator = torch.Generator().manual_seed(0)
        self.data = torch.randn(self.batch_size, input_channels, *self.patch_size, generator=generator).to(self.device)
        target = torch.randint(0, classes, (self.batch_size, 1, *self.patch_size), generator=generator).float()
        self.targets = [torch.nn.functional.interpolate(target, size=size, mode="nearest").to(self.device)
                        for size in output_sizes(self.patch_size, configuration.pool_op_kernel_sizes)]

    def autocast(self):
        import torch
        return torch.autocast("cuda", enabled=True) if self.device.type == "cuda" else contextlib.nullcontext()

    def train_step(self) -> None:
        import torch
        self.network.train()
        self.network.decoder.deep_supervision = True
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.loss(self.forward(self.data), self.targets)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()

    def infer(self) -> None:
        import torch
        self.network.eval()
        self.network.decoder.deep_supervision = False
        with torch.no_grad(), self.autocast():
            self.forward(self.data)

    def run(self, mode: str) -> None:
        self.train_step() if mode == "train" else self.infer()

    def timed(self, mode: str) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        self.run(mode)
        synchronize(self.device)
        return time.perf_counter() - start

    def cuda_peak_mib(self, mode: str) -> float:
        import torch
        synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.run(mode)
        synchronize(self.device)
        return (torch.cuda.max_memory_allocated(self.device) - before) / 2 ** 20


def output_sizes(patch_size: tuple[int, ...], pool_kernels: list) -> list[tuple[int, ...]]:
    """Spatial sizes of the deep-supervision outputs, highest resolution first (one per decoder stage)."""
    sizes, current = [], tuple(patch_size)
    for stride in pool_kernels[:-1]:
        current = tuple(c // s for c, s in zip(current, stride))
        sizes.append(current)
    return sizes


def synchronize(device) -> None:
    if device.type == "cuda":
        import torch
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- measuring

@dataclasses.dataclass
class Figures:
    """One network on one device: medians in seconds, memory in MiB."""
    parameters: int
    train_s: float
    inference_s: float
    train_peak_mib: Optional[float] = None
    inference_peak_mib: Optional[float] = None


def measure_times(setup: Setup, repeats: int, warmup: int) -> dict[str, Figures]:
    """Both networks in this process, alternating ABBA so that load on the machine hits both alike."""
    from tqdm import tqdm
    networks = setup.networks
    workloads = {name: Workload(name, setup) for name in networks}
    times: dict[tuple[str, str], list[float]] = {(n, m): [] for n in networks for m in MODES}
    with tqdm(total=(warmup + repeats) * len(networks) * len(MODES), desc=f"timing on {setup.device}",
              unit="step", file=sys.stderr) as progress:
        for round_index in range(warmup + repeats):
            order = networks if round_index % 2 == 0 else networks[::-1]
            for mode in MODES:
                for name in order:
                    progress.set_postfix_str(f"{name} {mode}")
                    elapsed = workloads[name].timed(mode)
                    if round_index >= warmup:
                        times[name, mode].append(elapsed)
                    progress.update()
    figures = {name: Figures(workloads[name].parameters, statistics.median(times[name, "train"]),
                             statistics.median(times[name, "inference"])) for name in networks}
    if setup.device.startswith("cuda"):
        for name in networks:
            figures[name].train_peak_mib = workloads[name].cuda_peak_mib("train")
            figures[name].inference_peak_mib = workloads[name].cuda_peak_mib("inference")
    return figures


def cpu_peak_worker(name: str, mode: str, setup: Setup) -> None:
    workload = Workload(name, setup)
    print(json.dumps({"peak_mib": peak_rise_mib(lambda: workload.run(mode))}))


def measure_cpu_peaks(setup: Setup, figures: dict[str, Figures], threads: Optional[int], parallel: int) -> None:
    """Each network and mode in a fresh process, `parallel` at a time (memory does not mind sharing the cores)."""
    from concurrent.futures import ThreadPoolExecutor
    from tqdm import tqdm

    def worker(job: tuple[str, str]) -> Optional[float]:
        name, mode = job
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", name, mode,
                   "--preprocessed", str(setup.preprocessed), "--msvmamba-options", json.dumps(setup.msvmamba_options)]
        if setup.batch_size:
            command += ["--batch-size", str(setup.batch_size)]
        environment = dict(os.environ)
        if threads is not None:
            environment.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        completed = subprocess.run(command, capture_output=True, text=True, env=environment)
        if completed.returncode != 0:
            raise SystemExit(f"error: {name} {mode}: the memory-measuring process failed:\n{completed.stderr[-3000:]}")
        return json.loads(completed.stdout.strip().splitlines()[-1])["peak_mib"]

    jobs = [(name, mode) for name in setup.networks for mode in MODES]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        peaks = list(tqdm(pool.map(worker, jobs), total=len(jobs), desc="peak memory (CPU)", unit="process",
                          file=sys.stderr))
    for (name, mode), peak in zip(jobs, peaks):
        setattr(figures[name], f"{mode}_peak_mib", peak)


# ---------------------------------------------------------------------------------------------- report

def cell(value: Optional[float], unit: str) -> str:
    if value is None:
        return "n/a"
    return {"M": f"{value / 1e6:.2f} M", "s": f"{value:.3f} s", "MiB": f"{value:.0f} MiB", "x": f"{value:.2f}x"}[unit]


def report(device: str, device_type: str, figures: dict[str, Figures]) -> bool:
    """Prints, for one device, a table per MSV-Mamba placement against the stock network, and the verdicts of the
    targets set for that device type; True when none is missed."""
    rows = [("parameters", "parameters", "M"), ("train step", "train_s", "s"), ("inference", "inference_s", "s"),
            ("peak memory, train step", "train_peak_mib", "MiB"),
            ("peak memory, inference", "inference_peak_mib", "MiB")]
    stock = figures["stock"]
    all_pass = True
    print(f"{device}:")
    for name, figure in figures.items():
        if name == "stock":
            continue
        print(f"  {'':<26}{NETWORK_TITLES['stock']:>16}{NETWORK_TITLES[name]:>31}{'MSV-Mamba / stock':>20}")
        for title, field, unit in rows:
            a, b = getattr(stock, field), getattr(figure, field)
            print(f"  {title:<26}{cell(a, unit):>16}{cell(b, unit):>31}{cell(ratio(b, a), 'x'):>20}")
        targets = TARGETS.get((device_type, name), {})
        for mode, bound in targets.items():
            value = ratio(getattr(figure, f"{mode}_s"), getattr(stock, f"{mode}_s"))
            passes = value <= bound
            all_pass &= passes
            title = {"train": "train step", "inference": "inference "}[mode]
            print(f"  target {title} <= {bound}x stock: {'PASS' if passes else 'FAIL'} ({value:.2f}x)")
        if not targets:
            print(f"  no target for {NETWORK_TITLES[name]} on {device_type}")
        if device_type == "cpu" and name == "msvmamba_every_stage":
            value = ratio(figure.train_s, stock.train_s)
            verdict = ("the case for the paper's every-stage placement as the default (waits for GPU figures too)"
                       if value is not None and value <= EVERY_STAGE_DEFAULT_CASE else "the default stays")
            print(f"  every stage within {EVERY_STAGE_DEFAULT_CASE}x stock (train step {cell(value, 'x')}): {verdict}")
        print()
    return all_pass


def describe_plans(setup: Setup) -> str:
    configuration, input_channels, classes = load_configuration(setup.preprocessed)
    batch = setup.batch_size or configuration.batch_size
    kwargs = configuration.network_arch_init_kwargs
    source = "--batch-size" if setup.batch_size else "the plans'"
    return (f"plans: {PLANS_NAME} '{CONFIGURATION}' from {PLANNER} on {N_IMAGES} images; patch "
            f"{'x'.join(map(str, configuration.patch_size))}, batch {batch} ({source}), {input_channels} input "
            f"channel(s), {classes} classes; {kwargs['n_stages']} stages, features {kwargs['features_per_stage']}, "
            f"blocks {kwargs['n_blocks_per_stage']}")


def profile_msvmamba(setup: Setup, name: str, rows: int = 20) -> None:
    """One training step of the MSV-Mamba network `name` (a placement's) under torch.profiler: forward time per
    component (record_function ranges from hooks) and the operators with the most self time, backward included."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    workload = Workload(name, setup)
    workload.train_step()  # warm-up
    network = workload.network
    components = {"encoder": network.encoder, "skip fusion": network.skip_fusion}
    for index, (stage, lms) in enumerate(zip(network.decoder.stages, network.decoder.lms)):
        components[f"decoder {index} convs"] = stage
        if not isinstance(lms, torch.nn.Identity):
            components[f"decoder {index} LMS pixel windows"] = lms.pixel_mamba
            for factor, mamba in zip(lms.pool_factors, lms.patch_mambas):
                components[f"decoder {index} LMS patch /{factor}"] = mamba
    ranges: dict[torch.nn.Module, list] = {}
    handles = []
    for title, module in components.items():
        if module is None:
            continue

        def enter(module, inputs, title=title):
            ranges.setdefault(module, []).append(record_function(f"## {title}"))
            ranges[module][-1].__enter__()

        def leave(module, inputs, output):
            ranges[module].pop().__exit__(None, None, None)
        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if workload.device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        start = time.perf_counter()
        workload.train_step()
        synchronize(workload.device)
        total = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    events = profiler.key_averages()
    print(f"profile of one {NETWORK_TITLES[name]} training step on {setup.device} ({total:.2f} s under the "
          f"profiler):")
    print("  forward time per component (CPU total, ms):")
    for event in sorted((e for e in events if e.key.startswith("## ")), key=lambda e: -e.cpu_time_total):
        print(f"    {event.key[3:]:<34}{event.cpu_time_total / 1e3:>10.1f}")
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows))


# ---------------------------------------------------------------------------------------------- command

def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training step, inference time and peak memory of MSV-Mamba against stock nnU-Net's ResEnc-M "
                    "network from the same real nnUNetPlannerResEncM 2D plans, with the default and the every-stage "
                    "LMS placement; on CUDA under AMP (fp16 autocast + GradScaler) as nnU-Net trains; with the "
                    "targets of issues 22 (CPU) and 13 (CUDA).")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_IMAGE_SIZE}x{QUICK_IMAGE_SIZE} plans, batch 1 (unless --batch-size), 1 repeat, "
                             f"no warm-up: a smoke run")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions, median reported (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the plans' batch size")
    parser.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                        help="devices to measure on (default: cpu, and cuda when PyTorch sees one)")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch CPU threads (default: PyTorch's default, one per available core)")
    parser.add_argument("--placements", nargs="+", choices=tuple(PLACEMENTS), default=list(PLACEMENTS),
                        help="MSV-Mamba LMS placements to measure against the stock network: 'default' "
                             "(nnUNetTrainerMSVMamba's) and 'every-stage' (nnUNetTrainerMSVMambaLMSEveryStage's; "
                             "slow on a CPU); default: both")
    parser.add_argument("--msvmamba-options", default="{}", metavar="JSON",
                        help="MSVMambaUNet keyword arguments, e.g. '{\"lms_stages\": [0, 1, 2, 3]}' (default: none, "
                             "nnUNetTrainerMSVMamba's; '{\"lms_max_positions\": null}' puts LMS on every stage)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every network first, as nnUNetTrainer does on CUDA (nnUNet_compile); "
                             "compilation happens in the warm-up rounds, so give it --warmup 2")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one training step of each MSV-Mamba placement measured, per device, "
                             "with torch.profiler")
    parser.add_argument("--note", default=None, help="a line about the machine to print with the results")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    parser.add_argument("--memory-worker", nargs=2, metavar=("NETWORK", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--preprocessed", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or (args.batch_size is not None and args.batch_size < 1) or (
            args.threads is not None and args.threads < 1):
        parser.error("--repeats, --batch-size and --threads must be at least 1, --warmup at least 0")
    try:
        args.msvmamba_options = json.loads(args.msvmamba_options)
    except json.JSONDecodeError as error:
        parser.error(f"--msvmamba-options: not JSON ({error})")
    if not isinstance(args.msvmamba_options, dict):
        parser.error("--msvmamba-options: must be a JSON object")
    if args.quick:
        args.repeats, args.warmup = 1, 0
        args.batch_size = args.batch_size or 1
    return args


def default_devices() -> list[str]:
    import torch
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min)"


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_arguments(argv)
    import torch
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        cpu_peak_worker(*args.memory_worker, Setup(args.preprocessed, args.batch_size, "cpu", args.msvmamba_options))
        return 0
    from nnunetv2_msvmamba.ssm.backend import resolve_backend

    devices = args.devices or default_devices()
    with tempfile.TemporaryDirectory(prefix="bench_network_") as workspace:
        size = QUICK_IMAGE_SIZE if args.quick else FULL_IMAGE_SIZE
        print(f"planning: nnUNetv2_extract_fingerprint + nnUNetv2_plan_experiment -pl {PLANNER} on {N_IMAGES} "
              f"{size}x{size} images ...", file=sys.stderr, flush=True)
        preprocessed = make_plans(Path(workspace), size)
        print(f"machine: {machine_description()}")
        if args.note:
            print(f"note: {args.note}")
        print(f"at start: {load_line()}")
        networks = ("stock", *dict.fromkeys(PLACEMENTS[placement] for placement in args.placements))
        base = Setup(preprocessed, args.batch_size, "cpu", args.msvmamba_options, networks, args.compile)
        print(describe_plans(base))
        if args.msvmamba_options:
            print(f"MSV-Mamba options: {args.msvmamba_options}")
        if args.compile:
            print("every network torch.compile'd (default mode), the selective scan an opaque custom op; compile "
                  "time falls in the warm-up rounds")
        print(f"times: median of {args.repeats} after {args.warmup} warm-up round(s), the networks alternating "
              f"(ABBA); train step = forward + deep-supervision DC+CE loss + backward + clip + SGD(lr 1e-2, momentum "
              f"0.99, nesterov, weight decay 3e-5), on CUDA under fp16 autocast with a GradScaler as nnU-Net trains; "
              f"inference = full-resolution output, eval, no grad (autocast on CUDA)")
        print(CPU_MEMORY_NOTE)
        print()
        all_pass = True
        for device in devices:
            setup = dataclasses.replace(base, device=device)
            figures = measure_times(setup, args.repeats, args.warmup)
            if device == "cpu" and not args.compile:  # the memory workers would measure compilation
                measure_cpu_peaks(setup, figures, args.threads, parallel=4 if args.quick else 2)
            backend = resolve_backend(torch.device(device))
            all_pass &= report(f"{device} (selective scan backend: {backend})", torch.device(device).type, figures)
            if args.profile:
                for name in setup.networks[1:]:
                    profile_msvmamba(setup, name)
        print(f"at end: {load_line()}")
    return 1 if args.strict and not all_pass else 0


if __name__ == "__main__":
    sys.exit(main())
