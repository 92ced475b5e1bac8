"""The report files: `metrics_per_case.csv` (long form), `summary.json` and `summary.md` (one table per
structure), all rendered from one summary document so they agree with each other."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

from nnunetv2_msvmamba.common.atomic import staged_files
from nnunetv2_msvmamba.common.tables import write_csv
from .case_metadata import BREAKDOWN_COLUMNS
from .evaluate import Evaluation
from .plot import write_boxplot
from .summary_statistics import ALL_CASES, METRICS, MIN_PAIRS_FOR_WILCOXON, summarize
from .structures import describe

STAGING_NAME = ".msvmamba_evaluate-staging"
PER_CASE_COLUMNS = ("model", "case", "structure", "dice", "hd95_mm", "msd_mm", "size", "size_gt", "empty")
SIZE_UNITS = {2: "mm²", 3: "mm³"}
CONVENTIONS = {
    "dice": "2|GT∩P|/(|GT|+|P|); a fraction in the CSV and JSON, in % in summary.md",
    "surface": "mask voxels with a face-neighbour outside the mask or on the image border",
    "hd95_mm": "95th percentile of the pooled surface distances of both directions (GT->P and P->GT), "
               "Euclidean, in mm from the image spacing of each axis",
    "msd_mm": "mean of the same pooled surface distances (average symmetric surface distance), in mm",
    "size": "area (2D, mm²) or volume (3D, mm³) of the predicted mask; size_gt: of the ground-truth mask",
    "empty_masks": "both masks empty: Dice 1, HD95 0, MSD 0 (empty='both'); exactly one empty: Dice 0, HD95 and "
                   "MSD undefined (NaN in the CSV, null in the JSON, empty='reference' or 'prediction'), counted "
                   "in n_one_empty and left out of the distance statistics",
    "std": "sample standard deviation over cases (ddof=1)",
    "paired_difference": "mean of (model - reference model) over the cases where both values are defined, with "
                         "the two-sided Wilcoxon signed-rank p-value (scipy.stats.wilcoxon); no p-value (null, 'p n/a') "
                         f"with fewer than {MIN_PAIRS_FOR_WILCOXON} pairs, p = 1.0 when every difference is zero",
}
# metric -> (markdown column title, factor from the stored value, decimals)
MARKDOWN_METRICS = {"dice": ("Dice (%)", 100.0, 2), "hd95_mm": ("HD95 (mm)", 1.0, 2),
                    "msd_mm": ("MSD (mm)", 1.0, 2), "size": ("size ({unit})", 1.0, 1)}


def size_unit(dimensions: Sequence[int]) -> str:
    return " or ".join(SIZE_UNITS.get(d, f"mm^{d}") for d in dimensions)


def summary_document(evaluation: Evaluation) -> dict:
    """What was evaluated, how, and the statistics: the content of summary.json and summary.md."""
    models = list(evaluation.models)
    return {
        "ground_truth": str(evaluation.reference_folder),
        "n_cases": evaluation.case_count,
        "dimensions": evaluation.dimensions,
        "models": {name: str(folder) for name, folder in evaluation.models.items()},
        "reference_model": models[0],
        "labels": {str(label): name for label, name in sorted(evaluation.label_names.items())},
        "labels_source": evaluation.label_source,
        "structures": {s.name: {"labels": list(s.labels), "description": describe(s, evaluation.label_names)}
                       for s in evaluation.structures},
        "size_unit": size_unit(evaluation.dimensions),
        "conventions": CONVENTIONS,
        "missing_cases": {model: cases for model, cases in evaluation.missing.items() if cases},
        "notes": evaluation.notes,
        "results": summarize(evaluation.rows, models, evaluation.structures),
    }


def without_nan(value: object) -> object:
    """JSON has no NaN: undefined values become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: without_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_nan(item) for item in value]
    return value


def write_per_case_csv(rows: Sequence[dict], path: Path) -> None:
    present = [column for column in BREAKDOWN_COLUMNS if any(column in row for row in rows)]
    write_csv(rows, [*PER_CASE_COLUMNS, *present], path)


def write_summary_json(document: dict, path: Path) -> None:
    path.write_text(json.dumps(without_nan(document), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def format_mean_std(statistics: dict, factor: float, decimals: int) -> str:
    if not math.isfinite(statistics["mean"]):
        return "n/a"
    mean = f"{statistics['mean'] * factor:.{decimals}f}"
    return mean if not math.isfinite(statistics["std"]) else f"{mean} ± {statistics['std'] * factor:.{decimals}f}"


def format_difference(difference: dict, factor: float, decimals: int) -> str:
    if difference["n_pairs"] == 0:
        return "n/a"
    p = "p n/a" if not math.isfinite(difference["p_value"]) else f"p={difference['p_value']:.3g}"
    return f"{difference['mean'] * factor:+.{decimals}f} ({p})"


def markdown_table(document: dict, structure: str, subsets: Optional[Sequence[str]] = None) -> str:
    """One structure's table: a row per subset and model with mean ± std of each metric, and with two or
    more models the paired difference to the reference model and its p-value."""
    models = list(document["models"])
    titles = {metric: title.format(unit=document["size_unit"]) for metric, (title, _, _) in MARKDOWN_METRICS.items()}
    header = ["subset", "model", "n", *titles.values(), "one mask empty"]
    if len(models) > 1:
        header += [f"Δ {titles[metric]} vs {models[0]}" for metric in METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for subset, by_model in document["results"][structure].items():
        if subsets is not None and subset not in subsets:
            continue
        for model in models:
            entry = by_model[model]
            cells = [subset, model, str(entry["n_cases"])]
            cells += [format_mean_std(entry[metric], factor, decimals)
                      for metric, (_, factor, decimals) in MARKDOWN_METRICS.items()]
            cells.append(str(entry["n_one_empty"]))
            if len(models) > 1:
                cells += ["—" if model == models[0] else
                          format_difference(entry["paired_difference"][metric], factor, decimals)
                          for metric, (_, factor, decimals) in MARKDOWN_METRICS.items()]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(document: dict) -> str:
    models = list(document["models"])
    lines = ["# Segmentation evaluation", "",
             f"- Ground truth: `{document['ground_truth']}` ({document['n_cases']} cases, "
             f"{'/'.join(f'{d}D' for d in document['dimensions'])})",
             "- Models: " + ", ".join(f"**{name}** `{folder}`" for name, folder in document["models"].items()),
             f"- Labels: {document['labels_source']}",
             "- Structures: " + "; ".join(s["description"] for s in document["structures"].values()),
             f"- Cells are mean ± {CONVENTIONS['std']}. Dice in %, HD95 and MSD in mm, size in "
             f"{document['size_unit']} (of the predicted mask).",
             f"- HD95: {CONVENTIONS['hd95_mm']}. MSD: {CONVENTIONS['msd_mm']}.",
             f"- Empty masks: {CONVENTIONS['empty_masks']}."]
    if len(models) > 1:
        lines.append(f"- Δ vs {models[0]}: {CONVENTIONS['paired_difference']} (Dice difference in "
                     f"percentage points).")
    for model, cases in document["missing_cases"].items():
        lines.append(f"- Missing predictions of {model}: {', '.join(cases)}")
    lines += [f"- Note: {note}" for note in document["notes"]]
    for structure in document["results"]:
        lines += ["", f"## {structure}", "", markdown_table(document, structure)]
    return "\n".join(lines) + "\n"


def overall_tables(document: dict) -> str:
    """The 'all cases' rows of every structure's table, for the console."""
    return "\n\n".join(f"{structure}\n{markdown_table(document, structure, subsets=[ALL_CASES])}"
                       for structure in document["results"])


def write_reports(evaluation: Evaluation, output_folder: Path) -> dict:
    """Writes metrics_per_case.csv, summary.json, summary.md and boxplot.png into `output_folder`, all of them
    or (on a full disk, say) none; returns the summary document."""
    document = summary_document(evaluation)
    with staged_files(output_folder, STAGING_NAME) as staging:
        write_per_case_csv(evaluation.rows, staging / "metrics_per_case.csv")
        write_summary_json(document, staging / "summary.json")
        (staging / "summary.md").write_text(render_markdown(document), encoding="utf-8")
        write_boxplot(evaluation.rows, list(evaluation.models), evaluation.structures, staging / "boxplot.png")
    return document
