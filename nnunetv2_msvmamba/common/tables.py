"""CSV tables as the reports write them."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

from .errors import InputError


def write_csv(rows: Sequence[dict], columns: Sequence[str], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_csv_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The column names and rows of a CSV file, every name and value stripped of surrounding blanks."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"cannot be read as CSV ({error})") from None
    return columns, rows
