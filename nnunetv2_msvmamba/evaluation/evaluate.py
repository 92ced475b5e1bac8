"""Scores every case of every model's prediction folder against the ground-truth folder, in parallel over
cases, and checks that predictions and ground truth fit together (cases, geometry, label values)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from nnunetv2.evaluation.evaluate_predictions import region_or_label_to_mask
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter

from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.parallel import parallel_map
from .case_metadata import BREAKDOWN_COLUMNS
from .label_folders import LabelMap, detect_file_ending, list_cases, read_label_map, reader_class
from .metrics import MaskComparison, compare_masks
from .structures import ECHO_STRUCTURES, Structure, labels_from_dataset_json, structures_for_labels

SPACING_RELATIVE_TOLERANCE = 1e-4
CASES_NAMED_IN_ERRORS = 5


@dataclass(frozen=True)
class CaseTask:
    """One ground-truth case and the prediction files of the models that have it."""

    case: str
    reference_file: Path
    prediction_files: tuple[tuple[str, Path], ...]
    structures: tuple[Structure, ...]
    reader: type[BaseReaderWriter]


@dataclass
class CaseResult:
    """The metrics of one case per (model, structure), the label values seen, or the problem found."""

    case: str
    ndim: int = 0
    spacing: tuple[float, ...] = ()
    reference_labels: frozenset[int] = frozenset()
    prediction_labels: dict[str, frozenset[int]] = field(default_factory=dict)
    comparisons: dict[tuple[str, str], MaskComparison] = field(default_factory=dict)
    problem: Optional[tuple[str, str]] = None


@dataclass
class Evaluation:
    """Everything the reports need: one row per model, case and structure, plus what was evaluated."""

    rows: list[dict]
    models: dict[str, Path]
    reference_folder: Path
    structures: list[Structure]
    label_names: dict[int, str]
    label_source: str
    case_count: int
    dimensions: list[int]
    missing: dict[str, list[str]]
    notes: list[str]


def check_same_geometry(case: str, reference: LabelMap, prediction: LabelMap, prediction_file: Path) -> None:
    if prediction.labels.shape != reference.labels.shape:
        raise InputError(prediction_file, f"case {case}: shape {prediction.labels.shape} differs from the "
                                               f"ground truth's {reference.labels.shape}")
    if not np.allclose(prediction.spacing, reference.spacing, rtol=SPACING_RELATIVE_TOLERANCE, atol=0):
        raise InputError(prediction_file, f"case {case}: spacing {prediction.spacing} differs from the "
                                               f"ground truth's {reference.spacing}")


def score_case(task: CaseTask) -> CaseResult:
    reference = read_label_map(task.reader, task.reference_file)
    result = CaseResult(task.case, reference.labels.ndim, reference.spacing,
                        frozenset(np.unique(reference.labels).tolist()))
    reference_masks = {s.name: region_or_label_to_mask(reference.labels, s.labels) for s in task.structures}
    for model, prediction_file in task.prediction_files:
        prediction = read_label_map(task.reader, prediction_file)
        check_same_geometry(task.case, reference, prediction, prediction_file)
        result.prediction_labels[model] = frozenset(np.unique(prediction.labels).tolist())
        for structure in task.structures:
            result.comparisons[(model, structure.name)] = compare_masks(
                reference_masks[structure.name], region_or_label_to_mask(prediction.labels, structure.labels),
                reference.spacing)
    return result


def evaluate_case(task: CaseTask) -> CaseResult:
    """`score_case`, with a bad input returned as `problem` rather than raised: it runs in worker processes,
    and the problem travels back as plain data."""
    try:
        return score_case(task)
    except InputError as error:
        return CaseResult(task.case, problem=(str(error.path), error.problem))


def name_some(cases: list[str]) -> str:
    named = ", ".join(cases[:CASES_NAMED_IN_ERRORS])
    return named if len(cases) <= CASES_NAMED_IN_ERRORS else f"{named} and {len(cases) - CASES_NAMED_IN_ERRORS} more"


def match_predictions(reference_cases: Mapping[str, Path], prediction_folders: Mapping[str, Path], file_ending: str,
                      allow_missing: bool, notes: list[str]) -> tuple[dict[str, dict[str, Path]], dict[str, list[str]]]:
    """Model -> case -> prediction file for the ground-truth cases, and model -> cases it lacks."""
    predictions, missing = {}, {}
    for model, folder in prediction_folders.items():
        available = list_cases(folder, file_ending)
        if not available:
            raise InputError(folder, f"holds no '{file_ending}' prediction files (model {model})")
        lacking = [case for case in reference_cases if case not in available]
        if lacking and not allow_missing:
            raise InputError(folder, f"has no prediction for case {name_some(lacking)} ({len(lacking)} of "
                                          f"{len(reference_cases)}; pass --allow-missing to evaluate the others)")
        if lacking:
            notes.append(f"model {model}: no prediction for {len(lacking)} case(s): {name_some(lacking)}")
        unmatched = sorted(set(available) - set(reference_cases))
        if unmatched:
            notes.append(f"model {model}: {len(unmatched)} prediction(s) without ground truth ignored: "
                         f"{name_some(unmatched)}")
        predictions[model] = {case: available[case] for case in reference_cases if case in available}
        missing[model] = lacking
    return predictions, missing


def check_label_values(results: list[CaseResult], tasks: list[CaseTask], allowed: set[int], source: str) -> None:
    """Every label value in ground truth and predictions must be one the dataset defines."""
    for result, task in zip(results, tasks):
        files = [("ground truth", task.reference_file, result.reference_labels)]
        files += [(f"model {model}", path, result.prediction_labels[model]) for model, path in task.prediction_files]
        for who, path, labels in files:
            unknown = sorted(labels - allowed)
            if unknown:
                raise InputError(path, f"case {result.case} ({who}): label value(s) {unknown} not in the "
                                            f"dataset's labels {sorted(allowed)} ({source})")


def metrics_row(model: str, case: str, structure: Structure, comparison: MaskComparison,
                metadata: Mapping[str, str]) -> dict:
    return {"model": model, "case": case, "structure": structure.name, "dice": comparison.dice,
            "hd95_mm": comparison.hd95_mm, "msd_mm": comparison.msd_mm, "size": comparison.size,
            "size_gt": comparison.size_reference, "empty": comparison.empty,
            **{column: metadata[column] for column in BREAKDOWN_COLUMNS if column in metadata}}


@dataclass(frozen=True)
class LabelSet:
    """The dataset's foreground labels (value -> name), where they come from, and the structures they allow."""

    names: dict[int, str]
    source: str
    structures: list[Structure]


def read_dataset_json(path: Path) -> tuple[dict, LabelSet]:
    try:
        dataset_json = json.loads(Path(path).read_text())
        names = labels_from_dataset_json(dataset_json)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(path, f"is not a usable nnU-Net dataset.json ({error!r})") from None
    if not isinstance(dataset_json.get("file_ending"), str):
        raise InputError(path, "has no 'file_ending' entry")
    structures = structures_for_labels(names)
    if not structures:
        raise InputError(path, "defines none of the echo labels 1 (LV_cavity), 2 (LV_myocardium), "
                                    "3 (left_atrium)")
    return dataset_json, LabelSet(names, f"dataset.json ({path})", structures)


def label_set_from_ground_truth(results: list[CaseResult], reference_folder: Path, notes: list[str]) -> LabelSet:
    present = sorted(set().union(*(result.reference_labels for result in results)) - {0})
    structures = structures_for_labels(present)
    if not structures:
        raise InputError(reference_folder, "ground truth holds none of the echo labels 1, 2, 3")
    notes.append(f"no dataset.json: labels {present} inferred from the labels present in the ground truth")
    return LabelSet({label: f"label {label}" for label in present},
                    "inferred from the labels present in the ground truth (no dataset.json)", structures)


def evaluate_folders(reference_folder: Path, prediction_folders: Mapping[str, Path],
                     dataset_json_file: Optional[Path], case_metadata: Mapping[str, Mapping[str, str]],
                     num_processes: int, allow_missing: bool, notes: Optional[list[str]] = None) -> Evaluation:
    """Scores each model's predictions against `reference_folder` for the echo structures the dataset has.
    Without a dataset.json the label set is inferred from the labels present in the ground truth."""
    notes = [] if notes is None else notes
    dataset_json, declared = read_dataset_json(dataset_json_file) if dataset_json_file else (None, None)
    file_ending = dataset_json["file_ending"] if dataset_json else detect_file_ending(reference_folder)
    reference_cases = list_cases(reference_folder, file_ending)
    if not reference_cases:
        raise InputError(reference_folder, f"holds no '{file_ending}' label files")
    if case_metadata and not any(case in case_metadata for case in reference_cases):
        notes.append("the case descriptions (cases.csv) name none of the ground-truth cases; no breakdowns")
    predictions, missing = match_predictions(reference_cases, prediction_folders, file_ending, allow_missing, notes)
    reader = reader_class(dataset_json, file_ending, next(iter(reference_cases.values())))
    # Without a dataset.json every echo structure is scored, and the ones the ground truth lacks dropped below.
    candidates = tuple(declared.structures if declared else ECHO_STRUCTURES)
    tasks = [CaseTask(case, path, tuple((model, files[case]) for model, files in predictions.items() if case in files),
                      candidates, reader) for case, path in reference_cases.items()]
    results = parallel_map(evaluate_case, tasks, num_processes, desc="evaluating cases")
    problem = next((result.problem for result in results if result.problem is not None), None)
    if problem is not None:
        raise InputError(*problem)

    label_set = declared or label_set_from_ground_truth(results, reference_folder, notes)
    check_label_values(results, tasks, {0, *label_set.names}, label_set.source)
    if all(np.allclose(result.spacing, 1.0) for result in results):
        notes.append("every image has spacing 1 (EchoNet-Dynamic has no physical spacing): distances and sizes "
                     "labelled mm / mm² are in pixels")
    rows = [metrics_row(model, result.case, structure, result.comparisons[(model, structure.name)],
                        case_metadata.get(result.case, {}))
            for model in predictions for result in results for structure in label_set.structures
            if (model, structure.name) in result.comparisons]
    return Evaluation(rows=rows, models=dict(prediction_folders), reference_folder=reference_folder,
                      structures=label_set.structures, label_names=label_set.names, label_source=label_set.source,
                      case_count=len(reference_cases), dimensions=sorted({result.ndim for result in results}),
                      missing=missing, notes=notes)
