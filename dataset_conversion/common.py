"""Pieces every converter shares: errors that name the file, atomic dataset folders, 2D NIfTI writing,
patient-level folds, nnU-Net's splits file and parallel work with a progress bar."""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


class ConversionError(Exception):
    """A bad input: the message names the file (or folder) and what is wrong with it."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # so that it crosses process boundaries (parallel_map's workers) intact
        return type(self), (self.path, self.problem)


def dataset_name(dataset_id: int, short_name: str) -> str:
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be between 1 and 999, got {dataset_id}")
    return f"Dataset{dataset_id:03d}_{short_name}"


def require_env_folder(variable: str) -> Path:
    """The folder an nnU-Net environment variable (nnUNet_raw, nnUNet_preprocessed) points at."""
    value = os.environ.get(variable)
    if not value:
        raise ConversionError(f"${variable}", f"environment variable {variable} is not set; "
                                               f"nnU-Net needs it (see nnU-Net's setting_up_paths.md)")
    return Path(value)


@contextmanager
def atomic_dataset_folder(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yields an empty temporary folder beside `target`; on success it replaces `target` in one rename,
    on any failure it is removed, so no half-written dataset is ever left behind."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise ConversionError(target, "already exists; pass --overwrite to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


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


def write_json_atomically(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_splits_final(splits: list[dict[str, list[str]]], name: str, overwrite: bool) -> Path:
    """Writes nnU-Net's splits_final.json into $nnUNet_preprocessed/<name>/."""
    path = require_env_folder("nnUNet_preprocessed") / name / "splits_final.json"
    if path.exists() and not overwrite:
        raise ConversionError(path, "already exists; pass --overwrite to replace it")
    write_json_atomically(splits, path)
    return path


def write_csv(rows: Sequence[dict], columns: Sequence[str], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def parallel_map(function: Callable[[T], R], items: Sequence[T], num_processes: int, desc: str) -> list[R]:
    """`[function(i) for i in items]` over `num_processes` worker processes, in order, with a progress bar.
    The first exception raised by any item is re-raised here."""
    if num_processes <= 1 or len(items) <= 1:
        return [function(item) for item in tqdm(items, desc=desc, unit="item")]
    with ProcessPoolExecutor(max_workers=num_processes) as pool:
        return list(tqdm(pool.map(function, items), total=len(items), desc=desc, unit="item"))


def check_targets(raw_folder: Path, name: str, dataset_id: int, overwrite: bool) -> Path:
    """Fails before any work when the dataset id is taken by another dataset or the outputs exist; returns
    the splits file's path."""
    others = sorted(p.name for p in raw_folder.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir() and p.name != name)
    if others:
        raise ConversionError(raw_folder / others[0], f"dataset id {dataset_id} is already used by this dataset; "
                                                      f"choose another id with -d")
    splits_file = require_env_folder("nnUNet_preprocessed") / name / "splits_final.json"
    for path in (raw_folder / name, splits_file):
        if path.exists() and not overwrite:
            raise ConversionError(path, "already exists; pass --overwrite to replace it")
    return splits_file


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def run_converter(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]], short_name: str,
                  convert: Callable[[argparse.Namespace], object]) -> int:
    """A converter command's main: parse, convert, print the summary's report; a bad input is one line
    `error: <path>: <problem>` on stderr and exit status 2."""
    args = parser.parse_args(argv)
    try:
        dataset_name(args.dataset_id, short_name)
    except ValueError as error:
        parser.error(str(error))
    try:
        summary = convert(args)
    except ConversionError as error:
        print(f"error: {error.path}: {error.problem}", file=sys.stderr)
        return 2
    print(summary.report())
    return 0
