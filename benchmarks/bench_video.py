"""Benchmark: whole echo loops through a trained nnU-Net model, frame by frame as before issue 20 against the
batched path, and against the network's batched forward alone (the limit), all in one run on one model.

The model is made for real: a small nnU-Net dataset of synthetic EchoNet-Dynamic frames (112x112, LV cavity),
nnU-Net's own `nnUNetv2_plan_and_preprocess -c 2d` and `nnUNetv2_train -tr nnUNetTrainerMSVMamba_Debug` (two
epochs of two iterations: speed does not depend on what the weights learned). The loops are synthetic EchoNet-
Dynamic AVIs read by msvmamba_predict_video's own reader. Measured per device (CPU, and CUDA when present), the
paths alternating round by round (ABBA) so that load on the machine hits all alike, median of the rounds:
  * per-frame path: nnU-Net's `predict_single_npy_array` once per frame (weights reloaded, sliding window set up,
    one frame per forward pass);
  * batched path: `nnunetv2_msvmamba.video.batched_prediction` (weights loaded once, the plans' preprocessing in a
    background thread, --batch-size frames per forward pass, nnU-Net's Gaussian weighting and export), without
    and with TTA (the mirrored copies in the same forward pass);
  * the limit: the network's forward alone on a batch of that many patches (times the mirrored copies with TTA),
    inference mode (autocast on CUDA), per frame;
  * the command: `msvmamba_predict_video` itself on the same loops and model, no TTA, in a fresh process each
    round: its whole run per frame (start-up, reading, overlays, plots and summaries included), and the seconds
    per frame it reports in video_summary.csv (prediction alone, frame-weighted over the loops);
then their ratios and the projection to EchoNet-Dynamic's TEST split (1,277 videos, ~223,000 frames), with and
without TTA. Targets (issue 20): CPU without TTA, batched path <= 1.2x its limit and >= 1.6x faster than the
per-frame path; with TTA, <= 1.3x its limit; CUDA, the TEST split projected under 30 minutes without TTA.
`--strict` exits with status 1 when one is missed.

    python benchmarks/bench_video.py                  # 3 loops of 48 frames, 3 rounds; a few minutes on 2 cores
    python benchmarks/bench_video.py --quick          # 1 loop of 8 frames, 1 round, no warm-up: a smoke run
    python benchmarks/bench_video.py --batch-sizes 1 2 4 8 16   # + the batched path and its limit per batch size
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from measure import cpu_and_cores, make_nnunet_folders, ratio, run_command_or_exit  # benchmarks/measure.py

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # measure this checkout, not an installed copy

DATASET_ID = 988
DATASET_NAME = f"Dataset{DATASET_ID:03d}_BenchVideo"
TRAINER = "nnUNetTrainerMSVMamba_Debug"
TRAINING_IMAGES = 6  # nnU-Net's five-fold split needs at least five
ECHONET_TEST_VIDEOS = 1277
ECHONET_TEST_FRAMES = 223_000
TARGETS = {  # (device type, TTA) -> bounds
    ("cpu", False): {"limit": 1.2, "speed-up": 1.6},
    ("cpu", True): {"limit": 1.3},
    ("cuda", False): {"projected minutes": 30.0},
    ("cuda", True): {"limit": 1.3},
}


# ---------------------------------------------------------------------------------------------- machine

def machine_description() -> str:
    import torch
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return f"{cpu_and_cores()}, torch {torch.__version__} with {torch.get_num_threads()} threads; {gpu}"


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min)"


# ---------------------------------------------------------------------------------------------- model and loops

def cavity_mask(video, frame: int) -> np.ndarray:
    """The LV cavity of a synthetic EchoNet video's frame, drawn as SyntheticVideo.frames draws it."""
    from dataset_conversion.echonet_synthetic import FRAME_SIZE
    rows, columns = np.mgrid[:FRAME_SIZE, :FRAME_SIZE].astype(float)
    lv = video.ventricle_at(frame)
    u = (columns - lv.centre_x) * math.cos(lv.angle) - (rows - lv.centre_y) * math.sin(lv.angle)
    v = (columns - lv.centre_x) * math.sin(lv.angle) + (rows - lv.centre_y) * math.cos(lv.angle)
    return ((u / lv.half_width) ** 2 + (v / lv.half_length) ** 2 <= 1).astype(np.uint8)


def write_training_dataset(raw: Path) -> None:
    """TRAINING_IMAGES synthetic EchoNet frames with their LV cavity, as a 2D nnU-Net raw dataset."""
    from dataset_conversion.common import write_image_2d
    from dataset_conversion.echonet_synthetic import random_release_videos
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    folder = raw / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    for index, video in enumerate(random_release_videos(TRAINING_IMAGES, n_frames=40, seed=1)):
        frame = index * 3
        write_image_2d(video.frames()[frame], (1.0, 1.0), folder / "imagesTr" / f"echo_{index:03d}_0000.nii.gz")
        write_image_2d(cavity_mask(video, frame), (1.0, 1.0), folder / "labelsTr" / f"echo_{index:03d}.nii.gz")
    generate_dataset_json(str(folder), {0: "US"}, {"background": 0, "LV": 1}, TRAINING_IMAGES, ".nii.gz",
                          dataset_name=DATASET_NAME)


def train_model(workspace: Path, device: str) -> Path:
    """Plans, preprocesses and trains (TRAINER, fold 0) with nnU-Net's commands; returns the model folder."""
    from nnunetv2_msvmamba.training.ext_trainer_path import trainer_folder
    folders = make_nnunet_folders(workspace)
    write_training_dataset(folders["nnUNet_raw"])
    environment = dict(os.environ, nnUNet_def_n_proc="1", **{name: str(path) for name, path in folders.items()})
    run_command_or_exit(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1"],
                        environment)
    run_command_or_exit(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", device],
                        dict(environment, nnUNet_extTrainer=str(trainer_folder()), nnUNet_n_proc_DA="0"))
    return folders["nnUNet_results"] / DATASET_NAME / f"{TRAINER}__nnUNetPlans__2d"


def write_loops(folder: Path, n_loops: int, n_frames: int) -> list[Path]:
    """Synthetic EchoNet-Dynamic AVIs (112x112 MJPG, as the release's)."""
    from dataset_conversion.echonet_synthetic import random_release_videos, write_avi
    folder.mkdir()
    paths = []
    for video in random_release_videos(n_loops, n_frames=max(n_frames, 100), seed=2):
        paths.append(folder / f"{video.name}.avi")
        write_avi(paths[-1], video.frames()[:n_frames], video.fps)
    return paths


# ---------------------------------------------------------------------------------------------- measuring

@dataclasses.dataclass
class Figures:
    """Seconds per frame on one device (medians over the rounds), and what they were measured with."""
    batch_size: int
    per_frame: Optional[float] = None  # predict_single_npy_array per frame, no TTA
    batched: Optional[float] = None  # the batched path, no TTA
    limit: Optional[float] = None  # the batched forward alone, no TTA
    batched_tta: Optional[float] = None
    limit_tta: Optional[float] = None
    command: Optional[float] = None  # msvmamba_predict_video's whole run, no TTA
    command_reported: Optional[float] = None  # the seconds per frame it reports in video_summary.csv


def synchronize(device) -> None:
    import torch
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def seconds(run: Callable[[], None], device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


class Workloads:
    """The paths to time on one device, each a function that processes every frame of the loops once."""

    def __init__(self, model: Path, loops: list, device: str, batch_size: Optional[int],
                 loops_folder: Optional[Path] = None):
        import torch
        from nnunetv2_msvmamba.video.batched_prediction import BatchedFramePredictor
        from nnunetv2_msvmamba.video.predict import load_predictor
        self.loops, self.device, self.model, self.loops_folder = loops, device, model, loops_folder
        self.reported: list[float] = []  # the command's own seconds per frame, one per run
        self.n_frames = sum(len(loop.frames) for loop in loops)
        with contextlib.redirect_stdout(sys.stderr):  # nnU-Net's messages, kept out of the figures
            self.plain = load_predictor(model, ["0"], "checkpoint_final.pth", device, False, 0.5)
            self.mirrored = load_predictor(model, ["0"], "checkpoint_final.pth", device, True, 0.5)
        self.batched = BatchedFramePredictor(self.plain, batch_size)
        self.batched_tta = BatchedFramePredictor(self.mirrored, batch_size)
        self.batch_size = self.batched.batch_size
        patch = tuple(self.plain.configuration_manager.patch_size)
        generator = torch.Generator().manual_seed(0)
        self.patches = torch.randn(self.batch_size, 1, *patch, generator=generator).to(device)
        self.copies_tta = 1 + len(self.batched_tta.mirror_axes)
        self.paths: dict[str, Callable[[], None]] = {
            "per_frame": self.per_frame, "batched": lambda: self.run_batched(self.batched),
            "limit": lambda: self.forward(1), "batched_tta": lambda: self.run_batched(self.batched_tta),
            "limit_tta": lambda: self.forward(self.copies_tta)}
        if loops_folder is not None:
            self.paths["command"] = self.run_command

    def per_frame(self) -> None:
        from nnunetv2_msvmamba.video.predict import predict_frames
        for loop in self.loops:
            predict_frames(self.plain, loop.frames, loop.spacing_rc, loop.name)

    def run_batched(self, predictor) -> None:
        for loop in self.loops:
            predictor.predict_frames(loop.frames, loop.spacing_rc)

    def forward(self, copies: int, batch_size: Optional[int] = None) -> None:
        """The network alone over as many patches as the batched path puts in a forward pass (`batch_size`
        frames, default the workloads' own), for every batch of the loops' frames (so that its time per frame is
        comparable)."""
        import torch
        batch_size = batch_size or self.batch_size
        network = self.batched.networks[0]
        inputs = self.patches[:1].repeat(copies * batch_size, 1, 1, 1)
        with torch.inference_mode(), self.batched.autocast():
            for loop in self.loops:
                for _ in range(math.ceil(len(loop.frames) / batch_size)):
                    network(inputs)

    def run_command(self) -> None:
        """msvmamba_predict_video on the loops' folder with this model, no TTA, into a fresh output folder;
        keeps the seconds per frame it reports (video_summary.csv, weighted by each loop's frames)."""
        import torch
        from nnunetv2_msvmamba.common.commands import command_path
        with tempfile.TemporaryDirectory(prefix="bench_video_command_") as output:
            command = [command_path("msvmamba_predict_video"), "-i", str(self.loops_folder), "-o", output,
                       "-m", str(self.model), "-f", "0", "-device", torch.device(self.device).type,
                       "--disable_tta", "--batch-size", str(self.batch_size)]
            # this checkout's package, and this process's thread count
            checkout_first = os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")])
            environment = dict(os.environ, PYTHONPATH=checkout_first, OMP_NUM_THREADS=str(torch.get_num_threads()))
            completed = subprocess.run(command, capture_output=True, text=True, env=environment)
            if completed.returncode != 0:
                raise SystemExit(f"error: msvmamba_predict_video exited {completed.returncode}:\n"
                                 f"{completed.stderr[-3000:]}")
            with open(Path(output) / "video_summary.csv", newline="") as summary:
                rows = list(csv.DictReader(summary))
        frames = sum(int(row["frames"]) for row in rows)
        self.reported.append(sum(float(row["seconds_per_frame"]) * int(row["frames"]) for row in rows) / frames)

    def per_frame_seconds(self, name: str) -> float:
        return seconds(self.paths[name], self.device) / self.n_frames


def measure(workloads: Workloads, names: list[str], rounds: int, warmup: int) -> Figures:
    from tqdm import tqdm
    times: dict[str, list[float]] = {name: [] for name in names}
    with tqdm(total=(rounds + warmup) * len(names), desc=f"timing on {workloads.device}", unit="run",
              file=sys.stderr) as progress:
        for round_index in range(warmup + rounds):
            for name in (names if round_index % 2 == 0 else names[::-1]):
                progress.set_postfix_str(name)
                elapsed = workloads.per_frame_seconds(name)
                if round_index >= warmup:
                    times[name].append(elapsed)
                progress.update()
    figures = Figures(workloads.batch_size, **{name: statistics.median(values) for name, values in times.items()})
    if workloads.reported:
        figures.command_reported = statistics.median(workloads.reported[warmup:] or workloads.reported)
    return figures


@dataclasses.dataclass
class BatchSizeFigures:
    """The batched path (no TTA) and its limit at one batch size, seconds per frame (medians over the rounds)."""
    batch_size: int
    batched: float
    limit: float


def sweep_batch_sizes(workloads: Workloads, sizes: list[int], rounds: int) -> list[BatchSizeFigures]:
    """The batched path and its limit at each batch size (no TTA), the sizes alternating round by round."""
    from nnunetv2_msvmamba.video.batched_prediction import BatchedFramePredictor
    predictors = {size: BatchedFramePredictor(workloads.plain, size) for size in sizes}
    runs = {(size, kind): (lambda size=size: workloads.run_batched(predictors[size])) if kind == "batched"
            else (lambda size=size: workloads.forward(1, size))
            for size in sizes for kind in ("batched", "limit")}
    times: dict[tuple[int, str], list[float]] = {key: [] for key in runs}
    for round_index in range(rounds + 1):  # the first round warms up
        for key in (list(runs) if round_index % 2 == 0 else list(runs)[::-1]):
            elapsed = seconds(runs[key], workloads.device) / workloads.n_frames
            if round_index > 0:
                times[key].append(elapsed)
    return [BatchSizeFigures(size, statistics.median(times[size, "batched"]), statistics.median(times[size, "limit"]))
            for size in sizes]


def report_batch_sizes(device: str, sweep: list[BatchSizeFigures]) -> None:
    print(f"{device}, no TTA, by batch size (the batched path and its limit, seconds per frame):")
    fastest = min(sweep, key=lambda figures: figures.batched)
    for figures in sweep:
        line(f"--batch-size {figures.batch_size}: batched / limit",
             f"{figures.batched:.4f} / {figures.limit:.4f} s/frame ({ratio(figures.batched, figures.limit):.2f}x)")
    print(f"  fastest batched path: --batch-size {fastest.batch_size}")
    print()


# ---------------------------------------------------------------------------------------------- report

def hours(seconds_per_frame: Optional[float]) -> str:
    if seconds_per_frame is None:
        return "n/a"
    total = seconds_per_frame * ECHONET_TEST_FRAMES
    return f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.1f} min"


def line(title: str, value: str) -> None:
    print(f"  {title:<58}{value:>14}")


def verdict(title: str, value: Optional[float], bound: float, at_most: bool, unit: str = "x") -> bool:
    passes = value is not None and (value <= bound if at_most else value >= bound)
    shown = "n/a" if value is None else f"{value:.2f}{unit}"
    print(f"  target {title} {'<=' if at_most else '>='} {bound:g}{unit}: {'PASS' if passes else 'FAIL'} ({shown})")
    return passes


def report(device: str, device_type: str, figures: Figures, copies_tta: int) -> bool:
    """Prints one device's figures, ratios, projections and target verdicts; True when none is missed."""
    batch = figures.batch_size
    all_pass = True
    print(f"{device}, no TTA:")
    line("per-frame path (predict_single_npy_array per frame)", f"{figures.per_frame:.4f} s/frame")
    line(f"batched path (--batch-size {batch})", f"{figures.batched:.4f} s/frame")
    line(f"batched forward alone, batch {batch} (the limit)", f"{figures.limit:.4f} s/frame")
    limit_ratio, speed_up = ratio(figures.batched, figures.limit), ratio(figures.per_frame, figures.batched)
    line("batched path / limit", f"{limit_ratio:.2f}x")
    line("speed-up of the batched path over the per-frame path", f"{speed_up:.2f}x")
    line("EchoNet-Dynamic TEST, per-frame path", hours(figures.per_frame))
    line("EchoNet-Dynamic TEST, batched path", hours(figures.batched))
    if figures.command is not None:
        line("msvmamba_predict_video, whole run (start-up included)", f"{figures.command:.4f} s/frame")
        line("msvmamba_predict_video, as it reports (video_summary.csv)", f"{figures.command_reported:.4f} s/frame")
        line("msvmamba_predict_video as it reports / limit", f"{ratio(figures.command_reported, figures.limit):.2f}x")
        line("EchoNet-Dynamic TEST, msvmamba_predict_video as it reports", hours(figures.command_reported))
    targets = TARGETS.get((device_type, False), {})
    if "limit" in targets:
        all_pass &= verdict("batched path / limit", limit_ratio, targets["limit"], True)
    if "speed-up" in targets:
        all_pass &= verdict("speed-up over the per-frame path", speed_up, targets["speed-up"], False)
    if "projected minutes" in targets:
        minutes = figures.batched * ECHONET_TEST_FRAMES / 60
        all_pass &= verdict("EchoNet-Dynamic TEST projected", minutes, targets["projected minutes"], True, " min")
    print(f"{device}, TTA ({copies_tta} mirrored copies of each frame in the same forward pass):")
    line(f"batched path (--batch-size {batch})", f"{figures.batched_tta:.4f} s/frame")
    line(f"batched forward alone, batch {batch} x {copies_tta} copies (the limit)", f"{figures.limit_tta:.4f} s/frame")
    tta_ratio = ratio(figures.batched_tta, figures.limit_tta)
    line("batched path / limit", f"{tta_ratio:.2f}x")
    line("EchoNet-Dynamic TEST, batched path with TTA", hours(figures.batched_tta))
    targets = TARGETS.get((device_type, True), {})
    if "limit" in targets:
        all_pass &= verdict("batched path with TTA / limit", tta_ratio, targets["limit"], True)
    print()
    return all_pass


# ---------------------------------------------------------------------------------------------- command

def parse_arguments(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Seconds per frame of whole-echo-loop prediction: nnU-Net's predict_single_npy_array per frame "
                    "(before issue 20) against the batched path of msvmamba_predict_video and the network's batched "
                    "forward alone (the limit), without and with TTA; projected to EchoNet-Dynamic's TEST split; "
                    "with the targets of issue 20.")
    parser.add_argument("--quick", action="store_true", help="1 loop of 8 frames, 1 round, no warm-up: a smoke run")
    parser.add_argument("--loops", type=int, default=3, help="synthetic EchoNet-Dynamic AVIs (default 3)")
    parser.add_argument("--frames", type=int, default=48, help="frames per loop (default 48)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, median reported (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="frames per forward pass (default: the batched path's default for the device)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, metavar="B",
                        help="also time the batched path and its limit (no TTA) at each of these batch sizes")
    parser.add_argument("--no-command", action="store_true",
                        help="do not time msvmamba_predict_video itself (it runs in a fresh process each round)")
    parser.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                        help="devices to measure on (default: cpu, and cuda when PyTorch sees one)")
    parser.add_argument("--threads", type=int, default=None,
                        help="PyTorch CPU threads (default: PyTorch's default, one per available core)")
    parser.add_argument("--note", default=None, help="a line about the machine to print with the results")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    if min(args.loops, args.frames, args.rounds) < 1 or args.warmup < 0 or (
            args.batch_size is not None and args.batch_size < 1) or min(args.batch_sizes or [1]) < 1 or (
            args.threads is not None and args.threads < 1):
        parser.error("--loops, --frames, --rounds, --batch-size, --batch-sizes and --threads must be at least 1, "
                     "--warmup at least 0")
    if args.quick:
        args.loops, args.frames, args.rounds, args.warmup = 1, 8, 1, 0
    return args


def default_devices() -> list[str]:
    import torch
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_arguments(argv)
    import torch
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from nnunetv2_msvmamba.video.sources import read_loop

    devices = args.devices or default_devices()
    with tempfile.TemporaryDirectory(prefix="bench_video_") as workspace:
        train_device = "cuda" if "cuda" in devices else "cpu"
        print(f"training: nnUNetv2_plan_and_preprocess + nnUNetv2_train -tr {TRAINER} on {TRAINING_IMAGES} synthetic "
              f"EchoNet frames ({train_device}) ...", file=sys.stderr, flush=True)
        model = train_model(Path(workspace), train_device)
        loops_folder = Path(workspace) / "loops"
        loops = [read_loop(path) for path in write_loops(loops_folder, args.loops, args.frames)]
        print(f"machine: {machine_description()}")
        if args.note:
            print(f"note: {args.note}")
        print(f"at start: {load_line()}")
        print(f"model: {TRAINER} '2d' (nnUNetPlans from {TRAINING_IMAGES} synthetic EchoNet-Dynamic frames), fold 0")
        rows, columns = loops[0].frames.shape[1:]
        print(f"loops: {len(loops)} synthetic EchoNet-Dynamic AVI(s) of {args.frames} frames, {rows}x{columns}, "
              f"{len(loops) * args.frames} frames in all")
        print(f"projections: EchoNet-Dynamic TEST = {ECHONET_TEST_VIDEOS:,} videos, {ECHONET_TEST_FRAMES:,} frames")
        print(f"times: seconds per frame over all the loops' frames, median of {args.rounds} round(s) after "
              f"{args.warmup} warm-up round(s), the paths alternating (ABBA)")
        print()
        all_pass = True
        for device in devices:
            workloads = Workloads(model, loops, device, args.batch_size, None if args.no_command else loops_folder)
            patch = "x".join(map(str, workloads.plain.configuration_manager.patch_size))
            print(f"{device}: patch {patch}, batch size {workloads.batch_size} "
                  f"({'--batch-size' if args.batch_size else 'the default for ' + torch.device(device).type})")
            figures = measure(workloads, list(workloads.paths), args.rounds, args.warmup)
            all_pass &= report(device, torch.device(device).type, figures, workloads.copies_tta)
            if args.batch_sizes:
                report_batch_sizes(device, sweep_batch_sizes(workloads, args.batch_sizes, args.rounds))
        print(f"at end: {load_line()}")
    return 1 if args.strict and not all_pass else 0


if __name__ == "__main__":
    sys.exit(main())
