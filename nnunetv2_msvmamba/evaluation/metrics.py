"""Overlap and surface-distance metrics of one binary mask against another, in physical units.

Definitions (the README states them too):
- Dice = 2|R∩P| / (|R| + |P|), from nnU-Net's own tp/fp/fn counting.
- Surface voxels: mask voxels with at least one face-neighbour outside the mask (or on the image border),
  as MedPy does. Distances are Euclidean in millimetres using the voxel spacing of each axis.
- HD95: the 95th percentile of the pooled surface distances of both directions (every reference surface
  voxel to the nearest prediction surface voxel, and every prediction surface voxel to the nearest
  reference surface voxel). MSD: the mean of that same pooled set (average symmetric surface distance).
- Empty masks: both empty -> Dice 1, HD95 0, MSD 0; exactly one empty -> Dice 0, HD95 and MSD undefined
  (NaN), and the case is counted separately in the reports.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn
from scipy.ndimage import binary_erosion, distance_transform_edt, generate_binary_structure

# Values of MaskComparison.empty.
NEITHER_EMPTY = ""
BOTH_EMPTY = "both"
REFERENCE_EMPTY = "reference"
PREDICTION_EMPTY = "prediction"


@dataclass(frozen=True)
class MaskComparison:
    """Metrics of a predicted mask against a reference mask. Sizes are areas (2D) or volumes (3D) in
    mm² / mm³; `empty` says which mask, if any, was empty."""

    dice: float
    hd95_mm: float
    msd_mm: float
    size: float
    size_reference: float
    empty: str


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """The voxels of `mask` that touch the background through a face (or lie on the image border)."""
    face_connectivity = generate_binary_structure(mask.ndim, 1)
    return mask & ~binary_erosion(mask, structure=face_connectivity, border_value=0)


def bounding_box_with_margin(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """The smallest box holding every voxel of `mask`, grown by `margin` voxels and clipped to the image.
    One voxel of margin keeps the surface of a mask that does not touch the image border unchanged."""
    box = []
    for axis in range(mask.ndim):
        other_axes = tuple(a for a in range(mask.ndim) if a != axis)
        occupied = np.flatnonzero(mask.any(axis=other_axes))
        box.append(slice(max(int(occupied[0]) - margin, 0), min(int(occupied[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def symmetric_surface_distances(reference: np.ndarray, prediction: np.ndarray,
                                spacing: Sequence[float]) -> np.ndarray:
    """Surface distances in mm of both directions, pooled (reference->prediction first). Both masks must
    be non-empty."""
    # Every surface voxel of both masks lies inside the union's box, so distances computed on the crop are
    # exact; cropping only saves time on large images with small structures.
    crop = bounding_box_with_margin(reference | prediction)
    reference_surface = surface_voxels(reference[crop])
    prediction_surface = surface_voxels(prediction[crop])
    to_reference = distance_transform_edt(~reference_surface, sampling=spacing)
    to_prediction = distance_transform_edt(~prediction_surface, sampling=spacing)
    return np.concatenate([to_prediction[reference_surface], to_reference[prediction_surface]])


def compare_masks(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]) -> MaskComparison:
    """Dice, HD95, MSD and sizes of boolean `prediction` against boolean `reference` (same shape) with
    voxel `spacing` in mm per array axis; empty masks follow the convention in this module's docstring."""
    if reference.shape != prediction.shape or len(spacing) != reference.ndim:
        raise ValueError(f"masks of shapes {reference.shape} and {prediction.shape} with spacing {tuple(spacing)}")
    voxel_size = float(np.prod(spacing))
    tp, fp, fn, _ = compute_tp_fp_fn_tn(reference, prediction)
    size, size_reference = float(tp + fp) * voxel_size, float(tp + fn) * voxel_size
    reference_empty, prediction_empty = tp + fn == 0, tp + fp == 0
    if reference_empty and prediction_empty:
        return MaskComparison(1.0, 0.0, 0.0, size, size_reference, BOTH_EMPTY)
    if reference_empty or prediction_empty:
        return MaskComparison(0.0, math.nan, math.nan, size, size_reference,
                              REFERENCE_EMPTY if reference_empty else PREDICTION_EMPTY)
    distances = symmetric_surface_distances(reference, prediction, spacing)
    return MaskComparison(dice=float(2 * tp / (2 * tp + fp + fn)), hd95_mm=float(np.percentile(distances, 95)),
                          msd_mm=float(distances.mean()), size=size, size_reference=size_reference,
                          empty=NEITHER_EMPTY)
