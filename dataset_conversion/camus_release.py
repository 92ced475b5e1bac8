"""A CAMUS release as downloaded: which of its two public layouts a folder holds, its patients and their files,
the `Info_*.cfg` metadata and the official subgroups. Nothing here reads pixels; every problem found is a
InputError naming the file.

    2023 public release (NIfTI)              original challenge release (MHD/RAW)
    ROOT/database_nifti/patientNNNN/         ROOT/training/patientNNNN/   (with ground truth)
    ROOT/database_split/subgroup_*.txt       ROOT/testing/patientNNNN/    (without)
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_msvmamba.common.errors import InputError

VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
PATIENT_NAME = re.compile(r"patient\d{4}")
TRAINING, VALIDATION, TESTING = "training", "validation", "testing"
SUBGROUPS_2023 = (TRAINING, VALIDATION, TESTING)
NAMES_SHOWN = 5


@dataclass(frozen=True)
class Layout:
    """How one of the two public releases names its folders and files."""
    description: str
    extension: str
    sequence_stem: str          # `<patient>_<view>_<sequence_stem><extension>`
    sequence_has_ground_truth: bool


NIFTI_2023 = Layout("CAMUS 2023 public release (NIfTI)", ".nii.gz", "half_sequence", True)
CHALLENGE = Layout("CAMUS challenge release (MHD/RAW)", ".mhd", "sequence", False)


@dataclass(frozen=True)
class ViewFiles:
    """One view of one patient: the ED and ES images, their ground truth (empty without), the annotated half
    sequence when it is wanted, and the view's Info_<view>.cfg ({} when the file is absent)."""
    view: str
    images: dict[str, Path]
    labels: dict[str, Path]
    sequence: Path | None
    sequence_labels: Path | None
    info: dict[str, str]
    info_path: Path

    def frame_of(self, phase: str) -> int:
        """The 1-based half-sequence frame of ED or ES, as Info_<view>.cfg gives it (checked on reading)."""
        return int(self.info[phase])


@dataclass(frozen=True)
class PatientFiles:
    name: str
    subgroup: str
    views: tuple[ViewFiles, ...]

    @property
    def has_ground_truth(self) -> bool:
        return all(view.labels for view in self.views)


@dataclass(frozen=True)
class Release:
    """What a CAMUS folder holds, checked down to the existence of every file the conversion needs."""
    root: Path
    layout: Layout
    patients: tuple[PatientFiles, ...]
    subgroups: tuple[str, ...]
    notes: tuple[str, ...]      # what is left out, and why, for the summary

    def patients_in(self, subgroup: str) -> list[PatientFiles]:
        return [p for p in self.patients if p.subgroup == subgroup]


def detect_layout(root: Path) -> Layout:
    if not root.is_dir():
        raise InputError(root, "not a folder; expected a CAMUS release (database_nifti/ and database_split/ "
                                    "of the 2023 release, or training/ and testing/ of the challenge release)")
    is_2023, is_challenge = (root / "database_nifti").is_dir(), (root / "training").is_dir()
    if is_2023 and is_challenge:
        raise InputError(root, "holds both database_nifti/ (2023 release) and training/ (challenge release); "
                                    "point at a folder with only one of them")
    if is_2023:
        return NIFTI_2023
    if is_challenge:
        return CHALLENGE
    hint = ""
    if any(PATIENT_NAME.fullmatch(p.name) for p in root.iterdir() if p.is_dir()):
        hint = f"; it holds patient folders itself: pass its parent folder ({root.parent}) instead"
    raise InputError(root, "neither CAMUS layout: expected database_nifti/ and database_split/ (2023 release) "
                                f"or training/ (challenge release){hint}")


def patient_folders(folder: Path) -> tuple[list[str], list[str]]:
    """(patient folder names, other entries) of `folder`, both sorted."""
    try:
        entries = sorted(os.listdir(folder))
    except OSError as error:
        raise InputError(folder, f"unreadable folder ({error.strerror})") from None
    patients = [e for e in entries if PATIENT_NAME.fullmatch(e) and (folder / e).is_dir()]
    return patients, [e for e in entries if e not in patients]


def read_info(path: Path) -> dict[str, str]:
    """An Info_<view>.cfg as {key: value}, every key kept; {} when there is no such file."""
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"unreadable ({error})") from None
    info: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip():
            raise InputError(path, f"line {number}: expected 'key: value', got {line.strip()!r}")
        if key.strip() in info:
            raise InputError(path, f"line {number}: {key.strip()} is given twice")
        info[key.strip()] = value.strip()
    return info


def check_phase_frames(path: Path, info: dict[str, str]) -> None:
    """--half-sequence tells the ED and ES frames of a half sequence (already cases of their own) from the others
    by the ED and ES entries of the view's Info file, so they must be there and be frame numbers."""
    for phase in PHASES:
        if phase not in info:
            raise InputError(path, f"{phase} is missing; --half-sequence needs it to know which half-sequence "
                                        f"frame is the {phase} case" + ("" if path.exists() else " (no such file)"))
        if not info[phase].isdigit() or int(info[phase]) < 1:
            raise InputError(path, f"{phase} is not a frame number (1, 2, ...): {info[phase]!r}")


def required_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(path, f"not found (missing {what})")
    return path


def find_view_files(folder: Path, patient: str, view: str, layout: Layout, with_ground_truth: bool,
                    half_sequence: bool) -> ViewFiles:
    stem, ending = f"{patient}_{view}", layout.extension
    images = {phase: required_file(folder / f"{stem}_{phase}{ending}", "image") for phase in PHASES}
    labels = ({phase: required_file(folder / f"{stem}_{phase}_gt{ending}", "ground truth") for phase in PHASES}
              if with_ground_truth else {})
    info_path = folder / f"Info_{view}.cfg"
    info = read_info(info_path)
    sequence = sequence_labels = None
    if half_sequence and with_ground_truth and layout.sequence_has_ground_truth:
        sequence = required_file(folder / f"{stem}_{layout.sequence_stem}{ending}", "half-sequence image")
        sequence_labels = required_file(folder / f"{stem}_{layout.sequence_stem}_gt{ending}",
                                        "half-sequence ground truth")
        check_phase_frames(info_path, info)
    return ViewFiles(view, images, labels, sequence, sequence_labels, info, info_path)


def read_subgroup_files(split_folder: Path, present: set[str], database: Path) -> dict[str, str]:
    """{patient: subgroup} from database_split/subgroup_{training,validation,testing}.txt (one patient a line)."""
    subgroup_of: dict[str, str] = {}
    listed_at: dict[str, tuple[Path, int]] = {}
    for subgroup in SUBGROUPS_2023:
        path = split_folder / f"subgroup_{subgroup}.txt"
        if not path.is_file():
            raise InputError(path, "not found; the 2023 release lists its official subgroups in "
                                        "database_split/subgroup_{training,validation,testing}.txt")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(path, f"unreadable ({error})") from None
        for number, line in enumerate(lines, start=1):
            name = line.strip()
            if not name:
                continue
            if not PATIENT_NAME.fullmatch(name):
                raise InputError(path, f"line {number}: expected a patient name like patient0001, got {name!r}")
            if name in listed_at:
                first_path, first_line = listed_at[name]
                where = f"line {first_line}" if first_path == path else f"{first_path.name}, line {first_line}"
                raise InputError(path, f"line {number}: {name} is already listed ({where}); a patient belongs "
                                            f"to one subgroup")
            if name not in present:
                raise InputError(path, f"line {number}: {name} has no folder {database / name}")
            subgroup_of[name] = subgroup
            listed_at[name] = (path, number)
    return subgroup_of


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def shown(names: list[str]) -> str:
    return ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")


def ignored_entries_note(folder: Path, others: list[str]) -> list[str]:
    return [f"entries of {folder} that are not patientNNNN folders (ignored): {shown(others)}"] if others else []


def read_2023_release(root: Path, half_sequence: bool) -> Release:
    database = root / "database_nifti"
    names, others = patient_folders(database)
    subgroup_of = read_subgroup_files(root / "database_split", set(names), database)
    if not subgroup_of:
        raise InputError(root / "database_split", "the subgroup files list no patient")
    unlisted = [name for name in names if name not in subgroup_of]
    notes = ignored_entries_note(database, others)
    if unlisted:
        notes.append(f"{plural(len(unlisted), 'patient')} of {database} in no subgroup file (skipped: "
                     f"{shown(unlisted)})")
    patients = tuple(
        PatientFiles(name, subgroup_of[name],
                     tuple(find_view_files(database / name, name, view, NIFTI_2023, True,
                                           half_sequence and subgroup_of[name] != TESTING) for view in VIEWS))
        for name in names if name in subgroup_of)
    for subgroup in (TRAINING, VALIDATION):
        if not any(p.subgroup == subgroup for p in patients):
            raise InputError(root / "database_split" / f"subgroup_{subgroup}.txt",
                                  "lists no patient; fold 0 of splits_final.json needs both training and "
                                  "validation patients")
    return Release(root, NIFTI_2023, patients, SUBGROUPS_2023, tuple(notes))


def read_challenge_release(root: Path, half_sequence: bool) -> Release:
    training_folder, testing_folder = root / "training", root / "testing"
    training, training_others = patient_folders(training_folder)
    if len(training) < 2:
        raise InputError(training_folder, f"holds {plural(len(training), 'patientNNNN folder')}; the "
                                               f"cross-validation folds need at least 2")
    testing, testing_others = patient_folders(testing_folder) if testing_folder.is_dir() else ([], [])
    for name in testing:
        if name in training:
            raise InputError(testing_folder / name, f"is also in {training_folder}; a patient belongs to one "
                                                         f"subgroup")
    notes = ignored_entries_note(training_folder, training_others) + ignored_entries_note(testing_folder,
                                                                                         testing_others)
    if not testing_folder.is_dir():
        notes.append(f"no {testing_folder} folder: imagesTs stays empty")
    if half_sequence:
        notes.append("--half-sequence: the challenge release has no ground truth for its sequences; only ED and "
                     "ES are converted")
    patients = tuple(
        PatientFiles(name, subgroup,
                     tuple(find_view_files(folder / name, name, view, CHALLENGE, subgroup == TRAINING, half_sequence)
                           for view in VIEWS))
        for subgroup, folder, names in ((TRAINING, training_folder, training), (TESTING, testing_folder, testing))
        for name in names)
    return Release(root, CHALLENGE, patients, (TRAINING, TESTING), tuple(notes))


def read_release(root: Path, half_sequence: bool = False) -> Release:
    """The CAMUS release in `root`, in whichever of its two layouts it is."""
    root = Path(root)
    layout = detect_layout(root)
    return (read_2023_release if layout == NIFTI_2023 else read_challenge_release)(root, half_sequence)
