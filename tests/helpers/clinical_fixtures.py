"""Label maps with known geometry for the clinical tests: half-ellipses (a cavity whose long axis, apex and
annulus are known exactly) drawn at any angle and spacing, beating sequences of them, and small label folders
in the converters' layouts."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest

from dataset_conversion.camus import convert_camus
from dataset_conversion.common import write_image_2d
from dataset_conversion.synthetic_camus import generate_synthetic_camus

LV, MYOCARDIUM, ATRIUM = 1, 2, 3
CONVERTED_CAMUS_PATIENTS = 8


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


NIFTI_PIXDIM_OFFSET = 76  # bytes: pixdim[0..7], float32, in the NIfTI-1 header


def set_nifti_pixdim(path: Path, axis: int, value: float) -> None:
    """Overwrites pixdim[axis] (1: x, 2: y, 3: z) in a NIfTI-1 file's header, as a broken writer would leave it:
    nibabel and SimpleITK recompute the header from the affine or spacing, so it takes editing the bytes."""
    import gzip
    import struct

    compressed = path.name.endswith(".gz")
    content = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    struct.pack_into("<f", content, NIFTI_PIXDIM_OFFSET + 4 * axis, value)
    path.write_bytes(gzip.compress(bytes(content)) if compressed else bytes(content))


def write_sequence(path: Path, labels: np.ndarray, spacing_rc: tuple[float, float] = (0.3, 0.3),
                   dtype: type = np.uint8) -> Path:
    """A (frames, rows, columns) label sequence as an (x, y, t) image, as CAMUS half sequences are stored."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(labels.astype(dtype))
    image.SetSpacing((spacing_rc[1], spacing_rc[0], 1.0))
    sitk.WriteImage(image, str(path))
    return path


def with_island(labels: np.ndarray, label: int, corner_rc: tuple[int, int], size: int) -> np.ndarray:
    """A copy of `labels` with a `size` x `size` square island of `label` whose top-left pixel is `corner_rc`."""
    changed = labels.copy()
    changed[corner_rc[0]:corner_rc[0] + size, corner_rc[1]:corner_rc[1] + size] = label
    return changed


CAMUS_LIKE_SHAPE = (140, 100)
CAMUS_LIKE_SPACING = (0.3, 0.3)
CAMUS_LIKE_BASE = (30.0, 15.0)  # annulus midpoint, mm


def camus_like_cases(patients: dict[str, float], es_scale: float = 0.8) -> dict[str, np.ndarray]:
    """`<patient>_{2CH,4CH}_{ED,ES}` label maps (cavity, myocardium, atrium) of half-ellipse ventricles, the
    long axis of each patient's 2CH view at ED `patients[patient]` mm, its 4CH view 3 % shorter and wider."""
    cases = {}
    for patient, length in patients.items():
        for view, (view_length, half_width) in (("2CH", (length, 0.36 * length)),
                                                ("4CH", (0.97 * length, 0.41 * length))):
            for phase, scale in (("ED", 1.0), ("ES", es_scale)):
                cases[f"{patient}_{view}_{phase}"] = half_ellipse(
                    CAMUS_LIKE_SHAPE, CAMUS_LIKE_BASE, view_length * scale, half_width * scale,
                    spacing_rc=CAMUS_LIKE_SPACING, wall=1.5)
    return cases


def badly_segmented_ed_frame() -> np.ndarray:
    """Beats with ED at frames 5 and 25, ES at 15 and 35; the cavity of frame 5 segmented at half its size. The
    3-frame median makes frame 5 the maximum of the smoothed curve all the same, as its neighbours are."""
    labels, _ = beating_sequence(40, 20.0, 5.0, noise=0.0)
    labels[5] = half_ellipse(labels.shape[1:], (labels.shape[1] - 10.0, labels.shape[2] / 2.0), 30.0, 10.0,
                             atrium=False)
    return labels


def converted_synthetic_camus(folder: Path) -> Path:
    """Synthetic CAMUS release -> CAMUS converter, under `folder`: Dataset601_CAMUS of CONVERTED_CAMUS_PATIENTS
    patients with labelsTr, labelsTs, cases.csv and a link `release` to the release it was converted from."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_raw", str(folder / "raw"))
        patch.setenv("nnUNet_preprocessed", str(folder / "preprocessed"))
        (folder / "raw").mkdir()
        (folder / "preprocessed").mkdir()
        generate_synthetic_camus(folder / "release", n_patients=CONVERTED_CAMUS_PATIENTS, seed=5, n_frames=(4, 6),
                                 split=(6, 1, 1), num_processes=1)
        convert_camus(folder / "release", num_processes=1)
    dataset = folder / "raw" / "Dataset601_CAMUS"
    dataset.joinpath("release").symlink_to(folder / "release")
    return dataset
