"""Reading CAMUS images (2D NIfTI or MetaImage, and 3D half sequences) with their in-plane geometry, checking
ground truth against its image, and writing 2D NIfTI cases that keep that geometry."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunetv2_msvmamba.common.errors import InputError, short_reason
from nnunetv2_msvmamba.common.image_files import PLANE_AXES, check_image_file

LABEL_VALUES = (0, 1, 2, 3)
LABEL_MEANINGS = "0 background, 1 LV cavity, 2 LV myocardium, 3 left atrium"
# Spacings agree when they differ by less than this fraction: a NIfTI header stores float32, a MetaImage
# header decimal text, so the same spacing can differ in its last bits between an image and its ground truth.
SPACING_RELATIVE_TOLERANCE = 1e-5
# Likewise for where the image lies: origins within float32 noise of each other (in mm), direction cosines
# within 1e-4 (under 0.01 degree; a NIfTI header stores the direction as a float32 quaternion).
ORIGIN_RELATIVE_TOLERANCE, ORIGIN_ABSOLUTE_TOLERANCE_MM = 1e-5, 1e-4
DIRECTION_TOLERANCE = 1e-4


@dataclass(frozen=True)
class PlaneGeometry:
    """Where a 2D image lies: spacing and origin (x = columns, y = rows, in mm) and its 2x2 direction."""
    spacing: tuple[float, float]
    origin: tuple[float, float]
    direction: tuple[float, float, float, float]

    def same_spacing(self, other: "PlaneGeometry") -> bool:
        return bool(np.allclose(self.spacing, other.spacing, rtol=SPACING_RELATIVE_TOLERANCE, atol=0))

    def same_origin(self, other: "PlaneGeometry") -> bool:
        return bool(np.allclose(self.origin, other.origin, rtol=ORIGIN_RELATIVE_TOLERANCE,
                                atol=ORIGIN_ABSOLUTE_TOLERANCE_MM))

    def same_direction(self, other: "PlaneGeometry") -> bool:
        return bool(np.allclose(self.direction, other.direction, rtol=0, atol=DIRECTION_TOLERANCE))


def format_spacing(spacing: tuple[float, float]) -> str:
    return " x ".join(f"{float(np.float32(s)):.7g}" for s in spacing) + " mm"


def format_numbers(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def itk_reason(error: RuntimeError) -> str:
    """The useful last line of a SimpleITK exception, without ITK's source locations and object addresses."""
    reason = short_reason(error)
    if reason.startswith("Unable to determine ImageIO reader"):
        return "not an image file SimpleITK can read"
    return reason


def read_frames(path: Path) -> tuple[np.ndarray, PlaneGeometry]:
    """The (frames, rows, columns) pixels and in-plane geometry of a 2D image (one frame), of a 3D image with
    one slice, or of a 3D sequence (frames along the third axis, as CAMUS stores its sequences)."""
    check_image_file(path, spatial_axes=PLANE_AXES)  # 2D images, and sequences with frames on the third axis
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(path, f"unreadable: {itk_reason(error)}") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(path, f"expected a grey-level image, got {image.GetNumberOfComponentsPerPixel()} "
                                    f"components per pixel")
    dimension = image.GetDimension()
    if dimension not in (2, 3):
        raise InputError(path, f"expected a 2D image or a 3D sequence, got a {dimension}D image")
    array = sitk.GetArrayFromImage(image)
    direction = image.GetDirection()
    if dimension == 2:
        array = array[np.newaxis]
        plane_direction = tuple(direction)
    else:
        plane_direction = (direction[0], direction[1], direction[3], direction[4])
    geometry = PlaneGeometry(tuple(image.GetSpacing()[:2]), tuple(image.GetOrigin()[:2]), plane_direction)
    return array, geometry


def read_single_frame(path: Path) -> tuple[np.ndarray, PlaneGeometry]:
    """A 2D image (an ED or ES image or its ground truth) as (rows, columns)."""
    frames, geometry = read_frames(path)
    if frames.shape[0] != 1:
        raise InputError(path, f"expected one 2D image, got {frames.shape[0]} frames of "
                                    f"{frames.shape[1]} x {frames.shape[2]} pixels")
    return frames[0], geometry


def describe_shape(shape: tuple[int, ...]) -> str:
    rows_columns = f"{shape[-2]} rows x {shape[-1]} columns"
    return rows_columns if len(shape) == 2 else f"{shape[0]} frames of {rows_columns}"


def check_same_grid(image_path: Path, image: np.ndarray, image_geometry: PlaneGeometry,
                    labels_path: Path, labels: np.ndarray, labels_geometry: PlaneGeometry) -> None:
    """Ground truth must cover its image pixel for pixel: same shape, spacing, origin and direction."""
    if labels.shape != image.shape:
        raise InputError(labels_path, f"shape mismatch: {describe_shape(labels.shape)}, but its image "
                                           f"{image_path.name} has {describe_shape(image.shape)}")
    if not labels_geometry.same_spacing(image_geometry):
        raise InputError(labels_path, f"spacing mismatch: {format_spacing(labels_geometry.spacing)}, but its "
                                           f"image {image_path.name} has {format_spacing(image_geometry.spacing)}")
    if not labels_geometry.same_direction(image_geometry):
        raise InputError(labels_path, f"direction mismatch: {format_numbers(labels_geometry.direction)}, but its "
                                      f"image {image_path.name} has {format_numbers(image_geometry.direction)}")
    if not labels_geometry.same_origin(image_geometry):
        raise InputError(labels_path, f"origin mismatch: {format_numbers(labels_geometry.origin)} mm, but its "
                                      f"image {image_path.name} has {format_numbers(image_geometry.origin)} mm")


def format_value(value) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def checked_labels(labels: np.ndarray, path: Path) -> np.ndarray:
    """`labels` as uint8 once every value is a CAMUS label; for a sequence the error names the first frame with
    an unknown value (1-based, as Info_*.cfg counts frames)."""
    values = np.unique(labels)
    unknown = [v for v in values if v not in LABEL_VALUES]
    if unknown:
        where = ""
        if labels.ndim == 3 and labels.shape[0] > 1:
            bad = ~np.isin(labels, LABEL_VALUES)
            where = f"frame {int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0]) + 1}: "
        shown = ", ".join(format_value(v) for v in unknown[:5])
        raise InputError(path, f"{where}unknown label value{'s' if len(unknown) > 1 else ''} {shown}; CAMUS "
                                    f"ground truth has {LABEL_MEANINGS}")
    return labels.astype(np.uint8)


def write_nifti_2d(array: np.ndarray, geometry: PlaneGeometry, path: Path) -> None:
    """A (rows, columns) array as a gzipped 2D NIfTI with the source's spacing, origin and direction, so
    neither nnU-Net nor a viewer sees it flipped, transposed or rescaled. SimpleITK's gzip stream carries no
    time stamp: the same input gives the same bytes."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in geometry.spacing])
    image.SetOrigin([float(o) for o in geometry.origin])
    image.SetDirection([float(d) for d in geometry.direction])
    sitk.WriteImage(image, str(path), useCompression=True)
