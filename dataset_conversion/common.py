"""Pieces every converter shares: dataset names and nnU-Net's folders, 2D NIfTI writing, patient-level folds,
nnU-Net's splits file and the converter commands' main. The helpers the package shares with the converters
(one-line errors, atomic outputs, parallel work, CSV) live in `nnunetv2_msvmamba.common`."""
from __future__ import annotations

import argparse
import os
import random
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from nnunetv2_msvmamba.common.atomic import check_writable, write_json_atomically
from nnunetv2_msvmamba.common.errors import InputError, exit_status_of


def dataset_name(dataset_id: int, short_name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be between 1 and 999, got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{short_name}"


def require_env_folder(variable: str) -> Path:
    """The folder an nnU-Net environment variable (nnUNet_raw, nnUNet_preprocessed) points at."""
    value = os.environ.get(variable)
    if not value:
        raise InputError(f"${variable}", f"environment variable {variable} is not set; "
                                               f"nnU-Net needs it (see nnU-Net's setting_up_paths.md)")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise InputError(path, f"is a file, not a folder; ${variable} must name a folder")
    return path



def write_image_2d(array: np.ndarray, spacing_xy: Sequence[float], path: Path,
                   origin_xy: Sequence[float] = (0.0, 0.0)) -> None:
    """Writes a (rows, columns) array as a 2D NIfTI whose in-plane spacing is `spacing_xy` (x = columns)."""
    if array.ndim != 2:
        raise ValueError(f"{path}: expected a 2D array, got shape {array.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing([float(s) for s in spacing_xy])
    image.SetOrigin([float(o) for o in origin_xy])
    sitk.WriteImage(image, str(path), useCompression=True)


def patient_level_folds(patients: Iterable[str], n_folds: int, seed: int = 12345) -> list[dict[str, list[str]]]:
    """Deterministic k-fold split over patients: every patient is validation in exactly one fold."""
    ordered = sorted(set(patients))
    random.Random(seed).shuffle(ordered)
    folds = [sorted(ordered[i::n_folds]) for i in range(n_folds)]
    return [{"train": sorted(p for j, f in enumerate(folds) if j != i for p in f), "val": folds[i]}
            for i in range(n_folds)]


def expand_to_cases(patient_splits: list[dict[str, list[str]]], cases_of: dict[str, list[str]]
                    ) -> list[dict[str, list[str]]]:
    """Turns patient-level splits into the case-level splits nnU-Net reads."""
    return [{part: sorted(c for p in split[part] for c in cases_of.get(p, [])) for part in ("train", "val")}
            for split in patient_splits]



def write_splits_final(splits: list[dict[str, list[str]]], name: str, overwrite: bool) -> Path:
    """Writes nnU-Net's splits_final.json into $nnUNet_preprocessed/<name>/."""
    path = require_env_folder("nnUNet_preprocessed") / name / "splits_final.json"
    if path.exists() and not overwrite:
        raise InputError(path, "already exists; pass --overwrite to replace it")
    write_json_atomically(splits, path)
    return path




def check_targets(raw_folder: Path, name: str, dataset_id: int, overwrite: bool) -> Path:
    """Fails before any work when the dataset id is taken by another dataset, the outputs exist, or their
    folders cannot be written to; returns the splits file's path."""
    others = sorted(p.name for p in raw_folder.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir() and p.name != name)
    if others:
        raise InputError(raw_folder / others[0], f"dataset id {dataset_id} is already used by this dataset; "
                                                      f"choose another id with -d")
    splits_file = require_env_folder("nnUNet_preprocessed") / name / "splits_final.json"
    for path in (raw_folder / name, splits_file):
        if path.exists() and not overwrite:
            raise InputError(path, "already exists; pass --overwrite to replace it")
    for folder in (raw_folder, splits_file.parent):
        check_writable(folder)
    return splits_file



def run_converter(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], short_name: str,
                  convert: Callable[[argparse.Namespace], object]) -> int:
    """A converter command's main: parse, convert, print the summary's report; a bad input or an operating-system
    error (read-only or full disk) is one line `error: <path>: <problem>` on stderr and exit status 2, Ctrl-C one
    line `interrupted: nothing was written` and exit status 130."""
    args = parser.parse_args(argv)
    try:
        dataset_name(args.dataset_id, short_name)
    except ValueError as error:
        parser.error(str(error))
    return exit_status_of(lambda: print(convert(args).report()))
