"""The rows of a CSV report, as the tests read them back."""
from __future__ import annotations

import csv
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    """Every row of the CSV file at `path` as {column: value}, values as written (strings)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
