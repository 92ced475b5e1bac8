"""Synthetic apical 2- and 4-chamber echocardiograms written in the CAMUS 2023 public release layout.

Lets anyone run the whole pipeline (conversion, nnU-Net planning, training, prediction, evaluation) without
the registration-gated CAMUS data. The output goes through the real CAMUS converter unchanged:

    ROOT/database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].nii.gz
    ROOT/database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_half_sequence[_gt].nii.gz
    ROOT/database_nifti/patientNNNN/Info_{2CH,4CH}.cfg
    ROOT/database_split/subgroup_{training,validation,testing}.txt
    ROOT/synthetic_camus.json        (how it was generated; marks the folder as replaceable by --overwrite)

Each view is an anatomical model (LV cavity, myocardium, left atrium, and in the 4-chamber view the unlabelled
right ventricle and atrium) drawn on the pixel grid; the labels are that drawing, so they agree exactly with
the image. The image is the model's echogenicity map seen through a fan-shaped field of view with Rayleigh
speckle, near-field clutter, echo dropout and log compression. Systole is the model interpolated from its ED
to its ES shape (cavity shrinks, wall thickens, annulus descends towards the apex, atrium fills), and the
ED/ES images are the first and last frames of the half sequence, as in the real release.

The hearts are life-size at any image size: the anatomy is an adult heart in mm (Simpson's biplane EDV about
70-160 mL, EF 40-68 %), and the pixel spacing follows from a real apical field of view (FIELD_DEPTH_MM deep) or,
when given, sets the field of view, which must then be large enough to hold a heart.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import SimpleITK as sitk
from nnunetv2.configuration import default_num_processes
from scipy import ndimage

from dataset_conversion.common import write_image_2d
from nnunetv2_msvmamba.common.arguments import positive_int
from nnunetv2_msvmamba.common.atomic import atomic_folder
from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.parallel import parallel_map

VIEWS = ("2CH", "4CH")
SUBGROUPS = ("training", "validation", "testing")
IMAGE_QUALITIES = ("Good", "Medium", "Poor")
BACKGROUND, LV_CAVITY, LV_MYOCARDIUM, LEFT_ATRIUM = 0, 1, 2, 3
MARKER_FILE = "synthetic_camus.json"
DEFAULT_IMAGE_SIZE = (256, 224)
DEFAULT_SPLIT = (0.7, 0.1, 0.2)
MIN_IMAGE_SIDE = 64
MAX_PATIENTS = 9999
MAX_PLACEMENT_ATTEMPTS = 200
# The anatomy is life-size: drawn in mm, then put on the pixel grid. By default the field of view is
# FIELD_DEPTH_MM deep (spacing = depth / rows): adult apical views are imaged about 16 cm deep so that the whole
# left atrium shows, and the hearts sampled here reach about 130 mm below the probe, the largest 160 mm (cavity
# apex 22-30 mm deep, ventricle 65-84 mm, atrium 25-40 mm at end diastole, up to a quarter longer at end
# systole). CAMUS's images are about 120 mm deep, each cropped around its own patient's heart; one depth for all
# patients needs the margin. Narrow images get a larger spacing, so that the field is also at least
# FIELD_WIDTH_MM wide (CAMUS's images are about 3/4 as wide as deep).
FIELD_DEPTH_MM = 160.0
FIELD_WIDTH_MM = 0.75 * FIELD_DEPTH_MM
# The smallest field of view (depth, width) that still holds a typical life-size heart (hearts that do not fit
# are drawn again: about 6 draws per patient here, 1.3 at the default field); a spacing that gives less, for the
# patient whose spacing is SPACING_VARIATION below nominal, is refused.
MIN_FIELD_DEPTH_MM = 140.0
MIN_FIELD_WIDTH_MM = 100.0
SPACING_VARIATION = 0.1  # each patient's spacing is the nominal one times 1 +- up to this
# Space kept clear between any labelled pixel and the edge of the fan, so no annotated structure is ever cut by
# the field of view.
FAN_MARGIN_MM = 2.5
# Valve leaflets, the septa between chambers, the pericardium: a few mm thick.
THIN_MM = 1.5
# A drawn structure smaller than this is not usable as a ground truth.
MIN_STRUCTURE_AREA_MM2 = 40.0
# The imaging system's own scales, the same at any pixel size: the speckle grain along and across the beam,
# the beam's blur of edges, the scanner's smoothing of the envelope, the grain of the tissue's and the
# myocardium's texture, and how far from the probe the near-field clutter reaches.
SPECKLE_AXIAL_MM, SPECKLE_LATERAL_MM = 0.47, 2.05
BEAM_BLUR_MM = 0.53
ENVELOPE_BLUR_MM = 0.35
TISSUE_GRAIN_MM = 7.5
MYOCARDIAL_GRAIN_MM = 3.75
CLUTTER_REACH_MM = 18.0
# Echo amplitude (dB) displayed as white: the brightest pericardium stays just below it, so it does not clip.
DISPLAY_TOP_DB = 8.0


@dataclass(frozen=True)
class GenerationSettings:
    """What every patient of one dataset shares."""
    image_size: tuple[int, int]
    spacing_mm: float        # nominal; each patient's varies by up to SPACING_VARIATION
    n_frames: tuple[int, int]
    seed: int


@dataclass(frozen=True)
class Fan:
    """The sector-shaped field of view: its apex (the probe) sits above the top centre of the image."""
    apex_x: float
    apex_y: float
    half_angle: float
    radius: float


@dataclass(frozen=True)
class HeartShape:
    """The anatomy of one view at one instant of systole, in pixels and radians. Interpolating two of these
    field by field gives the frames in between."""
    apex_x: float
    apex_y: float
    tilt: float              # LV long axis against the image vertical; positive puts the base to the right
    length: float            # endocardial apex to mitral annulus
    half_width_left: float
    half_width_right: float
    wall: float              # myocardial thickness
    la_neck: float           # atrial half-width at the annulus
    la_bulb: float           # atrial half-width at its widest
    la_length: float         # annulus to the atrial roof
    rv_half_width: float     # 0 in the 2-chamber view, which shows no right heart
    rv_half_length: float
    ra_bulb: float
    ra_length: float


@dataclass(frozen=True)
class ShapeStyle:
    """The parts of a view's anatomy that systole does not change: its individual form."""
    cap_fraction: float      # share of the LV length taken by the rounded apical cap
    base_narrowing: float    # how much the cavity narrows from mid-ventricle to the annulus
    bend: float              # curvature of the long axis
    wobble_left: tuple[tuple[float, float], ...]   # (amplitude, phase) of harmonics along the left wall
    wobble_right: tuple[tuple[float, float], ...]
    wall_side_gradient: float  # septum thicker (>0) or thinner (<0) than the lateral wall
    la_widest: float         # where the atrium is widest, as a fraction of its length from the annulus
    la_tilt: float           # atrial axis against the LV axis
    rv_depth: float          # where the RV centre sits along the LV axis, as a fraction of its length


@dataclass(frozen=True)
class Appearance:
    """How a view's anatomy looks through the probe; Poor quality means low contrast, clutter and dropout."""
    quality: str
    blood: float
    myocardium: float
    wall: float
    pericardium: float
    tissue_mean: float
    clutter: float
    dynamic_range_db: float
    gain_db: float
    dropouts: tuple[tuple[float, float, float], ...]  # (angle, angular width, depth of the gain loss)


@dataclass
class Anatomy:
    """Labels (0 background, 1 LV cavity, 2 myocardium, 3 LA) and the unlabelled structures that show."""
    labels: np.ndarray
    right_heart: np.ndarray
    walls: np.ndarray
    pericardium: np.ndarray
    leaflets: np.ndarray


@dataclass
class ViewSeries:
    """One view's half sequence, ED first and ES last, with what its Info file reports."""
    images: np.ndarray       # (frames, rows, columns) uint8
    labels: np.ndarray       # (frames, rows, columns) uint8
    quality: str
    frame_rate: int


@dataclass
class PatientRecord:
    """What one patient's folder holds beyond the images."""
    name: str
    sex: str
    age: int
    ejection_fraction: int
    spacing_mm: float
    views: dict[str, ViewSeries]


# ------------------------------------------------------------------------------------------------- geometry

class PixelGrid:
    """Pixel-centre coordinates of one image, their polar coordinates around the fan apex, and the scale that
    turns the model's millimetres into pixels."""

    def __init__(self, rows: int, columns: int, fan: Fan, pixels_per_mm: float):
        self.rows, self.columns = rows, columns
        self.pixels_per_mm = pixels_per_mm
        self.y, self.x = np.mgrid[0:rows, 0:columns].astype(np.float32)
        self.depth = np.hypot(self.x - fan.apex_x, self.y - fan.apex_y)
        self.angle = np.arctan2(self.x - fan.apex_x, self.y - fan.apex_y)

    def axis_coordinates(self, origin_x: float, origin_y: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """(along, across) coordinates in a frame whose first axis points down, turned by `angle`."""
        dx, dy = self.x - origin_x, self.y - origin_y
        along = dx * math.sin(angle) + dy * math.cos(angle)
        across = dx * math.cos(angle) - dy * math.sin(angle)
        return along, across


def fan_mask(grid: PixelGrid, fan: Fan, margin: float = 0.0) -> np.ndarray:
    """Pixels inside the sector, at least `margin` pixels away from its edges and the image border."""
    inside = (grid.depth <= fan.radius - margin) & (grid.y >= fan.apex_y + margin)
    lateral_distance = grid.depth * np.sin(fan.half_angle - np.abs(grid.angle))
    inside &= (np.abs(grid.angle) <= fan.half_angle) & (lateral_distance >= margin)
    if margin:
        inside &= (grid.x >= margin) & (grid.x <= grid.columns - 1 - margin)
        inside &= (grid.y >= margin) & (grid.y <= grid.rows - 1 - margin)
    return inside


def wall_profile(position: np.ndarray, style: ShapeStyle, wobble: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Cavity half-width along the long axis (0 apex, 1 annulus) relative to its widest point: a rounded
    apical cap, a gently narrowing base, and a few low harmonics that make every wall individual."""
    cap = style.cap_fraction
    in_cap = np.sqrt(np.clip(1.0 - ((cap - position) / cap) ** 2, 0.0, None))
    in_body = 1.0 - style.base_narrowing * ((position - cap) / (1.0 - cap)) ** 2
    profile = np.where(position < cap, in_cap, in_body)
    for harmonic, (amplitude, phase) in enumerate(wobble, start=2):
        profile = profile * (1.0 + amplitude * np.sin(harmonic * math.pi * position + phase))
    return profile


def atrium_mask(along: np.ndarray, across: np.ndarray, centre_across: float, neck: float, bulb: float,
                length: float, widest: float) -> np.ndarray:
    """A bulb hanging from the annulus: `neck` wide at the valve, widening smoothly to `bulb`, closed by an
    elliptic roof. Pixels beside the valve plane (negative `along`, when the atrium is tilted) get the neck
    width, so the atrium always seals the base of the ventricle."""
    from_valve = np.maximum(along, 0.0)
    widest_at = widest * length
    widening = neck + (bulb - neck) * np.sin(0.5 * math.pi * np.minimum(from_valve / widest_at, 1.0))
    roof = bulb * np.sqrt(np.clip(1.0 - ((from_valve - widest_at) / (length - widest_at)) ** 2, 0.0, None))
    half_width = np.where(from_valve < widest_at, widening, roof)
    return (np.abs(across - centre_across) <= half_width) & (along <= length)


def ellipse(along: np.ndarray, across: np.ndarray, centre_along: float, centre_across: float,
            half_along: float, half_across: float) -> np.ndarray:
    return ((along - centre_along) / half_along) ** 2 + ((across - centre_across) / half_across) ** 2 <= 1.0


def cavity_edges(position: np.ndarray, length: float, half_width_left: float, half_width_right: float,
                 style: ShapeStyle) -> tuple[np.ndarray, np.ndarray]:
    """Across-axis positions of the left and right endocardial borders at `position` (0 apex, 1 annulus)."""
    centre_line = style.bend * length * position ** 2
    return (centre_line - half_width_left * wall_profile(position, style, style.wobble_left),
            centre_line + half_width_right * wall_profile(position, style, style.wobble_right))


def base_midpoint(shape: HeartShape, style: ShapeStyle) -> tuple[float, float]:
    """Image coordinates (x, y) of the middle of the cavity's base, where the atrium hangs."""
    base_left, base_right = cavity_edges(np.float32(1.0), shape.length, shape.half_width_left,
                                         shape.half_width_right, style)
    across = 0.5 * float(base_left + base_right)
    return (shape.apex_x + shape.length * math.sin(shape.tilt) + across * math.cos(shape.tilt),
            shape.apex_y + shape.length * math.cos(shape.tilt) - across * math.sin(shape.tilt))


def draw_anatomy(shape: HeartShape, style: ShapeStyle, grid: PixelGrid) -> Anatomy:
    """Rasterises one instant of a view. Cavity, myocardium and atrium are disjoint by construction: the
    myocardium is the band within `wall` of the cavity above the annulus line, the atrium lies below it."""
    thin = THIN_MM * grid.pixels_per_mm
    along, across = grid.axis_coordinates(shape.apex_x, shape.apex_y, shape.tilt)
    position = along / shape.length
    left, right = cavity_edges(position, shape.length, shape.half_width_left, shape.half_width_right, style)
    above_annulus = along <= shape.length
    cavity = (along >= 0) & above_annulus & (across >= left) & (across <= right)

    mean_half_width = 0.5 * (shape.half_width_left + shape.half_width_right)
    # The septum (left) and the lateral wall differ in thickness; the apex is thinner than both.
    side_factor = 1.0 - style.wall_side_gradient * np.tanh(across / mean_half_width)
    apex_factor = 0.75 + 0.25 * np.clip(position / 0.25, 0.0, 1.0)
    epicardium = above_annulus & (ndimage.distance_transform_edt(~cavity) <= shape.wall * side_factor * apex_factor)

    hinge_x, hinge_y = base_midpoint(shape, style)
    la_along, la_across = grid.axis_coordinates(hinge_x, hinge_y, shape.tilt + style.la_tilt)
    atrium = atrium_mask(la_along, la_across, 0.0, shape.la_neck, shape.la_bulb, shape.la_length,
                         style.la_widest) & ~above_annulus

    labels = np.zeros(cavity.shape, np.uint8)
    labels[epicardium] = LV_MYOCARDIUM
    labels[cavity] = LV_CAVITY
    labels[atrium] = LEFT_ATRIUM

    right_heart = np.zeros_like(cavity)
    ventricles = epicardium
    if shape.rv_half_width > 0:
        # The RV lies against the septum, its base (tricuspid) a little nearer the apex than the mitral one.
        tricuspid = 0.95 * shape.length
        rv_centre = -(mean_half_width + shape.wall + 0.8 * shape.rv_half_width)
        right_ventricle = ellipse(along, across, style.rv_depth * shape.length, rv_centre,
                                  shape.rv_half_length, shape.rv_half_width) & (along <= tricuspid) & ~epicardium
        ra_centre = -(shape.la_bulb + 2 * thin + 0.9 * shape.ra_bulb)
        right_atrium = atrium_mask(la_along, la_across, ra_centre, 0.8 * shape.ra_bulb, shape.ra_bulb,
                                   shape.ra_length, style.la_widest)
        right_atrium &= (along > tricuspid + thin) & ~epicardium
        right_atrium &= ndimage.distance_transform_edt(~atrium) > 2 * thin  # the interatrial septum
        right_heart = right_ventricle | right_atrium
        ventricles = epicardium | right_ventricle

    chambers = atrium | right_heart
    walls = (ndimage.distance_transform_edt(~chambers) <= thin) & ~chambers & (labels == BACKGROUND)
    distance_to_ventricles = ndimage.distance_transform_edt(~(ventricles | (walls & above_annulus)))
    pericardium = (distance_to_ventricles > 0) & (distance_to_ventricles <= 1.2 * thin) & above_annulus
    pericardium &= (labels == BACKGROUND) & ~chambers & ~walls
    leaflets = atrium & (along - shape.length <= thin)
    return Anatomy(labels, right_heart, walls, pericardium, leaflets)


def anatomy_fits(anatomy: Anatomy, visible: np.ndarray, pixels_per_mm: float) -> bool:
    """Whether a drawn instant is a usable ground truth: every structure present and inside the fan, and
    the cavity closed off by myocardium and atrium (it never touches the background)."""
    labels = anatomy.labels
    if labels[~visible].any():
        return False
    minimum_area = MIN_STRUCTURE_AREA_MM2 * pixels_per_mm ** 2
    if any(np.count_nonzero(labels == label) < minimum_area for label in (LV_CAVITY, LV_MYOCARDIUM, LEFT_ATRIUM)):
        return False
    cavity_and_neighbours = ndimage.binary_dilation(labels == LV_CAVITY, structure=np.ones((3, 3), bool))
    return not np.any(labels[cavity_and_neighbours] == BACKGROUND)


# ------------------------------------------------------------------------------------------------- sampling

@dataclass(frozen=True)
class PatientHeart:
    """Size (mm) and function of one patient's left heart, shared by both views."""
    length: float              # ED apex to mitral annulus
    half_width: float          # ED cavity half-width at its widest
    wall: float                # ED myocardial thickness
    length_shortening: float   # ES / ED long-axis length
    width_shortening: float    # ES / ED cavity width
    wall_thickening: float     # ES / ED myocardial thickness
    atrial_filling: float      # ES / ED atrial size


def sample_patient_heart(rng: np.random.Generator) -> PatientHeart:
    """An adult left ventricle as apical views show it at end diastole: 68-80 mm from apex to annulus, 60-70 %
    as wide, walls 7-10 mm thick. Simpson's biplane method measures EDV 70-160 mL, ESV 20-90 mL, EF 40-68 % on
    the ground truth of such hearts (150 patients per image size, 64 to 256 rows)."""
    length = rng.uniform(68.0, 80.0)
    # Volume goes roughly with width squared times length, so a target ejection fraction sets the width.
    ejection_fraction = rng.uniform(0.40, 0.68)
    length_shortening = rng.uniform(0.85, 0.95)
    return PatientHeart(length=length, half_width=length * rng.uniform(0.30, 0.35),
                        wall=rng.uniform(7.0, 10.0), length_shortening=length_shortening,
                        width_shortening=math.sqrt((1.0 - ejection_fraction) / length_shortening),
                        wall_thickening=rng.uniform(1.25, 1.6), atrial_filling=rng.uniform(1.1, 1.25))


def sample_fan(rng: np.random.Generator, rows: int, columns: int, pixels_per_mm: float) -> Fan:
    """A sector reaching the bottom of the image, its apex (the probe) up to 3 mm above the top."""
    return Fan(apex_x=(columns - 1) / 2.0, apex_y=-pixels_per_mm * rng.uniform(0.0, 3.0),
               half_angle=rng.uniform(0.72, 0.785), radius=rows * rng.uniform(0.96, 1.0))


def sample_style(rng: np.random.Generator) -> ShapeStyle:
    def wobble() -> tuple[tuple[float, float], ...]:
        return tuple((rng.uniform(-0.04, 0.04), rng.uniform(0.0, 2 * math.pi)) for _ in range(3))

    return ShapeStyle(cap_fraction=rng.uniform(0.55, 0.75), base_narrowing=rng.uniform(0.05, 0.15),
                      bend=rng.uniform(-0.06, 0.06), wobble_left=wobble(), wobble_right=wobble(),
                      wall_side_gradient=rng.uniform(-0.15, 0.15), la_widest=rng.uniform(0.35, 0.55),
                      la_tilt=rng.uniform(-0.2, 0.2), rv_depth=rng.uniform(0.5, 0.6))


def sample_view_shapes(rng: np.random.Generator, heart: PatientHeart, view: str, columns: int,
                       pixels_per_mm: float) -> tuple[HeartShape, HeartShape, ShapeStyle]:
    """ED and ES anatomy of one view, in pixels. The 4-chamber view shows the LV right of centre, tilted with
    its base to the right, and the right heart on its left; the 2-chamber view shows the LV alone, near the
    centre. The cavity's apex lies 22-30 mm below the probe, under the chest wall and the apical myocardium."""
    style = sample_style(rng)
    if view == "4CH":
        apex_x, tilt = columns / 2.0 + pixels_per_mm * rng.uniform(0.0, 4.0), rng.uniform(0.02, 0.12)
    else:
        apex_x, tilt = columns / 2.0 + pixels_per_mm * rng.uniform(-4.0, 4.0), rng.uniform(-0.1, 0.1)
    length = heart.length * pixels_per_mm * rng.uniform(0.95, 1.05)
    half_width = heart.half_width * pixels_per_mm * rng.uniform(0.92, 1.08)
    asymmetry = rng.uniform(-0.1, 0.1)
    half_width_left, half_width_right = half_width * (1 - asymmetry), half_width * (1 + asymmetry)
    base_left, base_right = cavity_edges(np.float32(1.0), length, half_width_left, half_width_right, style)
    base_half_span = 0.5 * float(base_right - base_left)
    # The atrium's neck spans the cavity's base (and a little more), so the cavity is always closed.
    la_neck = base_half_span * rng.uniform(1.08, 1.2) + THIN_MM * pixels_per_mm
    la_bulb = la_neck * rng.uniform(1.05, 1.25)
    la_length = length * rng.uniform(0.38, 0.48)
    has_right_heart = view == "4CH"
    ed = HeartShape(apex_x=apex_x, apex_y=pixels_per_mm * rng.uniform(22.0, 30.0), tilt=tilt, length=length,
                    half_width_left=half_width_left, half_width_right=half_width_right,
                    wall=heart.wall * pixels_per_mm,
                    la_neck=la_neck, la_bulb=la_bulb, la_length=la_length,
                    rv_half_width=half_width * rng.uniform(0.55, 0.8) * has_right_heart,
                    rv_half_length=length * rng.uniform(0.40, 0.48) * has_right_heart,
                    ra_bulb=la_bulb * rng.uniform(0.8, 1.0) * has_right_heart,
                    ra_length=la_length * rng.uniform(0.8, 1.0) * has_right_heart)
    rv_shortening = rng.uniform(0.8, 0.9)
    es = dataclasses.replace(
        ed, length=ed.length * heart.length_shortening,
        half_width_left=ed.half_width_left * heart.width_shortening,
        half_width_right=ed.half_width_right * heart.width_shortening,
        wall=ed.wall * heart.wall_thickening,
        la_neck=ed.la_neck * rng.uniform(0.92, 1.0), la_bulb=ed.la_bulb * heart.atrial_filling,
        la_length=ed.la_length * heart.atrial_filling,
        rv_half_width=ed.rv_half_width * rv_shortening, rv_half_length=ed.rv_half_length * rv_shortening,
        ra_bulb=ed.ra_bulb * heart.atrial_filling, ra_length=ed.ra_length * heart.atrial_filling)
    return ed, es, style


def interpolate(ed: HeartShape, es: HeartShape, weight: float) -> HeartShape:
    return HeartShape(**{field.name: (1.0 - weight) * getattr(ed, field.name) + weight * getattr(es, field.name)
                         for field in dataclasses.fields(HeartShape)})


def systole_weights(n_frames: int) -> np.ndarray:
    """Progress from ED (0) to ES (1) of each frame: slow at both ends, fastest mid-systole."""
    return 0.5 * (1.0 - np.cos(np.pi * np.arange(n_frames) / (n_frames - 1)))


def sample_appearance(rng: np.random.Generator, fan: Fan) -> Appearance:
    quality_index = int(rng.choice(len(IMAGE_QUALITIES), p=[0.35, 0.45, 0.20]))
    myocardium = rng.uniform(0.3, 0.6)
    n_dropouts = int(rng.integers((0, 1, 1)[quality_index], (2, 2, 3)[quality_index]))
    dropouts = tuple((rng.uniform(-fan.half_angle, fan.half_angle), rng.uniform(0.06, 0.15),
                      (0.4, 0.6, 0.8)[quality_index] * rng.uniform(0.7, 1.0)) for _ in range(n_dropouts))
    return Appearance(quality=IMAGE_QUALITIES[quality_index],
                      blood=(0.0004, 0.001, 0.003)[quality_index] * rng.uniform(0.7, 1.4),
                      myocardium=myocardium, wall=myocardium * rng.uniform(0.35, 0.6),
                      pericardium=rng.uniform(0.8, 1.2), tissue_mean=rng.uniform(0.01, 0.025),
                      clutter=(0.01, 0.03, 0.08)[quality_index] * rng.uniform(0.6, 1.4),
                      dynamic_range_db=rng.uniform(42.0, 48.0), gain_db=rng.uniform(-3.0, 3.0), dropouts=dropouts)


# ------------------------------------------------------------------------------------------------ rendering

def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise correlated over about `sigma` pixels."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (field - field.mean()) / (field.std() + 1e-12)


def speckle_field(rng: np.random.Generator, grid: PixelGrid, fan: Fan) -> np.ndarray:
    """Complex Gaussian scattering field with E|z|^2 = 1, so |z| is Rayleigh distributed. It is made on the
    probe's polar grid, so the speckle grains are elongated across the beam and widen with depth as in a
    real sector scan, then resampled onto the image."""
    n_radial = int(math.ceil(fan.radius)) + 2
    n_angular = int(math.ceil(2 * fan.half_angle * fan.radius)) + 2
    grain = (0, SPECKLE_AXIAL_MM * grid.pixels_per_mm, SPECKLE_LATERAL_MM * grid.pixels_per_mm)
    polar = ndimage.gaussian_filter(rng.standard_normal((2, n_radial, n_angular)).astype(np.float32), sigma=grain)
    polar /= math.sqrt(float(np.mean(polar[0] ** 2 + polar[1] ** 2)))
    angular_index = ((grid.angle + fan.half_angle) * fan.radius).astype(np.float32)
    radial_index = grid.depth.astype(np.float32)
    real, imaginary = (cv2.remap(part, angular_index, radial_index, cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT) for part in polar)
    return real + 1j * imaginary


@dataclass
class ViewRenderer:
    """Everything about a view's look that stays fixed over its frames."""
    grid: PixelGrid
    fan: Fan
    appearance: Appearance
    tissue: np.ndarray
    myocardial_texture: np.ndarray
    speckle_ed: np.ndarray
    speckle_es: np.ndarray
    gain: np.ndarray
    in_fan: np.ndarray

    @classmethod
    def sample(cls, rng: np.random.Generator, grid: PixelGrid, fan: Fan) -> "ViewRenderer":
        appearance = sample_appearance(rng, fan)
        shape = (grid.rows, grid.columns)
        tissue = appearance.tissue_mean * np.exp(0.6 * smooth_noise(rng, shape, TISSUE_GRAIN_MM * grid.pixels_per_mm))
        texture = np.clip(1.0 + 0.35 * smooth_noise(rng, shape, MYOCARDIAL_GRAIN_MM * grid.pixels_per_mm), 0.3, 1.7)
        gain = 10.0 ** (appearance.gain_db / 20.0) * (1.0 - 0.25 * grid.depth / fan.radius)
        gain *= np.clip((fan.half_angle - np.abs(grid.angle)) / 0.1, 0.3, 1.0)  # weaker beams at the fan edges
        for angle, width, loss in appearance.dropouts:
            gain *= 1.0 - loss * np.exp(-((grid.angle - angle) / width) ** 2)
        return cls(grid, fan, appearance, tissue.astype(np.float32), texture.astype(np.float32),
                   speckle_field(rng, grid, fan), speckle_field(rng, grid, fan), gain.astype(np.float32),
                   fan_mask(grid, fan))

    def echogenicity(self, anatomy: Anatomy) -> np.ndarray:
        """Mean backscatter of each pixel: dark blood, bright myocardium and pericardium, grey tissue."""
        look, labels = self.appearance, anatomy.labels
        reflectivity = self.tissue.copy()
        reflectivity[anatomy.walls] = look.wall * self.myocardial_texture[anatomy.walls]
        reflectivity[anatomy.pericardium] = look.pericardium
        myocardium = labels == LV_MYOCARDIUM
        reflectivity[myocardium] = look.myocardium * self.myocardial_texture[myocardium]
        blood = (labels == LV_CAVITY) | (labels == LEFT_ATRIUM) | anatomy.right_heart
        reflectivity[blood] = look.blood
        reflectivity[anatomy.leaflets] = look.wall
        near_field_haze = np.exp(-self.grid.depth / (CLUTTER_REACH_MM * self.grid.pixels_per_mm))
        reflectivity += look.clutter * near_field_haze
        return ndimage.gaussian_filter(reflectivity, BEAM_BLUR_MM * self.grid.pixels_per_mm)  # the beam blurs edges

    def render(self, anatomy: Anatomy, progress: float) -> np.ndarray:
        """B-mode frame: Rayleigh speckle on the echogenicity, gain, log compression to 8 bits, black
        outside the fan. The speckle decorrelates smoothly from the ED to the ES frame."""
        angle = 0.5 * math.pi * progress
        scattering = math.cos(angle) * self.speckle_ed + math.sin(angle) * self.speckle_es
        amplitude = np.sqrt(self.echogenicity(anatomy)) * np.abs(scattering) * self.gain
        # Scanners smooth the envelope a little before display, which softens the deepest speckle fades.
        amplitude = ndimage.gaussian_filter(amplitude, ENVELOPE_BLUR_MM * self.grid.pixels_per_mm)
        decibels = 20.0 * np.log10(amplitude + 1e-6)
        dynamic_range = self.appearance.dynamic_range_db
        brightness = (decibels - (DISPLAY_TOP_DB - dynamic_range)) / dynamic_range
        pixels = np.rint(255.0 * np.clip(brightness, 0.0, 1.0)).astype(np.uint8)
        pixels[~self.in_fan] = 0
        return pixels


# -------------------------------------------------------------------------------------------------- patients

def patient_name(index: int) -> str:
    return f"patient{index:04d}"


@dataclass
class ViewDrawing:
    """One view's field of view and the anatomy of each of its frames, ED first."""
    fan: Fan
    grid: PixelGrid
    anatomies: list[Anatomy]
    ed: HeartShape
    es: HeartShape


def draw_view_sequence(rng: np.random.Generator, heart: PatientHeart, view: str, settings: GenerationSettings,
                       spacing_mm: float) -> ViewDrawing | None:
    """One view's fan and the anatomy of each frame from ED to ES, or None where the sampled heart does not
    fit the fan (the caller then samples again). ED and ES are checked first since they fail most."""
    rows, columns = settings.image_size
    pixels_per_mm = 1.0 / spacing_mm
    fan = sample_fan(rng, rows, columns, pixels_per_mm)
    ed, es, style = sample_view_shapes(rng, heart, view, columns, pixels_per_mm)
    n_frames = int(rng.integers(settings.n_frames[0], settings.n_frames[1] + 1))
    grid = PixelGrid(rows, columns, fan, pixels_per_mm)
    visible = fan_mask(grid, fan, margin=FAN_MARGIN_MM * pixels_per_mm)
    weights = systole_weights(n_frames)
    anatomies: list[Anatomy | None] = [None] * n_frames
    for frame in [0, n_frames - 1, *range(1, n_frames - 1)]:
        anatomy = draw_anatomy(interpolate(ed, es, float(weights[frame])), style, grid)
        if not anatomy_fits(anatomy, visible, pixels_per_mm):
            return None
        anatomies[frame] = anatomy
    return ViewDrawing(fan, grid, anatomies, ed, es)


def place_heart(rng: np.random.Generator, settings: GenerationSettings, spacing_mm: float | None = None
                ) -> dict[str, ViewDrawing]:
    """Samples a life-size heart, and the two views of it, until every frame of both views fits its fan, at
    `spacing_mm` (the nominal spacing of `settings` when not given)."""
    spacing_mm = settings.spacing_mm if spacing_mm is None else spacing_mm
    for _ in range(MAX_PLACEMENT_ATTEMPTS):
        heart = sample_patient_heart(rng)
        drawings: dict[str, ViewDrawing] = {}
        for view in VIEWS:
            drawing = draw_view_sequence(rng, heart, view, settings, spacing_mm)
            if drawing is None:
                break
            drawings[view] = drawing
        if len(drawings) == len(VIEWS):
            return drawings
    raise ValueError(f"could not fit a life-size heart into a {field_of_view_text(settings.image_size, spacing_mm)} "
                     f"field of view in {MAX_PLACEMENT_ATTEMPTS} attempts; use a larger pixel spacing")


def biplane_volume(cavity_areas: Sequence[float], cavity_lengths: Sequence[float]) -> float:
    """Biplane area-length volume, the clinical estimate from an apical 2- and 4-chamber pair."""
    return 8.0 * cavity_areas[0] * cavity_areas[1] / (3.0 * math.pi * min(cavity_lengths))


def synthesize_patient(index: int, settings: GenerationSettings) -> PatientRecord:
    """Samples one patient (its own random stream, so patient k is the same whatever the dataset size)
    and renders both views."""
    rng = np.random.default_rng([settings.seed, index])
    spacing = round(settings.spacing_mm * float(rng.uniform(1.0 - SPACING_VARIATION, 1.0 + SPACING_VARIATION)), 4)
    drawings = place_heart(rng, settings, spacing)
    views: dict[str, ViewSeries] = {}
    areas, lengths = {"ED": [], "ES": []}, {"ED": [], "ES": []}
    for view, drawing in drawings.items():
        renderer = ViewRenderer.sample(rng, drawing.grid, drawing.fan)
        n_frames = len(drawing.anatomies)
        images = np.stack([renderer.render(anatomy, float(weight))
                           for anatomy, weight in zip(drawing.anatomies, systole_weights(n_frames))])
        labels = np.stack([anatomy.labels for anatomy in drawing.anatomies])
        systole_seconds = rng.uniform(0.28, 0.38)  # the frame rate follows from the frames it took
        views[view] = ViewSeries(images=images, labels=labels, quality=renderer.appearance.quality,
                                 frame_rate=int(round((n_frames - 1) / systole_seconds)))
        for phase, frame, shape in (("ED", 0, drawing.ed), ("ES", -1, drawing.es)):
            areas[phase].append(np.count_nonzero(labels[frame] == LV_CAVITY) * spacing ** 2)
            lengths[phase].append(shape.length * spacing)
    end_diastolic = biplane_volume(areas["ED"], lengths["ED"])
    end_systolic = biplane_volume(areas["ES"], lengths["ES"])
    return PatientRecord(name=patient_name(index), sex=str(rng.choice(["F", "M"])), age=int(rng.integers(20, 91)),
                         ejection_fraction=int(round(100.0 * (end_diastolic - end_systolic) / end_diastolic)),
                         spacing_mm=spacing, views=views)


def info_text(record: PatientRecord, series: ViewSeries) -> str:
    """An Info_XCH.cfg as in the CAMUS 2023 release: ED is the first and ES the last half-sequence frame."""
    n_frames = len(series.images)
    entries = {"ED": 1, "ES": n_frames, "NbFrame": n_frames, "Sex": record.sex, "Age": record.age,
               "ImageQuality": series.quality, "EF": record.ejection_fraction, "FrameRate": series.frame_rate}
    return "".join(f"{key}: {value}\n" for key, value in entries.items())


def write_sequence(frames: np.ndarray, spacing_mm: float, path: Path) -> None:
    """Writes (frames, rows, columns) as a 3D NIfTI whose axes are (x, y, t), frames along the last one."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(frames))
    image.SetSpacing([spacing_mm, spacing_mm, 1.0])
    sitk.WriteImage(image, str(path), useCompression=True)


def write_patient(record: PatientRecord, folder: Path) -> None:
    folder.mkdir(parents=True)
    spacing_xy = (record.spacing_mm, record.spacing_mm)
    for view, series in record.views.items():
        stem = folder / f"{record.name}_{view}"
        for phase, frame in (("ED", 0), ("ES", -1)):
            write_image_2d(series.images[frame], spacing_xy, Path(f"{stem}_{phase}.nii.gz"))
            write_image_2d(series.labels[frame], spacing_xy, Path(f"{stem}_{phase}_gt.nii.gz"))
        write_sequence(series.images, record.spacing_mm, Path(f"{stem}_half_sequence.nii.gz"))
        write_sequence(series.labels, record.spacing_mm, Path(f"{stem}_half_sequence_gt.nii.gz"))
        (folder / f"Info_{view}.cfg").write_text(info_text(record, series))


def make_patient(index: int, settings: GenerationSettings, database: Path) -> str:
    record = synthesize_patient(index, settings)
    write_patient(record, database / record.name)
    return record.name


# ---------------------------------------------------------------------------------------------------- dataset

def subgroup_sizes(split: Sequence[float], n_patients: int) -> tuple[int, int, int]:
    """(training, validation, testing) patient counts from three counts summing to `n_patients` or three
    fractions summing to 1 (validation and testing rounded, training takes the rest)."""
    if len(split) != 3 or any(part < 0 for part in split):
        raise ValueError(f"split must be three non-negative numbers (training, validation, testing), got {split}")
    if all(float(part).is_integer() for part in split) and sum(split) == n_patients:
        return int(split[0]), int(split[1]), int(split[2])
    if not math.isclose(sum(split), 1.0, abs_tol=1e-6):
        raise ValueError(f"split {tuple(split)} is neither three fractions summing to 1 nor three counts "
                         f"summing to the {n_patients} patients")
    validation, testing = round(split[1] * n_patients), round(split[2] * n_patients)
    if validation + testing > n_patients:
        raise ValueError(f"split {tuple(split)} leaves no room for {n_patients} patients")
    return n_patients - validation - testing, validation, testing


def assign_subgroups(names: Sequence[str], split: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Patients of each subgroup, drawn at random (from `seed`) and listed in order."""
    sizes = subgroup_sizes(split, len(names))
    shuffled = [names[i] for i in np.random.default_rng([seed]).permutation(len(names))]
    testing = sorted(shuffled[:sizes[2]])
    validation = sorted(shuffled[sizes[2]:sizes[2] + sizes[1]])
    training = sorted(shuffled[sizes[2] + sizes[1]:])
    return dict(zip(SUBGROUPS, (training, validation, testing)))


def default_spacing(image_size: Sequence[int]) -> float:
    """The pixel spacing (mm) that makes the images a FIELD_DEPTH_MM deep, at least FIELD_WIDTH_MM wide field."""
    rows, columns = image_size
    return max(FIELD_DEPTH_MM / rows, FIELD_WIDTH_MM / columns)


def field_of_view_text(image_size: Sequence[int], spacing_mm: float) -> str:
    return f"{image_size[0] * spacing_mm:.0f} x {image_size[1] * spacing_mm:.0f} mm"


def check_field_of_view(image_size: Sequence[int], spacing_mm: float) -> None:
    """Refuses a spacing whose field of view, for the patient with the smallest spacing, cannot hold a life-size
    heart; the heart is never shrunk to fit, since its volumes would then mean nothing."""
    rows, columns = image_size
    smallest = spacing_mm * (1.0 - SPACING_VARIATION)
    if rows * smallest >= MIN_FIELD_DEPTH_MM and columns * smallest >= MIN_FIELD_WIDTH_MM:
        return
    needed = max(MIN_FIELD_DEPTH_MM / rows, MIN_FIELD_WIDTH_MM / columns) / (1.0 - SPACING_VARIATION)
    needed = math.ceil(needed * 1000.0) / 1000.0
    raise InputError("--spacing", f"{spacing_mm:g} mm makes the {rows} x {columns} images a "
                                  f"{field_of_view_text(image_size, spacing_mm)} field of view "
                                  f"({field_of_view_text(image_size, smallest)} for a patient whose spacing is "
                                  f"{SPACING_VARIATION:.0%} less), too small for a life-size heart, which needs "
                                  f"{MIN_FIELD_DEPTH_MM:.0f} x {MIN_FIELD_WIDTH_MM:.0f} mm: use --spacing "
                                  f"{needed:g} or more, or leave it out (then {default_spacing(image_size):.3g} mm)")


def check_settings(n_patients: int, seed: int, image_size: Sequence[int], spacing_mm: float | None,
                   n_frames: Sequence[int]) -> None:
    """Refuses settings that cannot make a dataset; a spacing of None stands for the default one."""
    if not 1 <= n_patients <= MAX_PATIENTS:
        raise ValueError(f"the number of patients must be between 1 and {MAX_PATIENTS}, got {n_patients}")
    if seed < 0:
        raise ValueError(f"the seed must be a non-negative integer, got {seed}")
    if len(image_size) != 2 or min(image_size) < MIN_IMAGE_SIDE:
        raise ValueError(f"the image size (rows, columns) must be at least {MIN_IMAGE_SIDE} pixels each, "
                         f"got {tuple(image_size)}")
    if spacing_mm is not None:
        if not (math.isfinite(spacing_mm) and spacing_mm > 0):
            raise InputError("--spacing", f"the pixel spacing must be a positive number of mm, got {spacing_mm}")
        check_field_of_view(image_size, spacing_mm)
    if len(n_frames) != 2 or not 2 <= n_frames[0] <= n_frames[1]:
        raise ValueError(f"the half-sequence frame counts (min, max) must satisfy 2 <= min <= max, "
                         f"got {tuple(n_frames)}")


def replaceable(root: Path, overwrite: bool) -> bool:
    """Whether `root` may be (re)placed: it is absent, empty, or an earlier output replaced on request.
    Only folders this generator wrote are ever replaced, so --overwrite cannot delete real data."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise InputError(root, "exists and is not a folder")
    if not any(root.iterdir()):
        return True
    if not overwrite:
        raise InputError(root, "exists and is not empty; pass --overwrite to replace it")
    if not (root / MARKER_FILE).is_file():
        raise InputError(root, f"is not a synthetic CAMUS dataset (it has no {MARKER_FILE}); "
                                    f"refusing to replace it, even with --overwrite")
    return True


def generate_synthetic_camus(root: Path, n_patients: int = 30, seed: int = 0,
                             image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE, spacing_mm: float | None = None,
                             n_frames: int | tuple[int, int] = (10, 20),
                             split: Sequence[float] = DEFAULT_SPLIT, num_processes: int = 1,
                             overwrite: bool = False) -> Path:
    """Writes `n_patients` synthetic patients in the CAMUS 2023 layout under `root` and returns `root`.

    image_size is (rows, columns); spacing_mm the nominal isotropic pixel spacing (each patient varies it
    by up to 10 %), by default default_spacing(image_size), a life-size apical field of view; a given one must
    leave room for a life-size heart (else InputError naming --spacing). n_frames is the number of
    half-sequence frames (or a (min, max) range drawn per view); split the (training, validation, testing)
    fractions or patient counts. Same arguments, same bytes.
    The dataset is built in a temporary folder beside `root` and renamed into place at the end."""
    root = Path(root)
    frame_range = (int(n_frames),) * 2 if np.ndim(n_frames) == 0 else tuple(int(n) for n in n_frames)
    check_settings(n_patients, seed, image_size, spacing_mm, frame_range)
    spacing_mm = default_spacing(image_size) if spacing_mm is None else spacing_mm
    settings = GenerationSettings(image_size=(int(image_size[0]), int(image_size[1])), spacing_mm=float(spacing_mm),
                                  n_frames=frame_range, seed=int(seed))
    names = [patient_name(index) for index in range(1, n_patients + 1)]
    subgroups = assign_subgroups(names, split, seed)
    with atomic_folder(root, overwrite=replaceable(root, overwrite)) as staging:
        database = staging / "database_nifti"
        database.mkdir()
        worker = functools.partial(make_patient, settings=settings, database=database)
        parallel_map(worker, list(range(1, n_patients + 1)), num_processes, desc="synthetic patients")
        split_folder = staging / "database_split"
        split_folder.mkdir()
        for subgroup, members in subgroups.items():
            (split_folder / f"subgroup_{subgroup}.txt").write_text("".join(f"{name}\n" for name in members))
        description = {"generator": __name__, "n_patients": n_patients, **dataclasses.asdict(settings),
                       "subgroups": {subgroup: len(members) for subgroup, members in subgroups.items()}}
        (staging / MARKER_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return root


# -------------------------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msvmamba_make_synthetic_camus",
        description="Write synthetic apical 2- and 4-chamber echocardiograms (ED, ES, half sequences, labels "
                    "0 background, 1 LV cavity, 2 LV myocardium, 3 left atrium) in the CAMUS 2023 release "
                    "layout, ready for msvmamba_convert_camus. Deterministic from --seed.")
    parser.add_argument("root", type=Path, metavar="ROOT",
                        help="output folder (gets database_nifti/ and database_split/); must be absent or empty")
    parser.add_argument("-n", "--patients", type=int, default=30, metavar="N", help="number of patients (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, nargs=2, default=list(DEFAULT_IMAGE_SIZE), metavar=("H", "W"),
                        help="image rows and columns (default %(default)s; real CAMUS images are about 800 x 600)")
    parser.add_argument("--spacing", type=float, default=None, metavar="MM",
                        help=f"nominal pixel spacing in mm, varied by up to {100 * SPACING_VARIATION:.0f}%% per "
                             f"patient. The hearts are life-size whatever the image size: by default the spacing "
                             f"makes the field of view {FIELD_DEPTH_MM:.0f} mm deep (H x spacing) and at least "
                             f"{FIELD_WIDTH_MM:.0f} mm wide (W x spacing), as an adult apical view; a given spacing "
                             f"sets the field of view to H x W times it, the heart staying life-size in it, and is "
                             f"refused when that field cannot hold a heart (less than {MIN_FIELD_DEPTH_MM:.0f} x "
                             f"{MIN_FIELD_WIDTH_MM:.0f} mm for a patient whose spacing is "
                             f"{100 * SPACING_VARIATION:.0f}%% less)")
    parser.add_argument("--frames", type=int, nargs=2, default=[10, 20], metavar=("MIN", "MAX"),
                        help="range of half-sequence frame counts, drawn per view (default 10 20)")
    parser.add_argument("--split", type=float, nargs=3, default=list(DEFAULT_SPLIT),
                        metavar=("TRAIN", "VAL", "TEST"),
                        help="training/validation/testing fractions, or patient counts (default 0.7 0.1 0.2)")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=default_num_processes, metavar="N",
                        help=f"worker processes (default {default_num_processes})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace ROOT if it holds an earlier output of this command (never anything else)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: msvmamba_make_synthetic_camus ROOT [-n N] [--seed S] [--size H W] [-np N] [--overwrite]."""
    args = build_parser().parse_args(argv)
    try:
        root = generate_synthetic_camus(args.root, n_patients=args.patients, seed=args.seed,
                                        image_size=tuple(args.size), spacing_mm=args.spacing,
                                        n_frames=tuple(args.frames), split=tuple(args.split),
                                        num_processes=args.num_processes, overwrite=args.overwrite)
    except (InputError, ValueError) as error:
        message = str(error) if isinstance(error, InputError) else f"{args.root}: {error}"
        print(f"error: {message}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{len((root / 'database_split' / f'subgroup_{s}.txt').read_text().split())} {s}"
                       for s in SUBGROUPS)
    print(f"wrote {args.patients} synthetic patients ({counts}) to {root}")
    print(f"next: msvmamba_convert_camus {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
