"""Summary statistics of the per-case metrics: mean ± std per model, structure and subset of cases (phase,
view, image quality), and the paired difference of each model to the first with a Wilcoxon p-value."""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import wilcoxon

from .case_metadata import BREAKDOWN_COLUMNS, NAMED_PHASES, OTHER_PHASE, subset_value
from .metrics import BOTH_EMPTY, NEITHER_EMPTY
from .structures import Structure

METRICS = ("dice", "hd95_mm", "msd_mm", "size")
# With fewer pairs the two-sided exact Wilcoxon p-value cannot go below 2/2^5 = 0.0625, so no difference
# could ever be called significant; the p-value is reported as NaN instead.
MIN_PAIRS_FOR_WILCOXON = 6
ALL_CASES = "all"


def describe_values(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (ddof=1) and count of the finite values (NaN = undefined, left out)."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    return {"mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else math.nan,
            "n": int(finite.size)}


def wilcoxon_p_value(differences: np.ndarray) -> tuple[float, str]:
    """Two-sided Wilcoxon signed-rank p-value of paired differences, and a note when it is not computed
    from the data: too few pairs (NaN) or no difference at all (1.0)."""
    if differences.size < MIN_PAIRS_FOR_WILCOXON:
        return math.nan, f"fewer than {MIN_PAIRS_FOR_WILCOXON} paired cases"
    if not np.any(differences):
        return 1.0, "all paired differences are zero"
    return float(wilcoxon(differences).pvalue), ""


def paired_difference(reference: Mapping[str, float], other: Mapping[str, float]) -> dict:
    """Mean of `other - reference` over the cases where both values are defined, with its p-value."""
    cases = [case for case in reference
             if case in other and math.isfinite(reference[case]) and math.isfinite(other[case])]
    differences = np.asarray([other[case] - reference[case] for case in cases], dtype=float)
    p_value, note = wilcoxon_p_value(differences)
    return {"mean": float(differences.mean()) if differences.size else math.nan, "n_pairs": int(differences.size),
            "p_value": p_value, "note": note}


def subset_order(column: str, value: str) -> tuple:
    if column == "phase":
        return ((list(NAMED_PHASES) + [OTHER_PHASE]).index(value), value)
    return (0, value)


def case_subsets(rows: Sequence[dict]) -> list[tuple[str, Callable[[dict], bool]]]:
    """('all', every row), then one subset per value of each breakdown column the rows carry,
    e.g. 'phase=ED', 'view=4CH', 'image_quality=Poor'."""
    subsets: list[tuple[str, Callable[[dict], bool]]] = [(ALL_CASES, lambda row: True)]
    for column in BREAKDOWN_COLUMNS:
        values = {subset_value(column, row[column]) for row in rows if row.get(column)}
        for value in sorted(values, key=lambda v: subset_order(column, v)):
            subsets.append((f"{column}={value}", lambda row, c=column, v=value:
                            bool(row.get(c)) and subset_value(c, row[c]) == v))
    return subsets


def summarize_model(rows: Sequence[dict]) -> dict:
    """Counts and per-metric statistics of one model's rows for one structure and subset."""
    summary = {"n_cases": len(rows),
               "n_both_empty": sum(row["empty"] == BOTH_EMPTY for row in rows),
               "n_one_empty": sum(row["empty"] not in (NEITHER_EMPTY, BOTH_EMPTY) for row in rows)}
    summary.update({metric: describe_values([row[metric] for row in rows]) for metric in METRICS})
    return summary


def summarize(rows: Sequence[dict], models: Sequence[str], structures: Sequence[Structure]) -> dict:
    """structure -> subset -> model -> statistics; every model after the first also gets
    `paired_difference`: metric -> its difference to the first model over the shared cases."""
    reference_model = models[0]
    summary: dict = {}
    for structure in structures:
        structure_rows = [row for row in rows if row["structure"] == structure.name]
        summary[structure.name] = {}
        for subset, belongs in case_subsets(structure_rows):
            by_model = {model: [row for row in structure_rows if row["model"] == model and belongs(row)]
                        for model in models}
            entries = {}
            for model in models:
                entries[model] = summarize_model(by_model[model])
                if model != reference_model:
                    entries[model]["paired_difference"] = {
                        metric: paired_difference({row["case"]: row[metric] for row in by_model[reference_model]},
                                                  {row["case"]: row[metric] for row in by_model[model]})
                        for metric in METRICS}
            summary[structure.name][subset] = entries
    return summary
