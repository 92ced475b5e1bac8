"""Label maps with known geometry for the clinical tests: half-ellipses (a cavity whose long axis, apex and
annulus are known exactly) drawn at any angle and spacing, beating sequences of them, and small label folders
in the converters' layouts."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dataset_conversion.common import write_image_2d

LV, MYOCARDIUM, ATRIUM = 1, 2, 3


def half_ellipse(shape: tuple[int, int], base_rc: tuple[float, float], length: float, half_width: float,
                 angle: float = 0.0, spacing_rc: tuple[float, float] = (1.0, 1.0), atrium: bool = True,
                 wall: float = 0.0) -> np.ndarray:
    """A cavity shaped like half an ellipse (semi-axes `length` along the long axis, `half_width` across, in
    mm) whose flat side is the mitral annulus, centred on `base_rc` (mm). At angle 0 the apex points up (to
    lower rows); `angle` turns it counter-clockwise on the screen. With `atrium`, a left atrium lies beyond the
    annulus; with `wall`, a myocardium of that thickness surrounds the cavity."""
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    dr, dc = rows * spacing_rc[0] - base_rc[0], columns * spacing_rc[1] - base_rc[1]
    to_apex = np.array([-math.cos(angle), -math.sin(angle)])  # (row, column) unit vector towards the apex
    along = dr * to_apex[0] + dc * to_apex[1]
    across = -dr * to_apex[1] + dc * to_apex[0]
    labels = np.zeros(shape, np.uint8)
    if wall:
        outer = (along >= 0) & ((along / (length + wall)) ** 2 + (across / (half_width + wall)) ** 2 <= 1)
        labels[outer] = MYOCARDIUM
    labels[(along >= 0) & ((along / length) ** 2 + (across / half_width) ** 2 <= 1)] = LV
    if atrium:
        labels[(along < 0) & (along > -0.4 * length) & (np.abs(across) <= half_width + wall)] = ATRIUM
    return labels


def apex_of(base_rc: Sequence[float], length: float, angle: float) -> np.ndarray:
    return np.asarray(base_rc, float) + length * np.array([-math.cos(angle), -math.sin(angle)])


def half_ellipsoid_volume(length: float, half_width_a: float, half_width_b: float) -> float:
    """Half of an ellipsoid cut through its centre across the long axis: (2/3) pi a b L."""
    return 2.0 / 3.0 * math.pi * half_width_a * half_width_b * length


def beating_sequence(n_frames: int, period: float, first_ed: float, shape: tuple[int, int] = (96, 80),
                     length: float = 60.0, half_width: float = 20.0, es_scale: float = 0.8, noise: float = 0.01,
                     seed: int = 0, atrium: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A cavity that shrinks by `es_scale` in every direction at ES and back, every `period` frames, ED at
    `first_ed` + k period, with independent per-frame jitter of its axes (relative SD `noise`). Returns the
    (frames, rows, columns) labels and each frame's scale."""
    rng = np.random.default_rng(seed)
    frames = np.arange(n_frames)
    scale = es_scale + (1 - es_scale) * 0.5 * (1 + np.cos(2 * math.pi * (frames - first_ed) / period))
    base = (shape[0] - 10.0, shape[1] / 2.0)
    labels = np.stack([half_ellipse(shape, base, length * s * (1 + noise * rng.standard_normal()),
                                    half_width * s * (1 + noise * rng.standard_normal()), atrium=atrium)
                       for s in scale])
    return labels, scale


def write_label_folder(folder: Path, cases: dict[str, np.ndarray], spacing_rc: tuple[float, float] = (1.0, 1.0),
                       spacings: Optional[dict[str, tuple[float, float]]] = None) -> Path:
    """Writes 2D label maps as `<case>.nii.gz` with nnU-Net's layout (spacing x = columns first on disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    for case, labels in cases.items():
        row_spacing, column_spacing = (spacings or {}).get(case, spacing_rc)
        write_image_2d(labels.astype(np.uint8), (column_spacing, row_spacing), folder / f"{case}.nii.gz")
    return folder
