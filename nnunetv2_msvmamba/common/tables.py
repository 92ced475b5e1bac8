"""CSV tables as the reports write them."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence


def write_csv(rows: Sequence[dict], columns: Sequence[str], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
