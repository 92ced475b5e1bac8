"""Label folders of ED/ES cases -> per-patient volumes and EF.

CAMUS cases `<patient>_{2CH,4CH}_{ED,ES}`: Simpson's biplane volumes from both views, plus each view's
single-plane values. EchoNet-Dynamic cases `<FileName>_{ED,ES}`: single-plane volumes of the apical 4-chamber
view. Spacing comes from the files; a file without one (spacing 1, EchoNet-Dynamic) takes `--spacing`, and
without that the volumes are in pixels³."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter

from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.parallel import parallel_map
from nnunetv2_msvmamba.evaluation.label_folders import detect_file_ending, list_cases, read_label_map, reader_class
from .geometry import GeometryError, ViewMeasurement, measure_view
from .volumes import MM3_PER_ML, biplane_volume, ejection_fraction, single_plane_volume

CAMUS, ECHONET = "CAMUS", "EchoNet-Dynamic"
CAMUS_VIEWS = ("2CH", "4CH")
ECHONET_VIEW = "A4C"
PHASES = ("ED", "ES")
CAMUS_CASE = re.compile(r"^(?P<patient>.+)_(?P<view>2CH|4CH)_(?P<phase>ED|ES)$")
ECHONET_CASE = re.compile(r"^(?P<patient>.+)_(?P<phase>ED|ES)$")
SPACING_RELATIVE_TOLERANCE = 1e-4
NAMED_IN_MESSAGES = 5


def name_some(items: list[str]) -> str:
    shown = ", ".join(items[:NAMED_IN_MESSAGES])
    return shown if len(items) <= NAMED_IN_MESSAGES else f"{shown} and {len(items) - NAMED_IN_MESSAGES} more"


@dataclass(frozen=True)
class PatientTask:
    """One patient's label files: (view, phase) -> file."""

    patient: str
    kind: str
    files: tuple[tuple[tuple[str, str], Path], ...]
    reader: type[BaseReaderWriter]
    spacing_mm: Optional[float]
    lv_label: int
    atrium_label: Optional[int]


@dataclass
class PatientVolumes:
    """EDV, ESV (mL, or pixels³ without spacing) and EF (%) of one patient; `views` holds each view's
    single-plane values (CAMUS), `spacings` each file's (row, column) spacing, `islands` (file name, what was
    left out) for each file whose structures had islands, `notes` anything else the user should know about how
    the values were obtained (a reference value missing)."""

    patient: str
    edv: float
    esv: float
    ef: float
    physical: bool
    views: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    spacings: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    files: dict[tuple[str, str], Path] = field(default_factory=dict)
    islands: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def all_notes(self) -> list[str]:
        return [f"{file}: {removed}" for file, removed in self.islands] + self.notes


def case_kind(cases: Mapping[str, Path], folder: Path) -> str:
    if any(CAMUS_CASE.match(case) for case in cases):
        return CAMUS
    if any(ECHONET_CASE.match(case) for case in cases):
        return ECHONET
    raise InputError(folder, f"holds no ED/ES cases named <patient>_{{2CH,4CH}}_{{ED,ES}} (CAMUS) or "
                             f"<FileName>_{{ED,ES}} (EchoNet-Dynamic); found {name_some(sorted(cases))}")


def group_by_patient(cases: Mapping[str, Path], kind: str, folder: Path, notes: list[str]
                     ) -> dict[str, dict[tuple[str, str], Path]]:
    """patient -> (view, phase) -> file; every patient must have all its views at both phases."""
    pattern = CAMUS_CASE if kind == CAMUS else ECHONET_CASE
    patients: dict[str, dict[tuple[str, str], Path]] = {}
    ignored = []
    for case, path in cases.items():
        match = pattern.match(case)
        if match is None:
            ignored.append(case)
            continue
        view = match.group("view") if kind == CAMUS else ECHONET_VIEW
        patients.setdefault(match.group("patient"), {})[(view, match.group("phase"))] = path
    if ignored:
        notes.append(f"{folder}: {len(ignored)} case(s) that are not ED/ES cases ignored: {name_some(ignored)}")
    views = CAMUS_VIEWS if kind == CAMUS else (ECHONET_VIEW,)
    for patient, files in patients.items():
        for view in views:
            for phase in PHASES:
                if (view, phase) in files:
                    continue
                present = next(iter(files.values()))
                if kind == CAMUS and any(v == view for v, _ in files):
                    problem = f"{patient}_{view}_{phase} is missing: a view needs both its ED and ES"
                elif kind == CAMUS:
                    other = next(v for v in CAMUS_VIEWS if v != view)
                    present = files.get((other, phase), present)
                    problem = (f"the {other} view of {patient} has no {view} view ({patient}_{view}_{phase} is "
                               f"missing); Simpson's biplane method needs both the 2CH and 4CH views")
                else:
                    problem = f"{patient}_{phase} is missing: EF needs both the ED and ES frame"
                raise InputError(present, problem)
    return dict(sorted(patients.items()))


def file_spacing(path: Path, spacing: tuple[float, ...], spacing_mm: Optional[float]) -> tuple[tuple[float, float], bool]:
    """The (row, column) spacing to measure with, and whether it is physical."""
    if len(spacing) != 2:
        raise InputError(path, f"is not a 2D label map (spacing {spacing}); expected one ED or ES frame")
    if not np.allclose(spacing, 1.0):
        if spacing_mm is not None and not np.allclose(spacing, spacing_mm, rtol=SPACING_RELATIVE_TOLERANCE):
            raise InputError(path, f"pixel spacing {spacing[1]:g} x {spacing[0]:g} mm in the file does not "
                                   f"match --spacing {spacing_mm:g}")
        return (float(spacing[0]), float(spacing[1])), True
    if spacing_mm is not None:
        return (spacing_mm, spacing_mm), True
    return (1.0, 1.0), False


def measure_patient(task: PatientTask) -> PatientVolumes:
    measurements: dict[tuple[str, str], ViewMeasurement] = {}
    spacings: dict[tuple[str, str], tuple[float, float]] = {}
    physical = set()
    islands = []
    for (view, phase), path in task.files:
        label_map = read_label_map(task.reader, path)
        spacing, is_physical = file_spacing(path, label_map.spacing, task.spacing_mm)
        physical.add(is_physical)
        try:
            measurements[(view, phase)] = measure_view(label_map.labels, spacing, task.lv_label, task.atrium_label)
        except GeometryError as error:
            raise InputError(path, f"{error}; cannot measure the LV") from None
        spacings[(view, phase)] = spacing
        removed = measurements[(view, phase)].removed
        if removed:
            islands.append((path.name, "; ".join(structure.describe() for structure in removed)))
    if len(physical) > 1:
        raise InputError(task.files[0][1], f"patient {task.patient}: some files have a pixel spacing and some "
                                           f"do not")
    views = sorted({view for view, _ in spacings})
    for view in views:
        if not np.allclose(spacings[(view, "ED")], spacings[(view, "ES")], rtol=SPACING_RELATIVE_TOLERANCE):
            raise InputError(dict(task.files)[(view, "ES")],
                             f"spacing {spacings[(view, 'ES')]} differs from its ED frame's {spacings[(view, 'ED')]}")
    scale = 1.0 / MM3_PER_ML if physical == {True} else 1.0
    single = {view: (single_plane_volume(measurements[(view, "ED")]) * scale,
                     single_plane_volume(measurements[(view, "ES")]) * scale) for view in views}
    if task.kind == CAMUS:
        edv, esv = (biplane_volume(measurements[("2CH", phase)], measurements[("4CH", phase)]) * scale
                    for phase in PHASES)
    else:
        edv, esv = single[ECHONET_VIEW]
    view_values = {view: (ed, es, ejection_fraction(ed, es)) for view, (ed, es) in single.items()} \
        if task.kind == CAMUS else {}
    return PatientVolumes(task.patient, edv, esv, ejection_fraction(edv, esv), physical == {True}, view_values,
                          spacings, dict(task.files), islands)


@dataclass
class FolderVolumes:
    folder: Path
    kind: str
    patients: dict[str, PatientVolumes]


def measure_folder(folder: Path, spacing_mm: Optional[float], num_processes: int, notes: list[str],
                   lv_label: int = 1, atrium_label: Optional[int] = 3, description: str = "labels") -> FolderVolumes:
    """Volumes and EF of every patient in an nnU-Net label folder, in parallel over patients."""
    file_ending = detect_file_ending(folder)
    cases = list_cases(folder, file_ending)
    kind = case_kind(cases, folder)
    patients = group_by_patient(cases, kind, folder, notes)
    reader = reader_class(None, file_ending, next(iter(cases.values())))
    tasks = [PatientTask(patient, kind, tuple(sorted(files.items())), reader, spacing_mm, lv_label, atrium_label)
             for patient, files in patients.items()]
    results = parallel_map(measure_patient, tasks, num_processes, desc=f"measuring {description}")
    if len({result.physical for result in results}) > 1:
        raise InputError(folder, "mixes files with and without a pixel spacing")
    with_islands = [file for result in results for file, _ in result.islands]
    if with_islands:
        notes.append(f"{description}: islands left out of the measurement (each structure's largest connected "
                     f"component is measured) in {len(with_islands)} file(s) of {folder}: {name_some(with_islands)}; "
                     f"see the note column of clinical_per_patient.csv")
    return FolderVolumes(folder, kind, {result.patient: result for result in results})


def check_matches(reference: FolderVolumes, other: FolderVolumes, model: str, notes: list[str]) -> None:
    """`other` must be the same kind of cases, have every reference patient, and the same spacing per file."""
    if other.kind != reference.kind:
        raise InputError(other.folder, f"holds {other.kind} cases but the reference {reference.folder} holds "
                                       f"{reference.kind} cases")
    lacking = [patient for patient in reference.patients if patient not in other.patients]
    if lacking:
        raise InputError(other.folder, f"model {model} has no prediction for patient(s) {name_some(lacking)} "
                                       f"of the reference")
    extra = [patient for patient in other.patients if patient not in reference.patients]
    if extra:
        notes.append(f"model {model}: {len(extra)} patient(s) without reference ignored: {name_some(extra)}")
    for patient, volumes in reference.patients.items():
        for key, spacing in volumes.spacings.items():
            theirs = other.patients[patient].spacings[key]
            if not np.allclose(theirs, spacing, rtol=SPACING_RELATIVE_TOLERANCE):
                raise InputError(other.patients[patient].files[key], f"model {model}: spacing {theirs} does not "
                                                                     f"match the reference's {spacing}")

