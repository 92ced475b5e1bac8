"""The options the commands share: argparse types, and `--pred NAME=FOLDER` of msvmamba_evaluate and
msvmamba_clinical."""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

from .errors import InputError


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (a pixel spacing, say)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def parse_predictions(values: Sequence[str]) -> dict[str, Path]:
    """The values of repeated `--pred` options: 'NAME=DIR' (or a bare 'DIR', named after the folder) ->
    {name: folder}, in the order given."""
    predictions: dict[str, Path] = {}
    for value in values:
        name, separator, folder = value.partition("=")
        if not separator:
            name, folder = Path(value).resolve().name, value
        if not name or not folder:
            raise InputError(value, "expected --pred NAME=PRED_DIR")
        if name in predictions:
            raise InputError(value, f"model name {name!r} is given twice; names must be unique")
        if not Path(folder).is_dir():
            raise InputError(folder, f"prediction folder of model {name} does not exist")
        predictions[name] = Path(folder)
    return predictions
