"""Small CAMUS releases in both public layouts, written the way the real files are: 2D NIfTI images and 3D
(x, y, t) half sequences with SimpleITK (one patient with nibabel and a RAS affine instead, as other tools
write NIfTI), MetaImage .mhd headers with .raw data (3D with one slice, as the challenge ships them, and 2D),
`key: value` Info files and subgroup lists. Images are seeded noise and labels an off-centre heart, so a flip,
transpose or shift shows; images are non-square and spacings anisotropic, so swapped axes show too."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

DATASET = "Dataset601_CAMUS"  # what the converter writes by default
VIEWS = ("2CH", "4CH")
PHASES = ("ED", "ES")
CHALLENGE_SLICE_SPACING = 1.54  # the third ElementSpacing entry of the challenge's one-slice 3D images


@dataclass
class ViewData:
    """One view as written: the half sequence (ED = first frame, ES = last, as in the 2023 release), its
    labels, and the Info file's entries."""
    sequence: np.ndarray                      # (frames, rows, columns) uint8
    sequence_labels: np.ndarray               # same shape, uint8 labels 0..3
    spacing: tuple[float, float]              # (x = columns, y = rows) mm
    info: dict[str, str]

    def image(self, phase: str) -> np.ndarray:
        return self.sequence[0 if phase == "ED" else -1]

    def labels(self, phase: str) -> np.ndarray:
        return self.sequence_labels[0 if phase == "ED" else -1]


@dataclass
class PatientData:
    name: str
    subgroup: str | None                      # None: in no subgroup file
    views: dict[str, ViewData]
    writer: str = "sitk"                      # "sitk", "nibabel" (2023) or "sitk-2d" (challenge: NDims = 2)
    has_ground_truth: bool = True
    unannotated_frames: dict[str, list[int]] = field(default_factory=dict)  # view -> 1-based frames

    def half_sequence_cases(self) -> list[str]:
        """The extra cases --half-sequence must produce: annotated frames other than ED and ES."""
        cases = []
        for view, data in self.views.items():
            for number in range(2, len(data.sequence)):
                if number not in self.unannotated_frames.get(view, []):
                    cases.append(f"{self.name}_{view}_t{number:02d}")
        return cases

    def phase_cases(self) -> list[str]:
        return [f"{self.name}_{view}_{phase}" for view in VIEWS for phase in PHASES]


def draw_heart(rows: int, columns: int, progress: float) -> np.ndarray:
    """Labels of an off-centre heart, apex up and atrium below-left; the cavity shrinks with `progress`."""
    labels = np.zeros((rows, columns), np.uint8)
    top, bottom = rows // 10, rows * 6 // 10
    left, right = columns // 6, columns * 3 // 5
    labels[top:bottom, left:right] = 2
    wall = 2 + int(round(2 * progress))
    labels[top + wall:bottom - 1, left + wall:right - wall] = 1
    labels[bottom + 1:bottom + 1 + rows // 4, left + 1:left + (right - left) // 2 + 2] = 3
    return labels


def make_view(seed: int, rows: int, columns: int, spacing: tuple[float, float], n_frames: int,
              info: dict[str, str], unannotated: tuple[int, ...] = ()) -> ViewData:
    rng = np.random.default_rng(seed)
    sequence = rng.integers(0, 256, (n_frames, rows, columns), dtype=np.uint8)
    labels = np.stack([draw_heart(rows, columns, t / (n_frames - 1)) for t in range(n_frames)])
    for number in unannotated:
        labels[number - 1] = 0
    return ViewData(sequence, labels, spacing, info)


def info_2023(n_frames: int, quality: str, ef: int, sex: str = "F", age: int | None = 60, **extra: str
              ) -> dict[str, str]:
    info = {"ED": "1", "ES": str(n_frames), "NbFrame": str(n_frames), "Sex": sex}
    if age is not None:
        info["Age"] = str(age)
    info.update({"ImageQuality": quality, "EF": str(ef), "FrameRate": "40", **extra})
    return info


def info_challenge(quality: str, ef: int) -> dict[str, str]:
    return {"ED": "1", "ES": "12", "NbFrame": "20", "Sex": "M", "Age": "70", "ImageQuality": quality,
            "LVedv": "110.5", "LVesv": f"{110.5 * (1 - ef / 100):.1f}", "LVef": str(ef)}


# ------------------------------------------------------------------------------------------------- writers

def write_with_sitk(array: np.ndarray, spacing: tuple[float, ...], path: Path) -> None:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), useCompression=path.name.endswith(".gz"))


def write_with_nibabel(array: np.ndarray, spacing: tuple[float, float], path: Path) -> None:
    """nibabel's axes are (x, y[, t]): the transpose of numpy's (rows, columns) / (frames, rows, columns)."""
    affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(array.T), affine), str(path))


def write_2023_view(patient: PatientData, view: str, folder: Path) -> None:
    data, stem = patient.views[view], folder / f"{patient.name}_{view}"
    for phase in PHASES:
        for suffix, array in (("", data.image(phase)), ("_gt", data.labels(phase))):
            path = Path(f"{stem}_{phase}{suffix}.nii.gz")
            if patient.writer == "nibabel":
                write_with_nibabel(array, data.spacing, path)
            else:
                write_with_sitk(array, data.spacing, path)
    for suffix, array in (("", data.sequence), ("_gt", data.sequence_labels)):
        path = Path(f"{stem}_half_sequence{suffix}.nii.gz")
        if patient.writer == "nibabel":
            write_with_nibabel(array, data.spacing, path)
        else:
            write_with_sitk(array, (*data.spacing, 1.0), path)


def write_info(data: ViewData, path: Path) -> None:
    path.write_text("".join(f"{key}: {value}\n" for key, value in data.info.items()))


def write_2023_release(root: Path, patients: list[PatientData]) -> None:
    for patient in patients:
        folder = root / "database_nifti" / patient.name
        folder.mkdir(parents=True)
        for view in VIEWS:
            write_2023_view(patient, view, folder)
            write_info(patient.views[view], folder / f"Info_{view}.cfg")
    (root / "database_split").mkdir()
    for subgroup in ("training", "validation", "testing"):
        names = [p.name for p in patients if p.subgroup == subgroup]
        (root / "database_split" / f"subgroup_{subgroup}.txt").write_text("".join(f"{n}\n" for n in names))


def write_challenge_release(root: Path, patients: list[PatientData]) -> None:
    for patient in patients:
        folder = root / patient.subgroup / patient.name
        folder.mkdir(parents=True)
        for view in VIEWS:
            data, stem = patient.views[view], folder / f"{patient.name}_{view}"
            for phase in PHASES:
                arrays = {"": data.image(phase)}
                if patient.has_ground_truth:
                    arrays["_gt"] = data.labels(phase)
                for suffix, array in arrays.items():
                    if patient.writer == "sitk-2d":
                        write_with_sitk(array, data.spacing, Path(f"{stem}_{phase}{suffix}.mhd"))
                    else:
                        write_with_sitk(array[np.newaxis], (*data.spacing, CHALLENGE_SLICE_SPACING),
                                        Path(f"{stem}_{phase}{suffix}.mhd"))
            write_with_sitk(data.sequence, (*data.spacing, 1.0), Path(f"{stem}_sequence.mhd"))
            write_info(data, folder / f"Info_{view}.cfg")


# --------------------------------------------------------------------------------------------- the releases

def patients_2023() -> list[PatientData]:
    """Three training, one validation and one testing patient, and one in no subgroup file. patient0002 is
    written by nibabel; patient0001's 2CH half sequence has an unannotated frame 3; patient0003's 4CH Info file
    has no Age and an extra key."""
    layout = [  # name, subgroup, (rows, columns), (x, y) spacing, frames, quality, EF
        ("patient0001", "training", (60, 50), (0.154, 0.154), 5, "Good", 62),
        ("patient0002", "training", (52, 58), (0.308, 0.154), 4, "Medium", 40),
        ("patient0003", "training", (64, 44), (0.2, 0.25), 4, "Poor", 50),
        ("patient0004", "validation", (56, 48), (0.154, 0.308), 5, "Good", 30),
        ("patient0005", "testing", (60, 52), (0.17, 0.19), 4, "Medium", 58),
        ("patient0006", None, (40, 36), (0.154, 0.154), 4, "Good", 60),
    ]
    patients = []
    for index, (name, subgroup, (rows, columns), spacing, n_frames, quality, ef) in enumerate(layout):
        views = {}
        for v, view in enumerate(VIEWS):
            extra = {"Comment": "re-annotated"} if (name, view) == ("patient0003", "4CH") else {}
            age = None if extra else 40 + index
            info = info_2023(n_frames, quality, ef, sex="FM"[index % 2], age=age, **extra)
            unannotated = (3,) if (name, view) == ("patient0001", "2CH") else ()
            views[view] = make_view(100 * index + v, rows + 2 * v, columns, spacing, n_frames, info, unannotated)
        patients.append(PatientData(name, subgroup, views, writer="nibabel" if name == "patient0002" else "sitk",
                                    unannotated_frames={"2CH": [3]} if name == "patient0001" else {}))
    return patients


CHALLENGE_QUALITIES = ("Good", "Medium", "Poor")
CHALLENGE_EFS = (35, 50, 62)


def patients_challenge(n_training: int = 11, n_testing: int = 2) -> list[PatientData]:
    """Training patients with every combination of image quality and EF group (and some twice), then testing
    patients without ground truth; patient0002 is written as 2D MetaImage (NDims = 2)."""
    patients = []
    for index in range(n_training + n_testing):
        name = f"patient{index + 1:04d}"
        quality = CHALLENGE_QUALITIES[index % 3]
        ef = CHALLENGE_EFS[(index // 3) % 3]
        rows, columns = 30 + index % 4, 24 + index % 3
        spacing = (0.154, 0.308) if index % 2 else (0.308, 0.154)
        views = {view: make_view(1000 + 10 * index + v, rows, columns, spacing, 3, info_challenge(quality, ef))
                 for v, view in enumerate(VIEWS)}
        training = index < n_training
        patients.append(PatientData(name, "training" if training else "testing", views,
                                    writer="sitk-2d" if name == "patient0002" else "sitk",
                                    has_ground_truth=training))
    return patients


def release_2023_under(folder: Path) -> tuple[Path, dict[str, PatientData]]:
    """The 2023 release of patients_2023 written under `folder`: its root, and its patients by name."""
    root = folder / "CAMUS_public"
    patients = patients_2023()
    write_2023_release(root, patients)
    return root, {p.name: p for p in patients}
