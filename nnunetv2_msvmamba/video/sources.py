"""Echo loops to predict: EchoNet-Dynamic AVIs (grey frames, no physical spacing) and CAMUS half-sequence NIfTIs
(frames on the last axis, in-plane spacing in the header), given as files or found in folders."""
from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import nibabel as nib
import numpy as np
import SimpleITK as sitk

from nnunetv2_msvmamba.common.errors import InputError

VIDEO_SUFFIXES = (".avi",)
NIFTI_SUFFIXES = (".nii.gz", ".nii")
# in a folder, the NIfTIs taken are CAMUS's image sequences, not their _gt or the single ED/ES frames beside them
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
    for suffix in (*NIFTI_SUFFIXES, *VIDEO_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return path.stem


def is_video(path: Path) -> bool:
    return path.name.lower().endswith(VIDEO_SUFFIXES)


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def find_inputs(inputs: Sequence[Path]) -> list[Path]:
    """The files to predict, in order: files as given, and in each folder (searched recursively) its AVIs and
    CAMUS half sequences, sorted. Two inputs with the same name would write the same outputs: refused."""
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            in_folder = sorted({p for p in path.rglob("*") if p.is_file() and is_video(p)}
                               | set(path.rglob(FOLDER_NIFTI_PATTERN)))
            if not in_folder:
                raise InputError(path, "no AVI video and no *_half_sequence.nii.gz in this folder")
            found += in_folder
        elif not path.exists():
            raise InputError(path, "not found")
        elif is_video(path) or is_nifti(path):
            found.append(path)
        else:
            raise InputError(path, "not an AVI video or a NIfTI sequence (.avi, .nii.gz, .nii)")
    names: dict[str, Path] = {}
    for path in found:
        if stem(path) in names and names[stem(path)].resolve() != path.resolve():
            raise InputError(path, f"has the same name as {names[stem(path)]}; their outputs would collide")
        names[stem(path)] = path
    return list(dict.fromkeys(found))


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


def camus_frame_rate(path: Path) -> Optional[float]:
    """The FrameRate of the Info_<view>.cfg beside a CAMUS half sequence `patientNNNN_<view>_half_sequence`."""
    match = re.fullmatch(r".+_(\w+)_half_sequence", stem(path))
    info = path.parent / f"Info_{match.group(1)}.cfg" if match else None
    if info is None or not info.is_file():
        return None
    for line in info.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "FrameRate":
            try:
                return float(value) if float(value) > 0 else None
            except ValueError:
                return None
    return None


def check_nifti_complete(path: Path) -> None:
    """ITK reads a truncated NIfTI without complaint, padding the missing pixels with zeros: a partial download
    would become a loop of blank frames. gzip checks the stream to its end (CRC included), nibabel that the data
    is as long as the header says."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path) as stream:
                while stream.read(1 << 24):
                    pass
        np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as error:  # nibabel's errors for a broken file are of many kinds; the message says which
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InputError(path, f"unreadable: corrupt or truncated NIfTI ({reason})") from None


def read_nifti_sequence(path: Path) -> EchoLoop:
    """A 3D NIfTI whose last axis is time (CAMUS half sequences), or a 2D image as a one-frame loop."""
    check_nifti_complete(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "SimpleITK cannot read it"
        raise InputError(path, f"unreadable: {reason}") from None
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
    loop = read_video(path) if is_video(path) else read_nifti_sequence(path)
    if not np.isfinite(loop.frames).all():
        raise InputError(path, "contains NaN or infinite pixel values")
    return loop
