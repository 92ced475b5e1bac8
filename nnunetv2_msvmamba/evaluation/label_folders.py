"""nnU-Net label folders (labelsTr/labelsTs, prediction folders): which cases they hold, and reading one
label map with its spacing through nnU-Net's own image readers."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.imageio.reader_writer_registry import (LIST_OF_IO_CLASSES, determine_reader_writer_from_dataset_json,
                                                     determine_reader_writer_from_file_ending)

from nnunetv2_msvmamba.common.errors import InputError, short_reason
from nnunetv2_msvmamba.common.image_files import check_image_file, check_spacing, refuse_nifti_twins

# nnU-Net stores a 2D image as one slice whose first spacing is 999 times the largest in-plane spacing.
NNUNET_2D_SPACING_FACTOR = 999


@dataclass(frozen=True)
class LabelMap:
    """An integer label map (2D or 3D array) and its spacing in mm per array axis."""

    labels: np.ndarray
    spacing: tuple[float, ...]


def detect_file_ending(folder: Path) -> str:
    """The file ending (one nnU-Net can read) that most files in `folder` have, for folders without a
    dataset.json."""
    if not folder.is_dir():
        raise InputError(folder, "is not a folder")
    endings = sorted({e for io_class in LIST_OF_IO_CLASSES for e in io_class.supported_file_endings},
                     key=len, reverse=True)
    counts = Counter(next((e for e in endings if path.name.lower().endswith(e)), None) for path in folder.iterdir()
                     if path.is_file() and not path.name.startswith("."))
    counts.pop(None, None)
    if not counts:
        raise InputError(folder, f"holds no label files nnU-Net can read (looked for {', '.join(endings)})")
    return counts.most_common(1)[0][0]


def list_cases(folder: Path, file_ending: str) -> dict[str, Path]:
    """Case id -> file for every `<case><file_ending>` in `folder`; `x.nii` beside `x.nii.gz` is refused."""
    if not folder.is_dir():
        raise InputError(folder, "is not a folder")
    refuse_nifti_twins(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
    return {path.name[:-len(file_ending)]: path for path in sorted(folder.iterdir())
            if path.is_file() and path.name.endswith(file_ending) and not path.name.startswith(".")}


def reader_class(dataset_json: Optional[Mapping], file_ending: str, example_file: Path) -> type[BaseReaderWriter]:
    """The nnU-Net reader for these files: dataset.json's `overwrite_image_reader_writer` if it names one,
    otherwise the first reader for `file_ending` that opens `example_file`."""
    try:
        if dataset_json is not None:
            return determine_reader_writer_from_dataset_json(dataset_json, str(example_file), verbose=False)
        return determine_reader_writer_from_file_ending(file_ending, str(example_file), verbose=False)
    except RuntimeError:
        raise InputError(example_file, f"no nnU-Net image reader for '{file_ending}' can open it") from None


def read_label_map(reader: type[BaseReaderWriter], path: Path) -> LabelMap:
    """Reads a segmentation with nnU-Net's `reader`, once the file itself has passed the shared check (ITK would
    read a broken spacing as 1 mm); 2D images come back as 2D arrays with 2 spacings."""
    check_image_file(path)
    try:
        seg, properties = reader().read_seg(str(path))
    except Exception as error:  # readers raise whatever their library raises on a broken file
        raise InputError(path, f"cannot be read as a segmentation ({short_reason(error)})") from None
    array, spacing = seg[0], tuple(float(s) for s in properties["spacing"])
    check_spacing(path, spacing, "as nnU-Net's reader reads it")
    if array.shape[0] == 1 and np.isclose(spacing[0], NNUNET_2D_SPACING_FACTOR * max(spacing[1:])):
        array, spacing = array[0], spacing[1:]
    labels = np.rint(array)
    if not np.array_equal(labels, array):
        raise InputError(path, "holds non-integer values; expected a label map")
    return LabelMap(labels.astype(np.int32), spacing)
