"""`msvmamba_predict_video`: whole echo loops (EchoNet-Dynamic AVIs, CAMUS half-sequence NIfTIs) through a
trained nnU-Net model, frame by frame, then the LV volume curve, ED/ES frames and ejection fraction of each, and
an overlay video to look at."""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_msvmamba.common.arguments import positive_float
from nnunetv2_msvmamba.common.atomic import check_writable, staged_files
from nnunetv2_msvmamba.common.errors import (INTERRUPTED_STATUS, InputError, exit_status_of, from_os_error,
                                             short_reason)
from nnunetv2_msvmamba.common.image_files import is_nifti, nifti_stem
from .analysis import LoopResult, analyse_loop
from .overlay import write_overlay
from .outputs import OVERLAY_FORMATS, label_sequence_name, overlay_name
from .runs import (check_part, loop_is_complete, part_of, rebuild_summaries, reference_efs,
                   write_loop_record)
from .sources import EchoLoop, check_loop_file, find_inputs, read_loop, stem

SUMMARY_CSV = "video_summary.csv"
STAGING_NAME = ".msvmamba_predict_video-staging"  # hidden: a folder search never takes what is in it
SUMMARY_COLUMNS = ("sequence", "source", "frames", "rows", "columns", "spacing_mm", "beats", "ed_frames",
                   "es_frames", "ef_percent", "implausible_beats", "reference_ef_percent", "labels", "overlay",
                   "seconds_per_frame", "note")


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
               "NAME_loop.json (what makes the loop complete for --continue); for all loops in OUT: "
               "sequence_frames.csv, sequence_summary.csv and video_summary.csv, rebuilt at the end of every part. "
               "Example: "
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
    # the whole numbers below are checked by check_run_options, so that a bad value is a one-line error and a
    # shell variable in a job script ($SLURM_ARRAY_TASK_ID) is taken as it will be expanded
    model.add_argument("--batch-size", metavar="B",
                       help="frames (or tiles of frames larger than the model's patch) per forward pass, TTA's "
                            "mirrored copies in the same pass (default: 8 on a CPU, 64 on a GPU)")
    split = parser.add_argument_group("large runs, split and resumed as nnUNetv2_predict")
    split.add_argument("-num_parts", default=1, metavar="N",
                       help="split the loops into N parts, one per process or machine, all writing to OUT "
                            "(default: %(default)s)")
    split.add_argument("-part_id", default=0, metavar="K",
                       help="the part this process predicts: loops K, K+N, K+2N, ... of the inputs in order (folders "
                            "sorted), 0 <= K < N (default: %(default)s)")
    split.add_argument("--continue", dest="continue_run", action="store_true",
                       help="skip the loops whose outputs in OUT are complete (a run that stopped, resumed)")
    parser.add_argument("--file-list", type=Path, metavar="FILELIST_CSV",
                        help="EchoNet-Dynamic's FileList.csv: every loop's reference EF, compared with its predicted "
                             "EF in video_summary.csv and ef_agreement.json (r, bias, limits of agreement, MAE) with "
                             "ef_bland_altman.png; without it, a CAMUS Info_<view>.cfg beside a half sequence gives "
                             "its EF (EF, or LVef in the challenge release)")
    parser.add_argument("--spacing", type=positive_float, metavar="MM",
                        help="pixel spacing of AVIs, which carry none: the volumes are then in mL, otherwise in "
                             "pixels^3 (NIfTIs use their header's spacing)")
    parser.add_argument("--overlay-format", choices=OVERLAY_FORMATS, default="mp4",
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
    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as error:  # ITK's error for a full disk or a folder it cannot write
        raise InputError(path, f"cannot be written: {short_reason(error)}") from None


def summary_row(result: LoopResult, output: Path, reference_ef: Optional[float]) -> dict:
    loop, analysis = result.loop, result.analysis
    frames, rows, columns = loop.frames.shape
    beats = analysis.beats if analysis is not None else []
    return {"sequence": loop.name, "source": str(loop.source), "frames": frames, "rows": rows, "columns": columns,
            "spacing_mm": "" if result.spacing_rc is None else " x ".join(f"{s:.6g}" for s in result.spacing_rc),
            "beats": len(beats), "ed_frames": " ".join(str(beat.ed_frame) for beat in beats),
            "es_frames": " ".join(str(beat.es_frame) for beat in beats),
            "ef_percent": "" if analysis is None or not np.isfinite(analysis.ef_percent)
            else f"{analysis.ef_percent:.2f}",
            "implausible_beats": "" if analysis is None else result.implausible_beats,
            "reference_ef_percent": "" if reference_ef is None else f"{reference_ef:.2f}",
            "labels": result.labels_path.relative_to(output).as_posix(),
            "overlay": result.overlay_path.relative_to(output).as_posix(),
            "seconds_per_frame": f"{result.seconds_per_frame:.3f}", "note": result.note}


def process_loop(path: Path, order: int, predictor, args: argparse.Namespace, reference_ef: Optional[float],
                 progress, expected_frames: int) -> LoopResult:
    """Predicts and analyses one loop, then writes its label sequence, overlay, volume curve and record (the record
    says it is complete) all together or none of them, then the summaries of every complete loop in the folder."""
    from nnunetv2_msvmamba.clinical.plot import write_volume_curve
    from nnunetv2_msvmamba.clinical.sequence import curve_file_name, frame_rows, summary_row as sequence_row
    loop = read_loop(path)
    spacing_rc = loop.spacing_rc or ((args.spacing, args.spacing) if args.spacing is not None else None)
    if len(loop.frames) != expected_frames:  # the header's count was off: the bar's total follows the frames read
        progress.total += len(loop.frames) - expected_frames
        progress.refresh()
    started = time.monotonic()
    labels = predictor.predict_frames(loop.frames, spacing_rc, progress.update)
    seconds_per_frame = (time.monotonic() - started) / len(labels)
    result = analyse_loop(loop, labels, spacing_rc, args.output / label_sequence_name(loop.name), seconds_per_frame)
    result.overlay_path = args.output / overlay_name(loop.name, args.overlay_format)
    files = [result.labels_path, result.overlay_path]
    with staged_outputs(args.output) as staging:
        write_label_sequence(labels, loop, spacing_rc, staging / result.labels_path.name)
        write_overlay(loop.frames, labels, result.phases, loop.fps, staging / result.overlay_path.name)
        if result.analysis is not None:
            files.append(args.output / curve_file_name(result.analysis))
            write_volume_curve(result.analysis, staging / files[-1].name)
        write_loop_record(args.output, loop.name, order, files, summary_row(result, args.output, reference_ef),
                          None if result.analysis is None else sequence_row(result.analysis),
                          [] if result.analysis is None else frame_rows(result.analysis), destination=staging)
    write_summaries(args.output)
    return result


def write_summaries(output: Path) -> None:
    """The summaries of every complete loop in `output` (this part's and the others'), all replaced together."""
    with staged_outputs(output) as staging:
        rebuild_summaries(output, SUMMARY_COLUMNS, destination=staging)


@contextmanager
def staged_outputs(output: Path) -> Iterator[Path]:
    """A staging folder whose files move into `output` together on success, none of them on a failure
    (common.atomic.staged_files)."""
    with staged_files(output, STAGING_NAME) as staging:
        try:
            yield staging
        except OSError as error:
            raise as_output_error(from_os_error(error, output), staging, output) from None
        except InputError as error:
            raise as_output_error(error, staging, output) from None


def as_output_error(error: InputError, staging: Path, output: Path) -> InputError:
    """An error about a file being written in `staging`, as one about the file in `output` it was to become: the
    user knows the output folder, not its staging copies."""
    if error.path == staging:
        return InputError(output, error.problem)
    if staging in error.path.parents:
        return InputError(output / error.path.name, error.problem)
    return error


def refuse_overwriting_inputs(loops: Sequence[Path], output: Path, overlay_format: str) -> None:
    """Refuses an input in the output folder that an output of this run would replace, or sit beside as its
    .nii/.nii.gz twin (a CAMUS sequence's label sequence has the sequence's own name)."""
    written = {name for path in loops
               for name in (label_sequence_name(stem(path)), overlay_name(stem(path), overlay_format))}
    for path in loops:
        occupied = label_sequence_name(nifti_stem(path)) if is_nifti(path) else path.name  # x.nii: x.nii.gz's too
        if path.parent.resolve() == output.resolve() and occupied in written:
            raise InputError(path, f"would be replaced by an output of this run in {output}; write the outputs "
                                   f"to another folder (-o)")


class InterruptedAfterWork(Exception):
    """Ctrl-C after some loops were written: the message says which were kept and which were not."""


def listing(names: Sequence[str], shown: int = 5) -> str:
    """`a`, `a and b`, `a, b and c`, or the first `shown` names `and N more`."""
    if len(names) > shown:
        return f"{', '.join(names[:shown])} and {len(names) - shown} more"
    return " and ".join([", ".join(names[:-1]), names[-1]]) if len(names) > 1 else "".join(names)


def interrupted_message(finished: Sequence[LoopResult], inputs: Sequence[Path], output: Path) -> str:
    unwritten = [stem(path) for path in inputs[len(finished):]]
    return (f"interrupted: kept the {len(finished)} finished loop(s) in {output} "
            f"({listing([result.loop.name for result in finished])}); {listing(unwritten)} "
            f"{'was' if len(unwritten) == 1 else 'were'} not written")


def whole_number(option: str, value) -> int:
    try:
        return int(value)
    except ValueError:
        raise InputError(option, f"must be a whole number, got {value!r}") from None


def check_run_options(args: argparse.Namespace) -> None:
    """--batch-size, -num_parts and -part_id as whole numbers, in range."""
    if args.batch_size is not None:
        args.batch_size = whole_number("--batch-size", args.batch_size)
    args.num_parts = whole_number("-num_parts", args.num_parts)
    args.part_id = whole_number("-part_id", args.part_id)
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError("--batch-size", f"must be at least 1, got {args.batch_size}")
    check_part(args.num_parts, args.part_id)


def predict_videos(args: argparse.Namespace) -> list[LoopResult]:
    """Checks the options, the output folder, the model and the inputs, then predicts, analyses and writes this
    part's loops one by one, each complete or not at all, and the summaries of every complete loop in the folder
    after each; an error or a Ctrl-C leaves every finished loop complete."""
    from tqdm import tqdm
    from .batched_prediction import BatchedFramePredictor
    from .predict import check_model_folder, load_predictor
    from .runs import frame_count
    check_run_options(args)
    check_writable(args.output)
    model_folder = resolve_model_folder(args)
    check_model_folder(model_folder, args.f, args.chk)
    search = find_inputs(args.input, args.output)
    refuse_overwriting_inputs(search.loops, args.output, args.overlay_format)
    for path in search.loops:  # every header before the first loop, not hours into a run
        check_loop_file(path)
    references = reference_efs(search.loops, [stem(path) for path in search.loops], args.file_list)
    if search.earlier_outputs:
        print(f"note: {len(search.earlier_outputs)} output(s) of msvmamba_predict_video not taken as inputs: "
              f"{listing([str(path) for path in search.earlier_outputs])}", file=sys.stderr)
    check_device(args.device)
    order = {path: index for index, path in enumerate(search.loops)}
    loops = part_of(search.loops, args.num_parts, args.part_id)
    complete = [path for path in loops if args.continue_run and loop_is_complete(args.output, stem(path))]
    loops = [path for path in loops if path not in complete]
    predictor = BatchedFramePredictor(
        load_predictor(model_folder, args.f, args.chk, args.device, not args.disable_tta, args.step_size),
        args.batch_size)
    part = f" (part {args.part_id} of 0..{args.num_parts - 1})" if args.num_parts > 1 else ""
    skipped = f", {len(complete)} complete one(s) skipped (--continue)" if complete else ""
    print(f"msvmamba_predict_video: {len(loops)} loop(s){part}{skipped} with {model_folder} on {args.device}, "
          f"{predictor.batch_size} frames per forward pass", flush=True)
    expected = {path: frame_count(path) for path in loops}
    results: list[LoopResult] = []
    try:
        with tqdm(total=sum(expected.values()), unit="frame", desc="frames", smoothing=0.1) as progress:
            for path in loops:
                result = process_loop(path, order[path], predictor, args, references.get(stem(path)), progress,
                                      expected[path])
                results.append(result)
                progress.write(f"{result.loop.name}: {len(result.loop.frames)} frames, {result.ef_text}; "
                               f"{result.overlay_path}", file=sys.stdout)
    except KeyboardInterrupt:
        if not results:
            raise
        raise InterruptedAfterWork(interrupted_message(results, loops, args.output)) from None
    write_summaries(args.output)  # also when every loop of this part was complete already
    print(f"wrote {SUMMARY_CSV}, sequence_frames.csv and sequence_summary.csv of every complete loop in "
          f"{args.output}")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """msvmamba_predict_video -i INPUT [INPUT ...] -o OUT (-m MODEL_FOLDER | -d DATASET -c 2d -tr TRAINER -f F)."""
    args = build_parser().parse_args(argv)
    try:
        return exit_status_of(lambda: predict_videos(args))
    except InterruptedAfterWork as interrupted:
        print(interrupted, file=sys.stderr)
        return INTERRUPTED_STATUS


if __name__ == "__main__":
    sys.exit(main())
