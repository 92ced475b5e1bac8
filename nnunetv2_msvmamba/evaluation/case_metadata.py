"""Per-case descriptions from the converters' `cases.csv` (phase, view, image quality), used to break the
reports down. Unknown columns are ignored; a missing column just means no breakdown by it."""
from __future__ import annotations

from pathlib import Path

from nnunetv2_msvmamba.common.tables import read_csv_table

CASE_COLUMN = "case"
# Columns the reports break down by, in report order.
BREAKDOWN_COLUMNS = ("phase", "view", "image_quality")
NAMED_PHASES = ("ED", "ES")
OTHER_PHASE = "other frames"


def load_case_metadata(path: Path, notes: list[str]) -> dict[str, dict[str, str]]:
    """Case id -> {column: value} for the breakdown columns `path` has; problems that do not stop the
    evaluation (no `case` column, repeated cases) are appended to `notes`."""
    columns, rows = read_csv_table(path)
    if CASE_COLUMN not in columns:
        notes.append(f"{path} has no '{CASE_COLUMN}' column; its case descriptions are ignored")
        return {}
    known = [c for c in BREAKDOWN_COLUMNS if c in columns]
    metadata: dict[str, dict[str, str]] = {}
    for row in rows:
        case = row[CASE_COLUMN]
        if case in metadata:
            notes.append(f"{path} lists case {case} more than once; its first row is used")
            continue
        metadata[case] = {column: row[column] for column in known if row.get(column)}
    return metadata


def subset_value(column: str, value: str) -> str:
    """The group a case falls into for `column`: ED and ES phases are their own groups, any other phase
    (a frame index of a full sequence) falls into one 'other frames' group."""
    if column == "phase" and value.upper() not in NAMED_PHASES:
        return OTHER_PHASE
    return value.upper() if column == "phase" else value
