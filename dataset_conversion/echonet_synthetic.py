"""Synthetic EchoNet-Dynamic data in the release's real layout: MJPG AVIs (112x112, three identical colour
channels) in `Videos/`, `FileList.csv` and `VolumeTracings.csv` with the release's headers and conventions.

The left ventricle is an ellipse whose size follows a cardiac cycle; its tracings are written the way the
release does (first row the long axis, then pairs of points on the two walls across it), so a converter can
be exercised, and benchmarked, without the real dataset."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from nnunetv2_msvmamba.common.parallel import parallel_map

FRAME_SIZE = 112
FILE_LIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames",
                     "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
NOISE_POOL = 8  # distinct speckle images per video, cycled so that neighbouring frames always differ


@dataclass(frozen=True)
class LeftVentricle:
    """An elliptical LV cavity: centre (x, y), half width across and half length along the long axis
    (pixels), long axis tilted `angle` radians from the image's vertical."""
    centre_x: float
    centre_y: float
    half_width: float
    half_length: float
    angle: float = 0.0

    def scaled(self, factor: float) -> "LeftVentricle":
        return LeftVentricle(self.centre_x, self.centre_y, self.half_width * factor,
                             self.half_length * (1 + (factor - 1) / 2), self.angle)

    def tracing(self, n_discs: int = 20) -> np.ndarray:
        """EchoNet-style tracing rows (X1, Y1, X2, Y2): the long axis (apex, base), then `n_discs` pairs of
        points on the two walls, each pair across the long axis."""
        axis = np.array([math.sin(self.angle), math.cos(self.angle)])  # apex -> base, image (x, y)
        across = np.array([axis[1], -axis[0]])
        centre = np.array([self.centre_x, self.centre_y])
        apex, base = centre - self.half_length * axis, centre + self.half_length * axis
        rows = [np.concatenate([apex, base])]
        for t in np.linspace(-1, 1, n_discs + 2)[1:-1]:
            on_axis = centre + t * self.half_length * axis
            half_chord = self.half_width * math.sqrt(1 - t * t)
            rows.append(np.concatenate([on_axis - half_chord * across, on_axis + half_chord * across]))
        return np.array(rows)


@dataclass
class SyntheticVideo:
    """One video of the synthetic release. `traced_frames` lists the traced frames in CSV order; a frame
    listed in `tracing_overrides` gets those rows instead of the ventricle's own tracing."""
    name: str
    split: str
    n_frames: int
    traced_frames: Sequence[int]
    period: int = 40
    fps: int = 50
    ventricle: LeftVentricle = LeftVentricle(56, 60, 16, 30, 0.15)
    seed: int = 0
    contraction: float = 0.2  # the LV's relative shrinking in width from end-diastole to end-systole is twice this
    tracing_overrides: dict[int, np.ndarray] = field(default_factory=dict)

    def size_factor(self, frame: int) -> float:
        """LV scale over the cardiac cycle: largest (end-diastole) at multiples of `period`."""
        return 1 - self.contraction + self.contraction * math.cos(2 * math.pi * frame / self.period)

    def ventricle_at(self, frame: int) -> LeftVentricle:
        return self.ventricle.scaled(self.size_factor(frame))

    def tracing_at(self, frame: int) -> np.ndarray:
        if frame in self.tracing_overrides:
            return np.asarray(self.tracing_overrides[frame], dtype=float)
        return self.ventricle_at(frame).tracing()

    def frames(self) -> np.ndarray:
        """The grey frames (n_frames, 112, 112) uint8: speckled tissue in an imaging sector, dark cavity."""
        rng = np.random.default_rng(self.seed)
        rows, columns = np.mgrid[:FRAME_SIZE, :FRAME_SIZE].astype(float)
        radius = np.hypot(columns - FRAME_SIZE / 2, rows + 4)
        angle = np.arctan2(columns - FRAME_SIZE / 2, rows + 4)
        sector = (radius < FRAME_SIZE * 1.05) & (np.abs(angle) < math.radians(38))
        tissue = cv2.GaussianBlur(rng.rayleigh(70, (FRAME_SIZE, FRAME_SIZE)), (0, 0), 1.2)
        speckle = rng.normal(0, 14, (NOISE_POOL, FRAME_SIZE, FRAME_SIZE))
        frames = np.empty((self.n_frames, FRAME_SIZE, FRAME_SIZE), np.uint8)
        for index in range(self.n_frames):
            lv = self.ventricle_at(index)
            u = (columns - lv.centre_x) * math.cos(lv.angle) - (rows - lv.centre_y) * math.sin(lv.angle)
            v = (columns - lv.centre_x) * math.sin(lv.angle) + (rows - lv.centre_y) * math.cos(lv.angle)
            cavity = (u / lv.half_width) ** 2 + (v / lv.half_length) ** 2 <= 1
            image = np.where(cavity, 12.0, 60.0 + tissue) + speckle[index % NOISE_POOL]
            frames[index] = np.clip(np.where(sector, image, 0), 0, 255).astype(np.uint8)
        return frames


def write_avi(path: Path, frames: np.ndarray, fps: float) -> None:
    """Writes grey frames as an MJPG AVI with three identical colour channels, like the release's videos."""
    height, width = frames.shape[1:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write MJPG AVI files here")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()


def ejection_fraction(video: SyntheticVideo) -> tuple[float, float, float]:
    """(EF %, ESV, EDV) of the ellipse by the single-plane area-length method (arbitrary volume units)."""
    def volume(factor: float) -> float:
        lv = video.ventricle.scaled(factor)
        area, length = math.pi * lv.half_width * lv.half_length, 2 * lv.half_length
        return 8 * area * area / (3 * math.pi * length)
    edv, esv = volume(video.size_factor(0)), volume(video.size_factor(video.period / 2))
    return round(100 * (edv - esv) / edv, 4), round(esv, 4), round(edv, 4)


def write_video(video_and_folder: tuple[SyntheticVideo, Path]) -> None:
    video, folder = video_and_folder
    write_avi(folder / f"{video.name}.avi", video.frames(), video.fps)


def write_release(root: Path, videos: Sequence[SyntheticVideo], file_list_names: Sequence[str] | None = None,
                  extra_tracings: Sequence[tuple[str, int, np.ndarray]] = (), num_processes: int = 1) -> None:
    """Writes `videos` under `root` in the EchoNet-Dynamic layout. `file_list_names` overrides the
    FileName column (the release has no extension there; `.avi` is also seen); `extra_tracings` are
    (FileName, frame, rows) written as well, e.g. for a video that is not in FileList.csv."""
    root = Path(root)
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    names = file_list_names or [video.name for video in videos]
    with open(root / "FileList.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(FILE_LIST_COLUMNS)
        for video, name in zip(videos, names):
            ef, esv, edv = ejection_fraction(video)
            writer.writerow([name, ef, esv, edv, FRAME_SIZE, FRAME_SIZE, video.fps, video.n_frames, video.split])
    with open(root / "VolumeTracings.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(TRACING_COLUMNS)
        traced = [(f"{v.name}.avi", frame, v.tracing_at(frame)) for v in videos for frame in v.traced_frames]
        for file_name, frame, rows in [*traced, *extra_tracings]:
            for x1, y1, x2, y2 in rows:
                writer.writerow([file_name, *(f"{value:.6f}" for value in (x1, y1, x2, y2)), frame])
    parallel_map(write_video, [(video, root / "Videos") for video in videos], num_processes,
                 desc="synthetic videos")


def random_release_videos(n_videos: int, n_frames: int = 175, seed: int = 0) -> list[SyntheticVideo]:
    """`n_videos` ordinary videos (about 75/12.5/12.5 % TRAIN/VAL/TEST) of `n_frames` frames whose traced
    frames lie in the last cardiac cycle, so a converter decodes almost the whole video. In the release's
    CSV order: end-systole first, end-diastole last."""
    rng = np.random.default_rng(seed)
    videos = []
    for index in range(n_videos):
        period = int(rng.integers(30, 50))
        ed = (n_frames - 1) // period * period
        es = ed - period // 2 if ed >= period else ed + period // 2
        if es >= n_frames:
            raise ValueError(f"{n_frames} frames is too short for a cardiac cycle of {period} frames")
        split = "TRAIN" if index % 8 < 6 else ("VAL" if index % 8 == 6 else "TEST")
        ventricle = LeftVentricle(float(rng.uniform(50, 62)), float(rng.uniform(55, 65)),
                                  float(rng.uniform(12, 18)), float(rng.uniform(26, 34)),
                                  float(rng.uniform(-0.3, 0.3)))
        videos.append(SyntheticVideo(f"0X{index:016X}", split, n_frames, [es, ed], period, 50, ventricle,
                                     seed=seed * 1_000_003 + index, contraction=float(rng.uniform(0.1, 0.25))))
    return videos
