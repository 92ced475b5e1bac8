"""EF, EDV and ESV per patient from a converter's cases.csv: the CAMUS `EF` (from Info_*.cfg), the
EchoNet-Dynamic `EF`, `EDV`, `ESV` (from FileList.csv). Cases are mapped to patients by their names.

A value is a finite number; an EF may carry a trailing `%` (`31%`). Anything else (an empty cell, `n/a`, text,
`nan`, `inf`) is left out of the agreement, and the patient's `notes` say which value and why, so that no
patient silently drops out of the statistics."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.tables import read_csv_table
from .cases import CAMUS_CASE, ECHONET_CASE, PatientVolumes

VALUE_COLUMNS = {"edv": "EDV", "esv": "ESV", "ef": "EF"}
PERCENT_COLUMNS = ("EF",)
LEFT_OUT = "left out of the agreement"


def parse_value(text: Optional[str], column: str) -> tuple[float, Optional[str]]:
    """The number in a cell and None, or NaN and why the cell holds no usable number."""
    cleaned = (text or "").strip()
    if column in PERCENT_COLUMNS and cleaned.endswith("%"):
        cleaned = cleaned[:-1].strip()
    if not cleaned:
        return math.nan, f"{column} is empty"
    try:
        number = float(cleaned)
    except ValueError:
        return math.nan, f"{column} {text.strip()!r} is not a number"
    if not math.isfinite(number):
        return math.nan, f"{column} {text.strip()!r} is not a finite number"
    return number, None


def patient_of(case: str) -> str | None:
    match = CAMUS_CASE.match(case) or ECHONET_CASE.match(case)
    return match.group("patient") if match else None


def load_reference_values(path: Path) -> dict[str, PatientVolumes]:
    """patient -> its EDV, ESV and EF from `path`: the first usable value of each column over the patient's
    cases, NaN where none is, with a note per column that `path` has but gives this patient no number for."""
    columns, rows = read_csv_table(path)
    if "case" not in columns or not any(column in columns for column in VALUE_COLUMNS.values()):
        raise InputError(path, f"needs a 'case' column and at least one of {', '.join(VALUE_COLUMNS.values())}")
    present = {key: column for key, column in VALUE_COLUMNS.items() if column in columns}
    values: dict[str, dict[str, float]] = {}
    problems: dict[str, dict[str, str]] = {}
    for row in rows:
        patient = patient_of(row["case"])
        if patient is None:
            continue
        entry = values.setdefault(patient, {key: math.nan for key in VALUE_COLUMNS})
        for key, column in present.items():
            if math.isnan(entry[key]):
                entry[key], problem = parse_value(row.get(column), column)
                if problem is not None:
                    problems.setdefault(patient, {}).setdefault(key, problem)
    if not values:
        raise InputError(path, "names no ED/ES cases (<patient>_{2CH,4CH}_{ED,ES} or <FileName>_{ED,ES})")
    return {patient: PatientVolumes(patient, v["edv"], v["esv"], v["ef"], physical=True,
                                    notes=[f"{problem}; {LEFT_OUT}" for key, problem in
                                           problems.get(patient, {}).items() if math.isnan(v[key])])
            for patient, v in sorted(values.items())}
