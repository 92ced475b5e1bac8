"""Accuracy: each video's EF from `msvmamba_predict_video` against FileList.csv's, on the synthetic EchoNet-Dynamic
release, with a model trained on the demo's schedule. Every step is a real command:
  1. a synthetic release in EchoNet-Dynamic's layout (`Videos/*.avi`, FileList.csv, VolumeTracings.csv): N videos of
     175 frames, 75 / 12.5 / 12.5 % TRAIN / VAL / TEST; each FileList EF is that of the video's own ellipse;
  2. `msvmamba_convert_echonet` (the ED and ES frames of every video; fold 0 = TRAIN vs VAL);
  3. `nnUNetv2_plan_and_preprocess -c 2d` and `nnUNetv2_train ... 0 -tr nnUNetTrainerMSVMamba_Demo` (the demo's
     schedule: 25 epochs of 10 iterations);
  4. `msvmamba_predict_video` on the TEST videos, every frame, with `--file-list FileList.csv`;
then it prints the EF agreement the command wrote (ef_agreement.json: n, r, bias, limits of agreement, MAE), each
video's pair, and where the Bland-Altman plot is. No target: issue 20 asks for the figure in the docs.

    python benchmarks/ef_echonet_synthetic.py                  # 64 videos (8 TEST); ~30 min on 2 CPU cores
    python benchmarks/ef_echonet_synthetic.py --keep ef_run    # the same, keeping the release, model and outputs
    python benchmarks/ef_echonet_synthetic.py --quick          # 8 videos of 40 frames, 1 epoch of 2 iterations
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from nnunetv2_msvmamba.clinical.volumes import IMPLAUSIBLE_FLAG, implausible_beats_flag

from measure import cpu_and_cores, make_nnunet_folders, run_command_or_exit  # benchmarks/measure.py, beside this script

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))  # measure this checkout, not an installed copy

DATASET_ID = 987
TRAINER = "nnUNetTrainerMSVMamba_Demo"
FULL = {"videos": 64, "frames": 175, "epochs": None, "iterations": None}  # None: the demo's schedule
QUICK = {"videos": 8, "frames": 40, "epochs": 1, "iterations": 2}  # 1 TEST video


def nnunet_environment(workspace: Path, epochs: int | None, iterations: int | None) -> dict[str, str]:
    from nnunetv2_msvmamba.training.ext_trainer_path import trainer_folder
    environment = dict(os.environ, nnUNet_def_n_proc="2", nnUNet_extTrainer=str(trainer_folder()),
                       **{name: str(path) for name, path in make_nnunet_folders(workspace).items()})
    if epochs is not None:
        environment.update(MSVMAMBA_DEMO_EPOCHS=str(epochs), MSVMAMBA_DEMO_ITERATIONS=str(iterations))
    return environment


def write_synthetic_release(root: Path, n_videos: int, n_frames: int) -> list[Path]:
    """The release under `root`; returns its TEST videos."""
    from dataset_conversion.echonet_synthetic import random_release_videos, write_release
    videos = random_release_videos(n_videos, n_frames=n_frames, seed=3)
    write_release(root, videos, num_processes=2)
    return [root / "Videos" / f"{video.name}.avi" for video in videos if video.split == "TEST"]


def step(title: str, arguments: list[str], environment: dict[str, str]) -> None:
    started = time.perf_counter()
    print(f"{title} ...", flush=True)
    run_command_or_exit(arguments, environment)
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)


def measure(workspace: Path, settings: dict, device: str) -> Path:
    """Runs the four steps in `workspace`; returns the prediction folder."""
    environment = nnunet_environment(workspace, settings["epochs"], settings["iterations"])
    release = workspace / "EchoNet-Dynamic"
    test_videos = write_synthetic_release(release, settings["videos"], settings["frames"])
    output = workspace / "predictions"
    step("converting", ["msvmamba_convert_echonet", str(release), "-d", str(DATASET_ID), "-np", "2"], environment)
    step("planning and preprocessing", ["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d",
                                        "-np", "2", "-npfp", "2"], environment)
    step(f"training {TRAINER} (fold 0)", ["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", TRAINER,
                                          "-device", device], dict(environment, nnUNet_n_proc_DA="0"))
    step(f"predicting the {len(test_videos)} TEST videos",
         ["msvmamba_predict_video", "-i", *map(str, test_videos), "-o", str(output), "-d", str(DATASET_ID),
          "-c", "2d", "-tr", TRAINER, "-f", "0", "-device", device, "--file-list", str(release / "FileList.csv")],
         environment)
    return output


def report(output: Path) -> dict:
    agreement = json.loads((output / "ef_agreement.json").read_text())
    print(f"\nEF per video against FileList.csv ({len(agreement['pairs'])} TEST videos, {agreement['n']} with an EF):")
    for pair in agreement["pairs"]:
        ef = "none" if pair["ef_percent"] is None else f"{pair['ef_percent']:.1f}"
        flag = f" ({implausible_beats_flag(pair['implausible_beats'])})" if pair["implausible_beats"] else ""
        print(f"  {pair['sequence']}: predicted {ef}{flag}, FileList {pair['reference_ef_percent']:.1f}")
    print(f"r {agreement['pearson_r']:.3f}, bias {agreement['bias']:+.2f}, limits of agreement "
          f"{agreement['loa_lower']:.2f} to {agreement['loa_upper']:.2f}, MAE {agreement['mae']:.2f} EF points")
    if agreement["loops_with_implausible_beats"]:
        print(f"videos whose EF includes a beat with {IMPLAUSIBLE_FLAG} (in the statistics as measured): "
              f"{', '.join(agreement['loops_with_implausible_beats'])}")
    if agreement["loops_without_ef"]:
        print(f"videos without an EF (no complete beat measured): {', '.join(agreement['loops_without_ef'])}")
    print(f"Bland-Altman plot: {output / 'ef_bland_altman.png'}")
    return agreement


def main(argv: list[str] | None = None) -> int:
    """Trains a model on the synthetic EchoNet-Dynamic release and reports its EF per TEST video against
    FileList.csv."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 short videos, 1 epoch of 2 iterations")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it (default: a temporary one)")
    parser.add_argument("-device", default="cpu", choices=("cpu", "cuda"), help="for training and prediction")
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: exists already; give a new folder")
    settings = QUICK if args.quick else FULL
    print(f"machine: {cpu_and_cores()}")
    print(f"command: python benchmarks/ef_echonet_synthetic.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    started = time.perf_counter()
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        report(measure(args.keep.resolve(), settings, args.device))
    else:
        with tempfile.TemporaryDirectory() as workspace:
            report(measure(Path(workspace), settings, args.device))
    print(f"whole run: {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
