"""CAMUS -> nnU-Net raw dataset, from either public release as downloaded.

Every patient gives the ED and ES image of its 2- and 4-chamber views as cases `patientNNNN_{2CH,4CH}_{ED,ES}`
(2D NIfTI keeping the source's spacing, origin and direction) with labels 0 background, 1 LV cavity,
2 LV myocardium, 3 left atrium. With --half-sequence, every other annotated frame of the 2023 release's half
sequences becomes an extra training case `patientNNNN_{2CH,4CH}_tNN` (NN = the frame, 1-based as in
Info_*.cfg) of the same patient.

2023 release: training and validation subgroups -> imagesTr/labelsTr, testing -> imagesTs/labelsTs; fold 0 of
splits_final.json is the official training/validation split, folds 1-4 are patient-level folds.
Challenge release: training/ -> imagesTr/labelsTr in 10 patient-level folds balanced for image quality and
EF as in the CAMUS paper, testing/ (no ground truth) -> imagesTs.
Validation folds hold only ED and ES cases (the benchmark); half-sequence frames only ever train."""
from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from nnunetv2.configuration import default_num_processes
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from dataset_conversion.camus_images import (PlaneGeometry, check_same_grid, checked_labels, read_frames,
                                             read_single_frame, write_nifti_2d)
from dataset_conversion.camus_release import (NIFTI_2023, PHASES, TESTING, TRAINING, VALIDATION, PatientFiles,
                                              Release, ViewFiles, plural, read_release)
from dataset_conversion.common import (check_targets, dataset_name, expand_to_cases, require_env_folder,
                                      run_converter, write_splits_final)
from nnunetv2_msvmamba.common.arguments import positive_int
from nnunetv2_msvmamba.common.atomic import atomic_folder
from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.parallel import parallel_map
from nnunetv2_msvmamba.common.tables import write_csv

DEFAULT_DATASET_ID = 601
SHORT_NAME = "CAMUS"
FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "LV_cavity": 1, "LV_myocardium": 2, "left_atrium": 3}
EXTRA_FOLDS_2023 = 4
PAPER_FOLDS = 10
FOLD_SEED = 12345
CASE_COLUMNS = ("case", "patient", "view", "phase", "image_quality", "EF", "sex", "age", "spacing_x_mm",
                "spacing_y_mm", "split")
# Info_*.cfg keys behind the named columns; every other key is kept as a column `info_<key>`.
INFO_KEYS_OF_COLUMN = {"image_quality": ("ImageQuality",), "EF": ("EF", "LVef"), "sex": ("Sex",), "age": ("Age",)}
INFO_PREFIX = "info_"
QUALITY_ORDER = ("Good", "Medium", "Poor")
# EF groups of the CAMUS paper's fold balancing: reduced, borderline, normal.
EF_REDUCED_AT_MOST, EF_NORMAL_AT_LEAST = 45.0, 55.0


# ------------------------------------------------------------------------------------------------- one patient

@dataclass(frozen=True)
class CaseRecord:
    """One written case and where it came from."""
    case: str
    patient: str
    view: str
    phase: str                  # "ED", "ES", or the half-sequence frame number
    geometry: PlaneGeometry

    @property
    def from_half_sequence(self) -> bool:
        return self.phase not in PHASES


@dataclass(frozen=True)
class PatientTask:
    patient: PatientFiles
    images_folder: Path
    labels_folder: Path | None  # None: no ground truth to write (challenge testing/)
    half_sequence: bool


@dataclass
class PatientResult:
    patient: PatientFiles
    cases: list[CaseRecord] = field(default_factory=list)
    frames_unannotated: int = 0
    frames_at_ed_es: int = 0


def write_case(case: str, image: np.ndarray, labels: np.ndarray | None, geometry: PlaneGeometry,
               task: PatientTask) -> None:
    write_nifti_2d(image, geometry, task.images_folder / f"{case}_0000{FILE_ENDING}")
    if labels is not None:
        write_nifti_2d(labels, geometry, task.labels_folder / f"{case}{FILE_ENDING}")


def convert_phases(view: ViewFiles, task: PatientTask, result: PatientResult) -> None:
    """The ED and ES cases of one view; the ground truth is written on its image's grid once they agree."""
    for phase in PHASES:
        image, geometry = read_single_frame(view.images[phase])
        labels = None
        if task.labels_folder is not None:
            labels, labels_geometry = read_single_frame(view.labels[phase])
            check_same_grid(view.images[phase], image, geometry, view.labels[phase], labels, labels_geometry)
            labels = checked_labels(labels, view.labels[phase])
        case = f"{task.patient.name}_{view.view}_{phase}"
        write_case(case, image, labels, geometry, task)
        result.cases.append(CaseRecord(case, task.patient.name, view.view, phase, geometry))


def convert_half_sequence(view: ViewFiles, task: PatientTask, result: PatientResult) -> None:
    """Every annotated half-sequence frame but the ED and ES ones, which are cases of their own already."""
    frames, geometry = read_frames(view.sequence)
    labels, labels_geometry = read_frames(view.sequence_labels)
    check_same_grid(view.sequence, frames, geometry, view.sequence_labels, labels, labels_geometry)
    labels = checked_labels(labels, view.sequence_labels)
    for phase in PHASES:
        if view.frame_of(phase) > len(frames):
            raise InputError(view.info_path, f"{phase} is frame {view.frame_of(phase)}, but "
                                                  f"{view.sequence.name} has {len(frames)} frames")
    phase_frames = {view.frame_of(phase) for phase in PHASES}
    for index in range(len(frames)):
        number = index + 1
        if number in phase_frames:
            result.frames_at_ed_es += 1
        elif not labels[index].any():
            result.frames_unannotated += 1
        else:
            case = f"{task.patient.name}_{view.view}_t{number:02d}"
            write_case(case, frames[index], labels[index], geometry, task)
            result.cases.append(CaseRecord(case, task.patient.name, view.view, str(number), geometry))


def convert_patient(task: PatientTask) -> PatientResult:
    """Writes all cases of one patient (runs in a worker process)."""
    result = PatientResult(task.patient)
    for view in task.patient.views:
        convert_phases(view, task, result)
        if task.half_sequence and view.sequence is not None:
            convert_half_sequence(view, task, result)
    return result


# ------------------------------------------------------------------------------------------ metadata and folds

def info_value(view: ViewFiles, column: str) -> str:
    return next((view.info[key] for key in INFO_KEYS_OF_COLUMN[column] if key in view.info), "")


def extra_info_keys(results: Sequence[PatientResult]) -> list[str]:
    named = {key for keys in INFO_KEYS_OF_COLUMN.values() for key in keys}
    return sorted({key for r in results for view in r.patient.views for key in view.info} - named)


def case_rows(results: Sequence[PatientResult]) -> tuple[list[dict], list[str]]:
    """cases.csv's rows, sorted by case, and its columns (the named ones, then every other Info key)."""
    extra_keys = extra_info_keys(results)
    rows = []
    for result in results:
        views = {view.view: view for view in result.patient.views}
        for record in result.cases:
            view = views[record.view]
            row = {"case": record.case, "patient": record.patient, "view": record.view, "phase": record.phase,
                   **{column: info_value(view, column) for column in INFO_KEYS_OF_COLUMN},
                   "spacing_x_mm": f"{record.geometry.spacing[0]:.7g}",
                   "spacing_y_mm": f"{record.geometry.spacing[1]:.7g}", "split": result.patient.subgroup}
            row.update({f"{INFO_PREFIX}{key}": view.info.get(key, "") for key in extra_keys})
            rows.append(row)
    return sorted(rows, key=lambda row: row["case"]), [*CASE_COLUMNS, *(f"{INFO_PREFIX}{k}" for k in extra_keys)]


def ejection_fraction(patient: PatientFiles) -> float | None:
    for view in patient.views:
        try:
            return float(info_value(view, "EF"))
        except ValueError:
            continue
    return None


def patient_stratum(patient: PatientFiles) -> str:
    """The CAMUS paper balances its folds for image quality (here the poorer of the two views) and EF group."""
    qualities = [info_value(view, "image_quality") for view in patient.views]
    known = [q for q in qualities if q in QUALITY_ORDER]
    quality = max(known, key=QUALITY_ORDER.index) if known else "unknown quality"
    ef = ejection_fraction(patient)
    if ef is None:
        ef_group = "unknown EF"
    elif ef <= EF_REDUCED_AT_MOST:
        ef_group = "reduced EF"
    elif ef >= EF_NORMAL_AT_LEAST:
        ef_group = "normal EF"
    else:
        ef_group = "borderline EF"
    return f"{quality}, {ef_group}"


def stratified_patient_folds(strata: dict[str, str], n_folds: int, seed: int = FOLD_SEED
                             ) -> list[dict[str, list[str]]]:
    """Deterministic patient-level k-fold split in which every stratum is spread evenly over the folds: each
    stratum's patients, shuffled, are dealt to the folds in turn, carrying on where the previous stratum
    stopped. Every patient is validation in exactly one fold."""
    rng = random.Random(seed)
    dealt: list[str] = []
    for stratum in sorted(set(strata.values())):
        members = sorted(p for p, s in strata.items() if s == stratum)
        rng.shuffle(members)
        dealt += members
    folds = [sorted(dealt[i::n_folds]) for i in range(n_folds)]
    return [{"train": sorted(p for j, f in enumerate(folds) if j != i for p in f), "val": folds[i]}
            for i in range(n_folds)]


def build_splits(release: Release, results: Sequence[PatientResult]) -> list[dict[str, list[str]]]:
    """nnU-Net's case-level folds from patient-level ones: a training patient brings all its cases, a validation
    patient only its ED and ES cases (half-sequence frames of a validation patient sit that fold out)."""
    trained = [r for r in results if r.patient.subgroup != TESTING]
    all_cases = {r.patient.name: [c.case for c in r.cases] for r in trained}
    benchmark_cases = {r.patient.name: [c.case for c in r.cases if not c.from_half_sequence] for r in trained}
    strata = {r.patient.name: patient_stratum(r.patient) for r in trained}
    if release.layout == NIFTI_2023:
        official = [{part: sorted(r.patient.name for r in trained if r.patient.subgroup == subgroup)
                     for part, subgroup in (("train", TRAINING), ("val", VALIDATION))}]
        patient_splits = official + stratified_patient_folds(strata, min(EXTRA_FOLDS_2023, len(strata)))
    else:
        patient_splits = stratified_patient_folds(strata, min(PAPER_FOLDS, len(strata)))
    as_train, as_val = expand_to_cases(patient_splits, all_cases), expand_to_cases(patient_splits, benchmark_cases)
    return [{"train": t["train"], "val": v["val"]} for t, v in zip(as_train, as_val)]


# ---------------------------------------------------------------------------------------------- whole dataset

@dataclass
class ConversionSummary:
    """What a conversion produced, and what it left out and why."""
    release: Release
    dataset_folder: Path
    splits_file: Path
    n_folds: int
    results: list[PatientResult]

    def report(self) -> str:
        def count(subgroup: str, half_sequence: bool | None = None) -> int:
            return sum(1 for r in self.results if r.patient.subgroup == subgroup for c in r.cases
                       if half_sequence is None or c.from_half_sequence == half_sequence)

        subgroups = self.release.subgroups
        patients = ", ".join(f"{subgroup} {sum(r.patient.subgroup == subgroup for r in self.results)}"
                             for subgroup in subgroups)
        per_split = ", ".join(
            f"{subgroup} {count(subgroup, False)}"
            + (f" (+{plural(count(subgroup, True), 'half-sequence frame')})" if count(subgroup, True) else "")
            for subgroup in subgroups)
        training = sum(count(s) for s in subgroups if s != TESTING)
        tested = [r for r in self.results if r.patient.subgroup == TESTING]
        test_labels = "imagesTs/labelsTs" if all(r.patient.has_ground_truth for r in tested) else \
            "imagesTs (no ground truth)"
        folds = ("fold 0 = official training/validation subgroups, then patient-level folds"
                 if self.release.layout == NIFTI_2023 else "patient-level folds as in the CAMUS paper")
        skipped = list(self.release.notes)
        frames_at_ed_es = sum(r.frames_at_ed_es for r in self.results)
        frames_unannotated = sum(r.frames_unannotated for r in self.results)
        if frames_at_ed_es:
            skipped.append(f"{plural(frames_at_ed_es, 'half-sequence frame')} at ED or ES (converted once, as the "
                           f"ED/ES case)")
        if frames_unannotated:
            skipped.append(f"{plural(frames_unannotated, 'half-sequence frame')} without annotation")
        lines = [f"{self.release.layout.description} in {self.release.root} -> {self.dataset_folder}",
                 f"  patients: {len(self.results)} ({patients})",
                 f"  cases per split: {per_split}",
                 f"  cases: {training} in imagesTr/labelsTr, {count(TESTING)} in {test_labels}",
                 f"  splits: {self.splits_file} ({self.n_folds} folds: {folds}, balanced for image quality "
                 f"and EF)",
                 "  skipped:" + ("" if skipped else " nothing")]
        return "\n".join(lines + [f"    {item}" for item in skipped])


def convert_camus(root: Path, dataset_id: int = DEFAULT_DATASET_ID, half_sequence: bool = False,
                  num_processes: int = default_num_processes, overwrite: bool = False) -> ConversionSummary:
    """Converts the CAMUS release in `root` (either layout) into $nnUNet_raw/Dataset<ID>_CAMUS and its
    splits_final.json; any error leaves neither behind."""
    name = dataset_name(dataset_id, SHORT_NAME)
    raw_folder = require_env_folder("nnUNet_raw")
    splits_file = check_targets(raw_folder, name, dataset_id, overwrite)
    release = read_release(Path(root), half_sequence)

    with atomic_folder(raw_folder / name, overwrite) as staging:
        tested = release.patients_in(TESTING)
        folders = {"imagesTr": True, "labelsTr": True, "imagesTs": bool(tested),
                   "labelsTs": bool(tested) and all(p.has_ground_truth for p in tested)}
        for folder, wanted in folders.items():
            if wanted:
                (staging / folder).mkdir()

        def task(patient: PatientFiles) -> PatientTask:
            suffix = "Ts" if patient.subgroup == TESTING else "Tr"
            labels = staging / f"labels{suffix}" if patient.has_ground_truth else None
            return PatientTask(patient, staging / f"images{suffix}", labels,
                               half_sequence and patient.subgroup != TESTING)

        results = parallel_map(convert_patient, [task(p) for p in release.patients], num_processes,
                               desc="CAMUS patients")
        if not any(r.cases for r in results):
            raise InputError(release.root, f"no case could be converted from its {len(results)} patients")
        rows, columns = case_rows(results)
        write_csv(rows, columns, staging / "cases.csv")
        n_training = sum(len(r.cases) for r in results if r.patient.subgroup != TESTING)
        generate_dataset_json(
            str(staging), {0: "US"}, dict(LABELS), n_training, FILE_ENDING, dataset_name=name,
            description="CAMUS apical 2- and 4-chamber echocardiography: LV cavity (endocardium), LV myocardium "
                        "and left atrium at end diastole and end systole"
                        + (", plus the annotated half-sequence frames" if half_sequence else "")
                        + ". LV_endo = label 1, LV_epi = labels 1 and 2.",
            reference="Leclerc et al., Deep Learning for Segmentation using an Open Large-Scale Dataset in 2D "
                      "Echocardiography, IEEE TMI 38(9), 2198-2210 (2019); "
                      "https://www.creatis.insa-lyon.fr/Challenge/camus/",
            release=release.layout.description,
            license="CAMUS terms of use (CREATIS, Universite de Lyon): research use, cite the CAMUS paper",
            converted_by="msvmamba_convert_camus (nnunetv2-msvmamba)")
        splits = build_splits(release, results)
        write_splits_final(splits, name, overwrite)

    return ConversionSummary(release, raw_folder / name, splits_file, len(splits), results)


# ----------------------------------------------------------------------------------------------- command

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msvmamba_convert_camus",
        description="Convert a CAMUS release as downloaded (the 2023 NIfTI release with database_nifti/ and "
                    "database_split/, or the challenge release with training/ and testing/ in MHD/RAW) into the "
                    "nnU-Net raw dataset $nnUNet_raw/Dataset<ID>_CAMUS: ED and ES of both views per patient, "
                    "labels 1 LV cavity, 2 LV myocardium, 3 left atrium, spacing kept from the image headers; "
                    "cases.csv with each case's metadata; splits_final.json in $nnUNet_preprocessed/"
                    "Dataset<ID>_CAMUS/ (2023: fold 0 = official training/validation subgroups; challenge: "
                    "10 patient-level folds as in the CAMUS paper).")
    parser.add_argument("root", type=Path, help="the CAMUS folder as downloaded (holding database_nifti/ or "
                                                "training/)")
    parser.add_argument("-d", "--dataset-id", type=int, default=DEFAULT_DATASET_ID,
                        help=f"nnU-Net dataset id (default {DEFAULT_DATASET_ID})")
    parser.add_argument("--half-sequence", action="store_true",
                        help="also convert every annotated frame of the half sequences (2023 release) as extra "
                             "training cases patientNNNN_<view>_tNN; validation folds keep only ED and ES")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=default_num_processes,
                        help=f"worker processes, one patient at a time each (default {default_num_processes})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset folder and splits_final.json")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """msvmamba_convert_camus: CAMUS (2023 NIfTI or challenge MHD release) -> nnU-Net raw dataset."""
    return run_converter(build_parser(), argv, SHORT_NAME, lambda args: convert_camus(
        args.root, args.dataset_id, args.half_sequence, args.num_processes, args.overwrite))


if __name__ == "__main__":
    sys.exit(main())
