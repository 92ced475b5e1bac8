"""The comparison tables benchmarks/bench_network.py prints, read back (for its tests)."""
from __future__ import annotations

import re

NUMBER = r"(\d+(?:\.\d+)?)"


def tables(output: str) -> dict[str, str]:
    """The comparison tables of the CPU section, by the MSV-Mamba column's title."""
    section = output.split("cpu (selective scan backend: numba):\n", 1)[1]
    found = {}
    for block in section.split("\n\n"):
        header = re.match(r"^ +stock ResEnc-M +(MSV-Mamba(?:, LMS on every stage)?) +MSV-Mamba / stock$", block,
                          re.MULTILINE)
        if header:
            found[header.group(1)] = block
    return found


def table_row(table: str, title: str, unit: str) -> tuple[float, float, float, float]:
    """(stock, MSV-Mamba, ratio, rounding: half a unit of the figures' last printed digit) from the row `title`."""
    match = re.search(rf"^  {re.escape(title)}\s+{NUMBER} {unit}\s+{NUMBER} {unit}\s+{NUMBER}x$", table, re.MULTILINE)
    assert match, f"no row {title!r} in:\n{table}"
    decimals = len(match.group(1).partition(".")[2])
    return (*(float(value) for value in match.groups()), 0.5 * 10 ** -decimals)
