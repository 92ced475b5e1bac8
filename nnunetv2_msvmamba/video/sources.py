"""Echo loops to predict: EchoNet-Dynamic AVIs (grey frames, no physical spacing) and CAMUS half-sequence NIfTIs
(frames on the last axis, in-plane spacing in the header), given as files or found in folders."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import SimpleITK as sitk

from nnunetv2_msvmamba.common.errors import InputError, short_reason
from nnunetv2_msvmamba.common.image_files import NIFTI_ENDINGS, PLANE_AXES, check_image_file, is_nifti, \
    refuse_nifti_twins
from .outputs import is_own_output

VIDEO_SUFFIXES = (".avi",)
FOLDER_NIFTI_PATTERN = "*_half_sequence.nii*"
DEFAULT_NIFTI_FPS = 25.0  # the overlay's frame rate when neither the file nor a CAMUS Info_<view>.cfg beside it has one


@dataclass
class EchoLoop:
    """One loop's frames (frames, rows, columns) and what is known of its geometry."""
    name: str
    source: Path
    frames: np.ndarray
    spacing_rc: Optional[tuple[float, float]]  # mm per row and per column; None: pixels only (AVIs)
    fps: float
    header: Optional[sitk.Image] = None  # a NIfTI's geometry, copied to the label sequence


def stem(path: Path) -> str:
    name = path.name
    for suffix in (*NIFTI_ENDINGS, *VIDEO_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return path.stem


def is_video(path: Path) -> bool:
    return path.name.lower().endswith(VIDEO_SUFFIXES)


def is_folder_loop(path: Path) -> bool:
    """What a folder search takes: AVIs, and CAMUS half sequences (not their _gt nor the single ED/ES frames)."""
    return is_video(path) or (is_nifti(path) and path.match(FOLDER_NIFTI_PATTERN))


@dataclass
class InputSearch:
    """The loops to predict, in order, and the files left out because they are outputs of this command."""
    loops: list[Path]
    earlier_outputs: list[Path]


def find_inputs(inputs: Sequence[Path], output: Path) -> InputSearch:
    """The files to predict, in order: files as given, and in each folder (searched recursively) its AVIs and
    CAMUS half sequences, sorted. A folder search never takes the output folder's contents, this command's own
    outputs (wherever an earlier run wrote them) or hidden files (a run's partial files, macOS's `._` copies). One
    file given twice (through two paths, or as a folder and a file in it) is predicted once; two different files
    of one name would write the same outputs, and one's data would be read under the other's name: refused."""
    found: list[Path] = []
    earlier_outputs: list[Path] = []
    for path in inputs:
        if path.is_dir():
            loops, outputs = loops_in_folder(path, output)
            if not loops:
                raise InputError(path, "no AVI video and no *_half_sequence.nii.gz in this folder"
                                       + (f" (only {len(outputs)} output(s) of msvmamba_predict_video)" if outputs
                                          else ""))
            found += loops
            earlier_outputs += outputs
        elif not path.exists():
            raise InputError(path, "not found")
        elif not (is_video(path) or is_nifti(path)):
            raise InputError(path, "not an AVI video or a NIfTI sequence (.avi, .nii.gz, .nii)")
        elif is_own_output(path):
            raise InputError(path, "an output of msvmamba_predict_video (a label sequence and its overlay side by "
                                   "side), not an echo loop")
        else:
            found.append(path)
    unique: dict[Path, Path] = {}
    for path in found:  # each file once, where it first appears
        unique.setdefault(path.resolve(), path)
    loops = list(unique.values())
    refuse_nifti_twins(loops)
    refuse_name_collisions(loops)
    return InputSearch(loops, earlier_outputs)


def loops_in_folder(folder: Path, output: Path) -> tuple[list[Path], list[Path]]:
    """The echo loops in `folder` and its subfolders, sorted, and apart from them the outputs of this command
    found there (the files of an output folder inside `folder`, and loop outputs written elsewhere)."""
    output = output.resolve()
    output_inside = folder.resolve() in output.parents
    loops, outputs = [], []
    for path in sorted(folder.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
        if hidden or not path.is_file() or not is_folder_loop(path):
            continue
        if (output_inside and output in path.resolve().parents) or is_own_output(path):
            outputs.append(path)
        else:
            loops.append(path)
    return loops, outputs


def refuse_name_collisions(loops: Sequence[Path]) -> None:
    """Each loop's outputs are named after it: two files of one name (in different folders, or an AVI and a
    NIfTI) would write the same outputs."""
    names: dict[str, Path] = {}
    for path in loops:
        first = names.setdefault(stem(path), path)
        if first is not path:
            raise InputError(path, f"has the same name as {first}: their outputs would collide; rename one of them")


def read_video(path: Path) -> EchoLoop:
    """Every frame of a video as grey uint8 (OpenCV's luma of the decoded frame, as the EchoNet converter reads
    them)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(path, "unreadable video: OpenCV cannot open it")
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame)
    finally:
        capture.release()
    if not frames:
        raise InputError(path, "unreadable video: not a single frame can be decoded")
    return EchoLoop(stem(path), path, np.stack(frames), None, fps if fps and fps > 0 else DEFAULT_NIFTI_FPS)


def camus_info(path: Path) -> tuple[Optional[Path], dict[str, str]]:
    """The Info_<view>.cfg beside a CAMUS half sequence `patientNNNN_<view>_half_sequence` and its entries
    (`key: value` lines); (None, {}) when there is none."""
    match = re.fullmatch(r".+_(\w+?)_half_sequence", stem(path))
    info = path.parent / f"Info_{match.group(1)}.cfg" if match else None
    if info is None or not info.is_file():
        return None, {}
    entries = (line.partition(":") for line in info.read_text(errors="replace").splitlines())
    return info, {key.strip(): value.strip() for key, colon, value in entries if colon}


def camus_frame_rate(path: Path) -> Optional[float]:
    """The FrameRate of the Info_<view>.cfg beside a CAMUS half sequence, when it is a positive number."""
    try:
        rate = float(camus_info(path)[1].get("FrameRate", ""))
    except ValueError:
        return None
    return rate if math.isfinite(rate) and rate > 0 else None


def check_loop_file(path: Path) -> None:
    """The shared image check of a loop's file: its frames lie on the third axis, which carries no spacing."""
    check_image_file(path, spatial_axes=PLANE_AXES)


def read_nifti_sequence(path: Path) -> EchoLoop:
    """A 3D NIfTI whose last axis is time (CAMUS half sequences), or a 2D image as a one-frame loop."""
    check_loop_file(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(path, f"unreadable: {short_reason(error)}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"expected a grey-level sequence, got {image.GetNumberOfComponentsPerPixel()} "
                               f"components per pixel")
    if image.GetDimension() not in (2, 3):
        raise InputError(path, f"expected a 2D image or a 3D sequence (frames on the last axis), got a "
                               f"{image.GetDimension()}D image")
    frames = sitk.GetArrayFromImage(image)  # (t, y, x) for (x, y, t)
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    spacing_x, spacing_y = image.GetSpacing()[:2]
    return EchoLoop(stem(path), path, frames, (float(spacing_y), float(spacing_x)),
                    camus_frame_rate(path) or DEFAULT_NIFTI_FPS,
                    header=image if image.GetDimension() == 3 else None)


def read_loop(path: Path) -> EchoLoop:
    return read_video(path) if is_video(path) else read_nifti_sequence(path)
