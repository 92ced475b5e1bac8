"""`msvmamba_demo`'s command line: parse and check the options, run the pipeline's steps, print the report."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from nnunetv2.configuration import default_num_processes

from dataset_conversion.synthetic_camus import FIELD_DEPTH_MM, MIN_IMAGE_SIDE
from nnunetv2_msvmamba.common.arguments import positive_int
from nnunetv2_msvmamba.training.trainers import DemoSchedule
from .report import report
from .runner import DemoError, DemoState, run_steps
from .steps import DemoPaths, build_steps, check_dataset_is_ours, subprocess_env

DEFAULT_OUTPUT = Path("demo_output")
DEFAULT_PATIENTS = 30
MIN_PATIENTS = 6  # 10 % validation and 20 % testing, rounded, give at least one patient each
DEFAULT_SIZE = (64, 64)
DEFAULT_DATASET_ID = 601


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msvmamba_demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The whole product in one command, on synthetic echocardiograms (no registration-gated data "
                    "needed):\n"
                    "  1. msvmamba_make_synthetic_camus  synthetic patients in the CAMUS 2023 layout\n"
                    "  2. msvmamba_convert_camus         -> nnU-Net raw dataset Dataset<ID>_CAMUS\n"
                    "  3. nnUNetv2_plan_and_preprocess   -c 2d\n"
                    "  4. nnUNetv2_train                 MSV-Mamba and stock nnU-Net on the same short schedule\n"
                    "  5. nnUNetv2_predict               the test patients (imagesTs) with both\n"
                    "  6. msvmamba_evaluate              both against labelsTs: table, summary.md, boxplot.png\n"
                    "  7. msvmamba_predict_video         a test patient's 2CH and 4CH half sequences, every frame "
                    "with\n"
                    "                                    MSV-Mamba: ED/ES frames, EF, volume curves, overlay videos\n"
                    "  8. msvmamba_clinical              EDV, ESV and EF of the test patients, both models against "
                    "the\n"
                    "                                    ground truth and the Info EF: tables, Bland-Altman and "
                    "scatter plots\n"
                    "Each step's output is shown and kept in OUT/logs/. Running it again reuses every step that "
                    "finished with the same settings (--fresh redoes all).",
        epilog="Folders: everything goes under OUT: synthetic_camus/, nnUNet_raw/, nnUNet_preprocessed/, "
               "nnUNet_results/, predictions/, evaluation/, clinical/, video/, logs/. Your own nnUNet_raw/"
               "nnUNet_preprocessed/nnUNet_results environment variables are ignored, so the demo never touches "
               "your nnU-Net data, unless you pass --use-nnunet-env. The defaults finish in about 10-20 minutes on "
               "2 CPU cores. With a GPU, scale up, e.g.: msvmamba_demo --device cuda --patients 200 --size 256 224 "
               "--epochs 100 --iterations 250")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, metavar="OUT",
                        help="output folder (default: ./%(default)s)")
    parser.add_argument("--patients", type=positive_int, default=DEFAULT_PATIENTS, metavar="N",
                        help="synthetic patients; 70%% train, 10%% validate, 20%% test (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=list(DEFAULT_SIZE), metavar=("H", "W"),
                        help="image rows and columns (default: %(default)s; training time grows with H x W). The "
                             "hearts are life-size at any size: the field of view is "
                             f"{FIELD_DEPTH_MM:.0f} mm deep (pixel spacing {FIELD_DEPTH_MM:.0f} mm / H; more for "
                             "images narrower than 3/4 of their height)")
    parser.add_argument("--epochs", type=positive_int, default=DemoSchedule.epochs, metavar="E",
                        help="training epochs of both models (default: %(default)s)")
    parser.add_argument("--iterations", type=positive_int, default=DemoSchedule.iterations_per_epoch, metavar="I",
                        help="training iterations per epoch (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu",
                        help="device for training and prediction (default: %(default)s)")
    parser.add_argument("-d", "--dataset-id", type=int, default=DEFAULT_DATASET_ID, metavar="ID",
                        help="nnU-Net dataset id of the synthetic dataset (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic patients (default: %(default)s)")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=min(default_num_processes, os.cpu_count() or 1),
                        metavar="N", help="worker processes of the data steps (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="redo every step instead of reusing finished ones")
    parser.add_argument("--use-nnunet-env", action="store_true",
                        help="use the nnUNet_raw, nnUNet_preprocessed and nnUNet_results folders of your environment "
                             "instead of OUT/nnUNet_*; a dataset with the same id that the demo did not write there "
                             "is never replaced")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    if args.patients < MIN_PATIENTS:
        raise DemoError("--patients", f"needs at least {MIN_PATIENTS} patients, so that validation and testing get "
                                      f"one each, got {args.patients}")
    if min(args.size) < MIN_IMAGE_SIDE:
        raise DemoError("--size", f"rows and columns must be at least {MIN_IMAGE_SIDE} pixels, got {tuple(args.size)}")
    if not 1 <= args.dataset_id <= 999:
        raise DemoError("--dataset-id", f"must be between 1 and 999, got {args.dataset_id}")
    if args.seed < 0:
        raise DemoError("--seed", f"must be a non-negative integer, got {args.seed}")
    if args.device != "cpu":
        import torch  # only to check the device; the steps run in their own processes
        available = torch.cuda.is_available() if args.device == "cuda" else torch.backends.mps.is_available()
        if not available:
            raise DemoError("--device", f"{args.device} is not available on this machine (PyTorch {torch.__version__})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """msvmamba_demo [-o OUT] [--patients N] [--size H W] [--epochs E] [--iterations I] [--device D] [--fresh]."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        check_arguments(args)
        paths = DemoPaths.create(args.output, args.use_nnunet_env)
        state = DemoState.claim(paths.output)
        check_dataset_is_ours(paths, args.dataset_id, state)
        if args.fresh:
            state.forget_all()
        print(f"msvmamba_demo: output in {paths.output}"
              + ("" if paths.own_nnunet_folders else f" (nnU-Net folders from the environment: {paths.raw}, "
                                                     f"{paths.preprocessed}, {paths.results})"), flush=True)
        problems = run_steps(build_steps(args, paths), state, subprocess_env(paths, args.num_processes), paths.logs)
        report(paths, args.dataset_id, args.patients, args.seed, problems, time.monotonic() - started)
    except DemoError as error:
        print(f"error: {error.what}: {error.problem}", file=sys.stderr)
        return 1 if str(error.what).startswith("step ") else 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to go on (finished steps are reused)", file=sys.stderr)
        return 130
    return 0
