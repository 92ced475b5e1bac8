"""The overlay video a person looks at: each label's contour drawn on the echo, with the frame number and the
detected ED/ES phase."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from nnunetv2_msvmamba.common.errors import InputError

FOURCC = {"mp4": "mp4v", "avi": "MJPG"}
MIN_SIDE = 336  # small echoes (EchoNet's 112 x 112) are enlarged so the contours and the text stay legible
# BGR contour colours by label value: LV cavity red, myocardium green, left atrium blue, then more
LABEL_COLOURS = [(0, 0, 255), (0, 255, 0), (255, 128, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0)]


def grey_to_uint8(frames: np.ndarray) -> np.ndarray:
    """Frames as displayable 0..255 grey: uint8 as they are, anything else stretched over its 0.5-99.5 %
    range."""
    if frames.dtype == np.uint8:
        return frames
    low, high = np.percentile(frames, (0.5, 99.5))
    scale = 255.0 / (high - low) if high > low else 1.0
    return np.clip((frames.astype(np.float32) - low) * scale, 0, 255).astype(np.uint8)


def colour_of(label: int) -> tuple[int, int, int]:
    return LABEL_COLOURS[(label - 1) % len(LABEL_COLOURS)]


def draw_frame(grey: np.ndarray, labels: np.ndarray, factor: int, caption: str) -> np.ndarray:
    rows, columns = grey.shape
    size = (columns * factor, rows * factor)
    picture = cv2.cvtColor(cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
    enlarged = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
    for label in np.unique(enlarged)[::-1]:  # the LV cavity (label 1) last, on top of the myocardium's inner edge
        if label == 0:
            continue
        contours, _ = cv2.findContours((enlarged == label).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(picture, contours, -1, colour_of(int(label)), thickness=max(1, factor // 2))
    cv2.putText(picture, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def write_overlay(frames: np.ndarray, labels: np.ndarray, phases: Sequence[str], fps: float, path: Path) -> None:
    """Writes the contours of `labels` on `frames` (both (frames, rows, columns)) as an MP4 or AVI (by the
    suffix of `path`), captioned with the frame number and its phase ("ED", "ES" or ""), and checks that it can be
    played back."""
    kind = path.suffix.lower().lstrip(".")
    grey = grey_to_uint8(frames)
    rows, columns = grey.shape[1:]
    factor = max(1, math.ceil(MIN_SIDE / min(rows, columns)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[kind]), fps,
                             (columns * factor, rows * factor))
    if not writer.isOpened():
        raise InputError(path, f"OpenCV cannot write {kind.upper()} videos here; try --overlay-format "
                               f"{'avi' if kind == 'mp4' else 'mp4'}")
    try:
        for index, (frame, label_map) in enumerate(zip(grey, labels)):
            phase = phases[index] if index < len(phases) else ""
            caption = f"frame {index + 1}/{len(grey)}" + (f"  {phase}" if phase else "")
            writer.write(draw_frame(frame, label_map, factor, caption))
    finally:
        writer.release()
    check_video_file(path, len(grey))


def decodable_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    try:
        count = 0
        while capture.isOpened() and capture.grab():
            count += 1
        return count
    finally:
        capture.release()


def check_video_file(path: Path, frames_written: int) -> None:
    """OpenCV's VideoWriter reports a failed write (a full disk, say) with a warning at most, and leaves an empty or
    unplayable file: the file is read back, and every frame written must decode."""
    size = path.stat().st_size if path.is_file() else 0
    decoded = decodable_frames(path) if size else 0
    if decoded != frames_written:
        raise InputError(path, f"the video encoder wrote a file of {size} bytes in which {decoded} of the "
                               f"{frames_written} frames can be decoded (a full disk?)")
