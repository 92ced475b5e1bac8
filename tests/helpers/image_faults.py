"""Image files broken the way real ones are, for the bad-input tests of every reader: a header spacing that is
NaN, infinite, zero or negative, and NaN or infinite voxels. SimpleITK would repair both on writing (and reads
them as 1 mm and 0), so the bytes are patched after a normal write."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import nibabel as nib
import numpy as np

PIXDIM_OFFSET = 76  # NIfTI-1 header: pixdim[0..7], float32 each; pixdim[1] is the x spacing


def set_nifti_pixdim(path: Path, axis: int, value: float) -> None:
    """Sets pixdim[axis] (1 = x, 2 = y, 3 = z) of a .nii or .nii.gz file in place."""
    compressed = path.name.endswith(".gz")
    content = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    start = PIXDIM_OFFSET + 4 * axis
    content[start:start + 4] = struct.pack("<f", value)
    path.write_bytes(gzip.compress(bytes(content)) if compressed else bytes(content))


def write_float_nifti(array: np.ndarray, spacing_xy: tuple[float, float], path: Path) -> None:
    """A (rows, columns) float32 array as a 2D NIfTI, NaN and infinite values kept as they are."""
    image = nib.Nifti1Image(np.asarray(array, np.float32).T, np.diag([*spacing_xy, 1.0, 1.0]))
    nib.save(image, str(path))
