"""The clinical report files: `clinical_per_patient.csv` (one row per model and patient), `clinical_summary.json`
and `clinical_summary.md` (the agreement statistics), `bland_altman.png` and `scatter.png`, all rendered from
one summary document and written together or not at all.

Physiologically implausible values (ESV > EDV) are kept as measured and flagged where they are shown: in the
patient's `note`, and counted per series in the summary and its means table."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from nnunetv2_msvmamba.common.tables import write_csv
from nnunetv2_msvmamba.evaluation.report import without_nan
from .agreement import agreement
from .cases import CAMUS, CAMUS_VIEWS, PatientVolumes, name_some
from .outputs import staged_files
from .plot import agreement_grid
from .volumes import IMPLAUSIBLE, IMPLAUSIBLE_CAUSES, is_implausible

REFERENCE_NAME = "reference"
CASES_NAME = "cases.csv"
METRICS = (("edv", "EDV"), ("esv", "ESV"), ("ef", "EF"))
VOLUME_METRICS = ("edv", "esv")
VIEW_COLUMNS = tuple(f"{quantity}_{view.lower()}_{unit}" for view in CAMUS_VIEWS
                     for quantity, unit in (("edv", "ml"), ("esv", "ml"), ("ef", "percent")))
PER_PATIENT_COLUMNS = ("model", "patient", "edv_ml", "esv_ml", "ef_percent", *VIEW_COLUMNS, "volume_unit", "note")
CONVENTIONS = {
    "volumes": "method of discs, 20 discs from the mitral annulus midpoint to the apex: Simpson's biplane for CAMUS "
               "(2CH and 4CH diameters, the longer length), single plane (apical 4-chamber) for EchoNet-Dynamic; "
               "the *_2ch/*_4ch columns are each CAMUS view's single-plane values",
    "ef": "100 x (EDV - ESV) / EDV",
    "bias": "mean of (model - reference) over the patients both have",
    "limits_of_agreement": "bias ± 1.96 x the sample SD (ddof=1) of the differences (Bland-Altman)",
    "pearson_r": "Pearson correlation of model and reference; undefined with fewer than 2 pairs",
    "mae": "mean absolute difference",
}


@dataclass
class ClinicalResults:
    """Per-patient volumes of each series (the models, then `reference` and `cases.csv` when given)."""

    kind: str
    physical: bool
    series: dict[str, dict[str, PatientVolumes]]
    sources: dict[str, str]
    comparisons: list[tuple[str, str]]
    notes: list[str]


def value(volumes: PatientVolumes, metric: str) -> float:
    return float(getattr(volumes, metric))


def implausibility(volumes: PatientVolumes) -> list[str]:
    """What is physiologically implausible about a patient's values (the biplane or single-plane values, and
    each CAMUS view's single-plane values); empty when nothing is."""
    reasons = []
    if is_implausible(volumes.edv, volumes.esv):
        reasons.append(f"ESV > EDV (EF {volumes.ef:.1f} %): physiologically implausible ({IMPLAUSIBLE_CAUSES})")
    reasons += [f"{view} single plane: ESV > EDV (EF {ef:.1f} %)" for view, (edv, esv, ef) in volumes.views.items()
                if is_implausible(edv, esv)]
    return reasons


def implausible_patients(patients: Mapping[str, PatientVolumes]) -> list[str]:
    return [patient for patient, volumes in patients.items() if implausibility(volumes)]


def per_patient_rows(results: ClinicalResults) -> list[dict]:
    unit = "mL" if results.physical else "pixels3"
    rows = []
    for name, patients in results.series.items():
        for patient, volumes in patients.items():
            row = {"model": name, "patient": patient, "edv_ml": volumes.edv, "esv_ml": volumes.esv,
                   "ef_percent": volumes.ef, "volume_unit": "mL" if name == CASES_NAME else unit,
                   "note": "; ".join(volumes.all_notes() + implausibility(volumes))}
            for view, (edv, esv, ef) in volumes.views.items():
                row.update({f"edv_{view.lower()}_ml": edv, f"esv_{view.lower()}_ml": esv,
                            f"ef_{view.lower()}_percent": ef})
            rows.append(row)
    return rows


def comparison_entry(results: ClinicalResults, model: str, reference: str) -> dict:
    measured, against = results.series[model], results.series[reference]
    patients = [patient for patient in against if patient in measured]
    # Volumes in pixels³ cannot be compared with the dataset's mL; their ratio, the EF, can.
    comparable = [metric for metric, _ in METRICS
                  if results.physical or reference != CASES_NAME or metric not in VOLUME_METRICS]
    pairs = {metric: (np.array([value(measured[p], metric) for p in patients if metric in comparable]),
                      np.array([value(against[p], metric) for p in patients if metric in comparable]))
             for metric, _ in METRICS}
    # in the plots, a pair with ESV > EDV on either side is drawn apart (clinical.plot.draw_points)
    flagged = {metric: np.array([is_implausible(measured[p].edv, measured[p].esv)
                                 or is_implausible(against[p].edv, against[p].esv)
                                 for p in patients if metric in comparable], dtype=bool) for metric, _ in METRICS}
    return {"model": model, "reference": reference, "pairs": pairs,
            "stats": {metric: agreement(*pairs[metric]) for metric, _ in METRICS},
            "flagged": flagged, "flag_label": "ESV > EDV"}


def series_means(patients: Mapping[str, PatientVolumes]) -> dict:
    def mean(metric: str) -> float:
        values = [value(v, metric) for v in patients.values() if math.isfinite(value(v, metric))]
        return float(np.mean(values)) if values else math.nan
    return {"n_patients": len(patients), **{metric: mean(metric) for metric, _ in METRICS},
            "n_implausible": len(implausible_patients(patients))}


def summary_document(results: ClinicalResults, entries: list[dict]) -> dict:
    return {
        "cases": results.kind,
        "method": "Simpson's biplane method of discs (2CH + 4CH)" if results.kind == CAMUS
        else "single-plane method of discs (apical 4-chamber)",
        "volume_unit": "mL" if results.physical else "pixels³ (no pixel spacing; pass --spacing for mL)",
        "sources": results.sources,
        "conventions": CONVENTIONS,
        "notes": results.notes,
        "implausible": {"criterion": IMPLAUSIBLE,
                        "patients": {name: implausible_patients(patients) for name, patients in results.series.items()
                                     if implausible_patients(patients)}},
        "means": {name: series_means(patients) for name, patients in results.series.items()},
        "agreement": [{"model": e["model"], "reference": e["reference"], **e["stats"]} for e in entries],
    }


def number(x: Optional[float], decimals: int = 2, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"


def volume(x: Optional[float], signed: bool = False) -> str:
    """A tenth of a mL, as echocardiography reports volumes (an adult LV holds tens to hundreds of mL)."""
    return number(x, decimals=1, signed=signed)


def metric_formats(metric: str):
    """(value, signed value) formatters for a quantity of METRICS."""
    if metric in VOLUME_METRICS:
        return volume, lambda x: volume(x, signed=True)
    return number, lambda x: number(x, signed=True)


def agreement_table(document: dict) -> str:
    lines = ["| model | reference | quantity | n | Pearson r | bias | limits of agreement | MAE |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for entry in document["agreement"]:
        for metric, label in METRICS:
            s = entry[metric]
            if s["n"] == 0:
                continue
            plain, signed = metric_formats(metric)
            loa = f"{plain(s['loa_lower'])} to {plain(s['loa_upper'])}" if math.isfinite(s["sd_difference"]) \
                else "n/a"
            lines.append(f"| {entry['model']} | {entry['reference']} | {label} | {s['n']} | "
                         f"{number(s['pearson_r'], 3)} | {signed(s['bias'])} | {loa} | {plain(s['mae'])} |")
    return "\n".join(lines)


def means_table(document: dict) -> str:
    """The means of every series; a summary written before the ESV > EDV count existed (the demo reuses its
    finished steps) shows n/a there."""
    unit = "mL" if document["volume_unit"] == "mL" else "px³"
    lines = [f"| series | patients | EDV ({unit}) | ESV ({unit}) | EF (%) | ESV > EDV |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, means in document["means"].items():
        lines.append(f"| {name} | {means['n_patients']} | {volume(means['edv'])} | {volume(means['esv'])} | "
                     f"{number(means['ef'], 1)} | {means.get('n_implausible', 'n/a')} |")
    return "\n".join(lines)


def implausible_counts(document: dict) -> list[str]:
    """`series: k of n patient(s) (names)` for every series with physiologically implausible patients."""
    return [f"{name}: {len(patients)} of {document['means'][name]['n_patients']} patient(s) "
            f"({name_some(patients)})" for name, patients in document["implausible"]["patients"].items()]


def render_markdown(document: dict) -> str:
    lines = ["# Clinical indices: volumes and ejection fraction", "",
             f"- Cases: {document['cases']}; volumes by {document['method']}, in {document['volume_unit']}",
             *(f"- {name}: `{source}`" for name, source in document["sources"].items()),
             f"- EF = {CONVENTIONS['ef']}; bias = {CONVENTIONS['bias']}; limits of agreement = "
             f"{CONVENTIONS['limits_of_agreement']}; MAE = {CONVENTIONS['mae']}.",
             *(f"- Note: {note}" for note in document["notes"]),
             f"- Patients with {document['implausible']['criterion']}: "
             + ("; ".join(implausible_counts(document)) or "none"),
             "", "## Means", "", means_table(document)]
    if document["agreement"]:
        lines += ["", "## Agreement", "", agreement_table(document), "",
                  "Plots: `bland_altman.png`, `scatter.png`."]
    return "\n".join(lines) + "\n"


def write_clinical_reports(results: ClinicalResults, output: Path) -> dict:
    """Writes the report files into `output`; returns the summary document."""
    entries = [comparison_entry(results, model, reference) for model, reference in results.comparisons]
    document = summary_document(results, entries)
    metrics = [(metric, label) for metric, label in METRICS if any(e["stats"][metric]["n"] for e in entries)]
    with staged_files(output) as staging:
        write_csv(per_patient_rows(results), PER_PATIENT_COLUMNS, staging / "clinical_per_patient.csv")
        (staging / "clinical_summary.json").write_text(
            json.dumps(without_nan(document), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (staging / "clinical_summary.md").write_text(render_markdown(document), encoding="utf-8")
        if entries and metrics:
            agreement_grid(entries, metrics, staging / "bland_altman.png", bland_altman=True)
            agreement_grid(entries, metrics, staging / "scatter.png", bland_altman=False)
    return document
