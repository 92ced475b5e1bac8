"""Image files checked from the file itself, before a library reads them, so that no number is measured on a
header or pixels that the library quietly repaired. ITK (SimpleITK, and nnU-Net's readers built on it):
- reads a NaN, infinite, zero or negative spacing as 1 mm (or its absolute value) with only a warning, so every
  figure in mm (volumes, EF, HD95) would silently be in the wrong unit;
- reads NaN and infinite NIfTI voxels as 0;
- reads a truncated or corrupt NIfTI or MetaImage without complaint, padding the missing pixels;
- reads `x.nii` when asked for `x.nii.gz` (and the reverse): two files of one name must never be confused.

Every reader of the package and of the converters calls `check_image_file` first (one shared check). Formats whose
header this module does not parse are checked after reading, with `check_spacing` on what the reader returns."""
from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np

from .errors import InputError

NIFTI_ENDINGS = (".nii.gz", ".nii")
METAIMAGE_ENDINGS = (".mhd", ".mha")
METAIMAGE_ELEMENT_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
                           "MET_UINT": 4, "MET_LONG": 8, "MET_ULONG": 8, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8,
                           "MET_FLOAT": 4, "MET_DOUBLE": 8}
# Up to 3 axes are space; a sequence's frames (CAMUS keeps them on the third axis) have no spacing a measurement
# uses, and real files carry anything there, so a sequence reader asks for 2.
SPATIAL_AXES = 3
PLANE_AXES = 2


def format_spacing_values(spacing: Sequence[float]) -> str:
    return " x ".join(f"{float(v):g}" for v in spacing)


def check_spacing(path: Path, spacing: Sequence[float], source: str = "header") -> None:
    """Refuses a spacing that is not a positive finite number of mm on every axis; `source` names where it
    was read (a header field)."""
    values = [float(v) for v in spacing]
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(path, f"spacing {format_spacing_values(values)} mm ({source}) is not a positive finite "
                               f"number; a measurement in mm cannot be trusted")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_ENDINGS)


def nifti_stem(path: Path) -> str:
    """The file name without its NIfTI ending (`x` for `x.nii.gz` and `x.nii`)."""
    name = path.name
    return next((name[:-len(ending)] for ending in NIFTI_ENDINGS if name.lower().endswith(ending)), name)


def refuse_nifti_twins(paths: Iterable[Path]) -> None:
    """Refuses `x.nii` and `x.nii.gz` in one folder: they would map to one case or output name, and ITK opens
    either when asked for the other, so one file's data could be measured under the other's name."""
    seen: dict[tuple[Path, str], Path] = {}
    for path in sorted(Path(p) for p in paths):
        if not is_nifti(path):
            continue
        key = (path.parent.resolve(), nifti_stem(path))
        if key in seen and seen[key].name != path.name:
            raise InputError(path, f"has the same name as {seen[key]} (.nii and .nii.gz of one name); "
                                   f"remove or rename one of them")
        seen.setdefault(key, path)


def _read_nifti_bytes(path: Path) -> bytes:
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise
        raise InputError(path, f"unreadable: corrupt or truncated gzip stream ({error})") from None


def check_nifti_file(path: Path, spatial_axes: int = SPATIAL_AXES) -> None:
    """Whole data, positive finite spacing on the spatial axes (`measured_axes`), and, for floating-point data,
    finite voxels: read from the file's own bytes, not through ITK."""
    content = _read_nifti_bytes(path)
    try:
        header = nib.Nifti1Header.from_fileobj(io.BytesIO(content), check=False)
        shape = header.get_data_shape()
        expected = int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    except Exception:  # not a NIfTI-1 header nibabel understands (NIfTI-2, say): ITK's reader has the last word
        return
    check_spacing(path, [header["pixdim"][1 + axis] for axis in measured_axes(shape, spatial_axes)], "pixdim")
    if len(content) < expected:
        raise InputError(path, f"truncated: {len(content)} bytes of NIfTI, but its header describes {expected}")
    if np.issubdtype(header.get_data_dtype(), np.floating):
        image = nib.Nifti1Image.from_bytes(content)
        check_finite_voxels(path, np.asanyarray(image.dataobj))


def check_finite_voxels(path: Path, voxels: np.ndarray) -> None:
    if np.issubdtype(voxels.dtype, np.floating) and not np.isfinite(voxels).all():
        count = int(np.size(voxels) - np.isfinite(voxels).sum())
        raise InputError(path, f"contains {count} NaN or infinite voxel value(s)")


def read_metaimage_header(path: Path) -> dict[str, str]:
    """The `key = value` fields of a MetaImage header: an .mhd, or the head of an .mha (up to ElementDataFile,
    the last field, after which its pixels follow)."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(path, f"unreadable ({error.strerror})") from None
    last_field = raw.find(b"ElementDataFile")
    if last_field >= 0:
        end_of_line = raw.find(b"\n", last_field)
        raw = raw[:end_of_line if end_of_line >= 0 else len(raw)]
    fields = dict(line.split("=", 1) for line in raw.decode(errors="replace").splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in fields.items()}


def measured_axes(shape: Sequence[int], spatial_axes: int = SPATIAL_AXES) -> list[int]:
    """The axes whose spacing a measurement uses: the first two (a plane) always, a further spatial one when
    the image has more than one slice along it."""
    return [axis for axis in range(min(len(shape), spatial_axes)) if axis < PLANE_AXES or shape[axis] > 1]


def check_metaimage_file(path: Path, spatial_axes: int = SPATIAL_AXES) -> None:
    """Positive finite ElementSpacing, and a .raw beside an .mhd that is as long as the header says (ITK
    reports a missing or short one as an unreadable .mhd)."""
    header = read_metaimage_header(path)
    sizes = header.get("DimSize", "").split()
    spacing = (header.get("ElementSpacing") or header.get("ElementSize") or "").split()
    if spacing:
        try:
            numbers = [float(v) for v in spacing]
        except ValueError:
            raise InputError(path, f"ElementSpacing is not numeric: {' '.join(spacing)!r}") from None
        shape = [int(s) for s in sizes] if all(s.isdigit() for s in sizes) and len(sizes) == len(numbers) \
            else [2] * len(numbers)
        check_spacing(path, [numbers[axis] for axis in measured_axes(shape, spatial_axes)], "ElementSpacing")
    data_name = header.get("ElementDataFile", "")
    if not data_name or data_name == "LOCAL" or " " in data_name:
        return  # data inside the header file, or a list of files: ITK's own checks apply
    data_path = path.parent / data_name
    if not data_path.is_file():
        raise InputError(path, f"its data file {data_name} (ElementDataFile) is not found beside it")
    element_bytes = METAIMAGE_ELEMENT_BYTES.get(header.get("ElementType", ""))
    compressed = header.get("CompressedData", "False").lower() == "true"
    if element_bytes is None or compressed or not all(s.isdigit() for s in sizes):
        return
    channels = int(header.get("ElementNumberOfChannels", "1") or 1)
    expected = element_bytes * channels * int(np.prod([int(s) for s in sizes]))
    actual = data_path.stat().st_size
    if actual < expected:
        raise InputError(data_path, f"truncated: {actual} bytes, but {path.name} describes {expected} "
                                    f"(DimSize {' '.join(sizes)}, {header.get('ElementType')})")


def check_image_file(path: Path, spatial_axes: int = SPATIAL_AXES) -> None:
    """The shared check every image reader runs before reading `path` (see the module's docstring). A reader of
    sequences (frames on the third axis) passes `spatial_axes=PLANE_AXES`."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_ENDINGS):
        check_nifti_file(path, spatial_axes)
    elif name.endswith(METAIMAGE_ENDINGS):
        check_metaimage_file(path, spatial_axes)
