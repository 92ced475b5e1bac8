"""EF, EDV and ESV per patient from a converter's cases.csv: the CAMUS `EF` (from Info_*.cfg), the
EchoNet-Dynamic `EF`, `EDV`, `ESV` (from FileList.csv). Cases are mapped to patients by their names."""
from __future__ import annotations

import math
from pathlib import Path

from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.tables import read_csv_table
from .cases import CAMUS_CASE, ECHONET_CASE, PatientVolumes

VALUE_COLUMNS = {"edv": "EDV", "esv": "ESV", "ef": "EF"}


def number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def patient_of(case: str) -> str | None:
    match = CAMUS_CASE.match(case) or ECHONET_CASE.match(case)
    return match.group("patient") if match else None


def load_reference_values(path: Path) -> dict[str, PatientVolumes]:
    """patient -> its EDV, ESV and EF from `path` (NaN where the file has none)."""
    columns, rows = read_csv_table(path)
    if "case" not in columns or not any(column in columns for column in VALUE_COLUMNS.values()):
        raise InputError(path, f"needs a 'case' column and at least one of {', '.join(VALUE_COLUMNS.values())}")
    values: dict[str, dict[str, float]] = {}
    for row in rows:
        patient = patient_of(row["case"])
        if patient is None:
            continue
        entry = values.setdefault(patient, {key: math.nan for key in VALUE_COLUMNS})
        for key, column in VALUE_COLUMNS.items():
            if math.isnan(entry[key]):
                entry[key] = number(row.get(column))
    if not values:
        raise InputError(path, "names no ED/ES cases (<patient>_{2CH,4CH}_{ED,ES} or <FileName>_{ED,ES})")
    return {patient: PatientVolumes(patient, v["edv"], v["esv"], v["ef"], physical=True)
            for patient, v in sorted(values.items())}
