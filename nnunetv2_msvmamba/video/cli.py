"""`msvmamba_predict_video`: whole echo loops (EchoNet-Dynamic AVIs, CAMUS half-sequence NIfTIs) through a
trained nnU-Net model, frame by frame, then the LV volume curve, ED/ES frames and ejection fraction of each, and
an overlay video to look at."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_msvmamba.common.errors import InputError, exit_status_of
from nnunetv2_msvmamba.common.tables import write_csv
from .analysis import LoopResult, analyse_loop, write_analysis_reports
from .overlay import FOURCC, write_overlay
from .sources import EchoLoop, find_inputs, read_loop

SUMMARY_CSV = "video_summary.csv"
SUMMARY_COLUMNS = ("sequence", "source", "frames", "rows", "columns", "spacing_mm", "beats", "ed_frames",
                   "es_frames", "ef_percent", "labels", "overlay", "seconds_per_frame", "note")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msvmamba_predict_video",
        description="Segments every frame of echo loops with a trained nnU-Net model (any trainer, through "
                    "nnU-Net's own nnUNetPredictor), then measures the left ventricle over time: LV area and "
                    "single-plane volume per frame, ED (volume maxima) and ES (minima) per beat, ejection fraction "
                    "per beat and their mean. Inputs: EchoNet-Dynamic AVIs, CAMUS half-sequence NIfTIs (frames on "
                    "the last axis), or folders of them.",
        epilog="Writes to OUT, per input NAME: NAME.nii.gz (the label sequence, frames on the last axis like CAMUS's "
               "_half_sequence_gt), NAME_overlay.mp4 (the contours on the echo), NAME_volume_curve.png (ED/ES marked); "
               "for all inputs: sequence_frames.csv, sequence_summary.csv and video_summary.csv. Example: "
               "msvmamba_predict_video -i echo_videos/ -o video_out -d 602 -c 2d -tr nnUNetTrainerMSVMamba -f 0")
    parser.add_argument("-i", "--input", required=True, nargs="+", type=Path, metavar="INPUT",
                        help="AVI videos, NIfTI sequences, or folders (searched recursively for *.avi and "
                             "*_half_sequence.nii.gz)")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="output folder")
    model = parser.add_argument_group("model (as nnUNetv2_predict, or -m as nnUNetv2_predict_from_modelfolder)")
    model.add_argument("-m", "--model-folder", type=Path, metavar="MODEL_FOLDER",
                       help="the trained model's folder (TRAINER__PLANS__CONFIGURATION, holding fold_N/); "
                            "replaces -d/-tr/-p/-c")
    model.add_argument("-d", metavar="DATASET", help="dataset name or id, in $nnUNet_results")
    model.add_argument("-tr", default="nnUNetTrainer", metavar="TRAINER", help="trainer (default: %(default)s)")
    model.add_argument("-p", default="nnUNetPlans", metavar="PLANS", help="plans identifier (default: %(default)s)")
    model.add_argument("-c", default="2d", metavar="CONFIGURATION",
                       help="configuration; frames are 2D images (default: %(default)s)")
    model.add_argument("-f", nargs="+", metavar="FOLD",
                       help="folds to ensemble (default: every fold_N that has the checkpoint)")
    model.add_argument("-chk", default="checkpoint_final.pth", metavar="CHECKPOINT",
                       help="checkpoint file name (default: %(default)s)")
    model.add_argument("-device", choices=("cuda", "cpu", "mps"), default="cuda",
                       help="device to predict on (default: %(default)s, as nnUNetv2_predict; cpu without a GPU)")
    model.add_argument("-step_size", type=float, default=0.5, metavar="S",
                       help="sliding-window step as a fraction of the patch (default: %(default)s)")
    model.add_argument("--disable_tta", action="store_true",
                       help="no mirroring test-time augmentation (faster, slightly less accurate)")
    parser.add_argument("--spacing", type=float, metavar="MM",
                        help="pixel spacing of AVIs, which carry none: the volumes are then in mL, otherwise in "
                             "pixels^3 (NIfTIs use their header's spacing)")
    parser.add_argument("--overlay-format", choices=sorted(FOURCC), default="mp4",
                        help="container of the overlay videos (default: %(default)s)")
    return parser


def resolve_model_folder(args: argparse.Namespace) -> Path:
    from .predict import model_folder_from_ids
    if args.model_folder is not None:
        return args.model_folder
    if args.d is None:
        raise InputError("-d", "give the model as -d DATASET [-tr -p -c -f] or as -m MODEL_FOLDER")
    return model_folder_from_ids(args.d, args.tr, args.p, args.c)


def check_device(device: str) -> None:
    import torch
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[device]:
        raise InputError(f"-device {device}", f"not available on this machine (PyTorch {torch.__version__}); "
                                              f"use -device cpu")


def write_then_rename(path: Path, write: Callable[[Path], None]) -> None:
    """`write(partial)` to a hidden name beside `path`, then renamed into place: a failure never leaves half a
    file."""
    partial = path.with_name(f".partial-{path.name}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_label_sequence(labels: np.ndarray, loop: EchoLoop, spacing_rc: Optional[tuple[float, float]],
                         path: Path) -> None:
    """(frames, rows, columns) labels as a NIfTI with frames on the last axis, with the input's geometry when it
    has one."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels))
    if loop.header is not None:
        image.CopyInformation(loop.header)
    else:
        row, column = spacing_rc or (1.0, 1.0)
        image.SetSpacing([column, row, 1.0])
    sitk.WriteImage(image, str(path), useCompression=True)


def summary_row(result: LoopResult, output: Path) -> dict:
    loop, analysis = result.loop, result.analysis
    frames, rows, columns = loop.frames.shape
    beats = analysis.beats if analysis is not None else []
    return {"sequence": loop.name, "source": str(loop.source), "frames": frames, "rows": rows, "columns": columns,
            "spacing_mm": "" if result.spacing_rc is None else " x ".join(f"{s:.6g}" for s in result.spacing_rc),
            "beats": len(beats), "ed_frames": " ".join(str(beat.ed_frame) for beat in beats),
            "es_frames": " ".join(str(beat.es_frame) for beat in beats),
            "ef_percent": "" if analysis is None or not np.isfinite(analysis.ef_percent)
            else f"{analysis.ef_percent:.2f}",
            "labels": result.labels_path.relative_to(output).as_posix(),
            "overlay": result.overlay_path.relative_to(output).as_posix(),
            "seconds_per_frame": f"{result.seconds_per_frame:.3f}", "note": result.note}


def process_loop(path: Path, predictor, args: argparse.Namespace) -> LoopResult:
    from .predict import predict_frames
    loop = read_loop(path)
    spacing_rc = loop.spacing_rc or ((args.spacing, args.spacing) if args.spacing else None)
    started = time.monotonic()
    labels = predict_frames(predictor, loop.frames, spacing_rc, loop.name)
    seconds_per_frame = (time.monotonic() - started) / len(labels)
    labels_path = args.output / f"{loop.name}.nii.gz"
    write_then_rename(labels_path, lambda partial: write_label_sequence(labels, loop, spacing_rc, partial))
    result = analyse_loop(loop, labels, spacing_rc, labels_path, seconds_per_frame)
    result.overlay_path = args.output / f"{loop.name}_overlay.{args.overlay_format}"
    write_then_rename(result.overlay_path,
                      lambda partial: write_overlay(loop.frames, labels, result.phases, loop.fps, partial))
    return result


def predict_videos(args: argparse.Namespace) -> list[LoopResult]:
    """Checks the model and the inputs, then predicts, analyses and writes the loops one by one; the reports
    are rewritten after each, so a file that cannot be read leaves every finished one complete."""
    from .predict import check_model_folder, load_predictor
    model_folder = resolve_model_folder(args)
    check_model_folder(model_folder, args.f, args.chk)
    if args.spacing is not None and args.spacing <= 0:
        raise InputError("--spacing", f"must be positive, got {args.spacing}")
    inputs = find_inputs(args.input)
    check_device(args.device)
    predictor = load_predictor(model_folder, args.f, args.chk, args.device, not args.disable_tta, args.step_size)
    args.output.mkdir(parents=True, exist_ok=True)
    print(f"msvmamba_predict_video: {len(inputs)} loop(s) with {model_folder} on {args.device}", flush=True)
    results: list[LoopResult] = []
    for path in inputs:
        result = process_loop(path, predictor, args)
        results.append(result)
        write_analysis_reports(results, args.output)
        write_csv([summary_row(r, args.output) for r in results], SUMMARY_COLUMNS, args.output / SUMMARY_CSV)
        ef = result.analysis.ef_percent if result.analysis is not None else float("nan")
        print(f"{result.loop.name}: {len(result.loop.frames)} frames, "
              + (f"EF {ef:.1f} % over {len(result.analysis.beats)} beat(s)" if np.isfinite(ef)
                 else f"no EF ({result.note})")
              + f"; {result.overlay_path}", flush=True)
    print(f"wrote {SUMMARY_CSV}, sequence_frames.csv and sequence_summary.csv to {args.output}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """msvmamba_predict_video -i INPUT [INPUT ...] -o OUT (-m MODEL_FOLDER | -d DATASET -c 2d -tr TRAINER -f F)."""
    args = build_parser().parse_args(argv)
    return exit_status_of(lambda: predict_videos(args))


if __name__ == "__main__":
    sys.exit(main())
