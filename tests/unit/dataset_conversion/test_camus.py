"""msvmamba_convert_camus on small CAMUS releases in both public layouts (2023 NIfTI and challenge MHD/RAW),
written as the real files are: every case, label, spacing and orientation, the folds, cases.csv, the summary,
re-runs, nnU-Net's own dataset check, and every kind of bad input."""
from __future__ import annotations

import gzip
import json
import re
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from dataset_conversion import camus
from dataset_conversion.camus import main
from helpers.camus_fixtures import (CHALLENGE_EFS, CHALLENGE_QUALITIES, DATASET, PHASES, PatientData,
                                    patients_challenge, release_2023_under, write_challenge_release, write_with_sitk)
from helpers.nnunet import NnUNetFolders

LABELS = {"background": 0, "LV_cavity": 1, "LV_myocardium": 2, "left_atrium": 3}


@pytest.fixture
def release_2023(tmp_path: Path) -> tuple[Path, dict[str, PatientData]]:
    return release_2023_under(tmp_path)


@pytest.fixture
def release_challenge(tmp_path: Path) -> tuple[Path, dict[str, PatientData]]:
    root = tmp_path / "camus_challenge"
    patients = patients_challenge()
    write_challenge_release(root, patients)
    return root, {p.name: p for p in patients}


@pytest.fixture
def converted_2023(release_2023, nnunet_folders: NnUNetFolders, capsys) -> tuple[Path, str]:
    """The 2023 fixture converted with its half sequences by two worker processes: (dataset, summary)."""
    assert main([str(release_2023[0]), "--half-sequence", "-np", "2"]) == 0
    return nnunet_folders.raw / DATASET, capsys.readouterr().out


@pytest.fixture
def converted_challenge(release_challenge, nnunet_folders: NnUNetFolders, capsys) -> tuple[Path, str]:
    assert main([str(release_challenge[0]), "-np", "2"]) == 0
    return nnunet_folders.raw / DATASET, capsys.readouterr().out


def read_nifti(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def names_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def file_bytes(*folders: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder.parent)): p.read_bytes()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def float32(values) -> tuple[float, ...]:
    """NIfTI headers store spacing as float32: what 'kept exactly' means for a written file."""
    return tuple(float(np.float32(v)) for v in values)


def source_direction(root: Path, patient: PatientData, view: str, phase: str) -> tuple[float, ...]:
    """The 2D direction of the source image as SimpleITK reads it (nibabel's RAS affine reads as a flip)."""
    image = read_nifti(root / "database_nifti" / patient.name / f"{patient.name}_{view}_{phase}.nii.gz")
    return tuple(image.GetDirection())


def expected_cases(patients: dict[str, PatientData], subgroups: set[str], half_sequence: bool) -> set[str]:
    return {case for p in patients.values() if p.subgroup in subgroups
            for case in p.phase_cases() + (p.half_sequence_cases() if half_sequence else [])}


# -------------------------------------------------------------------------------------------- 2023 release

def test_2023_every_case_with_pixels_labels_spacing_and_orientation(converted_2023, release_2023):
    dataset, _ = converted_2023
    root, patients = release_2023
    training = expected_cases(patients, {"training", "validation"}, half_sequence=True)
    testing = expected_cases(patients, {"testing"}, half_sequence=False)
    assert names_in(dataset) == {"imagesTr", "labelsTr", "imagesTs", "labelsTs", "dataset.json", "cases.csv"}
    assert names_in(dataset / "imagesTr") == {f"{c}_0000.nii.gz" for c in training}
    assert names_in(dataset / "labelsTr") == {f"{c}.nii.gz" for c in training}
    assert names_in(dataset / "imagesTs") == {f"{c}_0000.nii.gz" for c in testing}
    assert names_in(dataset / "labelsTs") == {f"{c}.nii.gz" for c in testing}
    assert len(training) == 16 + 19  # ED/ES of 4 patients; 2-3 middle frames per view, one unannotated

    for case in training | testing:
        patient, view, phase = case.split("_")
        data = patients[patient].views[view]
        index = {"ED": 0, "ES": -1}.get(phase, None)
        index = index if index is not None else int(phase[1:]) - 1
        suffix = "Ts" if patients[patient].subgroup == "testing" else "Tr"
        image = read_nifti(dataset / f"images{suffix}" / f"{case}_0000.nii.gz")
        labels = read_nifti(dataset / f"labels{suffix}" / f"{case}.nii.gz")
        for written in (image, labels):
            assert written.GetDimension() == 2
            assert written.GetSpacing() == float32(data.spacing), case
            assert written.GetDirection() == source_direction(root, patients[patient], view, "ED"), case
        # the very pixels, in the same (rows, columns) order: no flip, no transpose
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), data.sequence[index], err_msg=case)
        assert sitk.GetArrayFromImage(image).dtype == np.uint8
        label_array = sitk.GetArrayFromImage(labels)
        assert label_array.dtype == np.uint8 and set(np.unique(label_array)) == {0, 1, 2, 3}, case
        np.testing.assert_array_equal(label_array, data.sequence_labels[index], err_msg=case)

    # nibabel's RAS affine reads as a flipped direction in SimpleITK, and it is carried over as it is
    flipped = read_nifti(dataset / "imagesTr" / "patient0002_4CH_ES_0000.nii.gz")
    assert flipped.GetDirection() == (-1.0, 0.0, 0.0, -1.0)
    upright = read_nifti(dataset / "imagesTr" / "patient0001_2CH_ED_0000.nii.gz")
    assert upright.GetDirection() == (1.0, 0.0, 0.0, 1.0)


def test_2023_dataset_json_and_cases_csv(converted_2023, release_2023):
    dataset, _ = converted_2023
    _, patients = release_2023
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    assert dataset_json["labels"] == LABELS
    assert dataset_json["channel_names"] == {"0": "US"}
    assert dataset_json["file_ending"] == ".nii.gz"
    assert dataset_json["numTraining"] == len(list((dataset / "imagesTr").iterdir())) == 35

    cases = pd.read_csv(dataset / "cases.csv", dtype=str, keep_default_na=False)
    assert list(cases.columns) == ["case", "patient", "view", "phase", "image_quality", "EF", "sex", "age",
                                   "spacing_x_mm", "spacing_y_mm", "split", "info_Comment", "info_ED", "info_ES",
                                   "info_FrameRate", "info_NbFrame"]
    assert list(cases["case"]) == sorted(expected_cases(patients, {"training", "validation", "testing"}, True)
                                         - {c for p in patients.values() if p.subgroup == "testing"
                                            for c in p.half_sequence_cases()})
    for row in cases.itertuples():
        data = patients[row.patient].views[row.view]
        assert row.case.startswith(f"{row.patient}_{row.view}_")
        suffix = row.case.rsplit("_", 1)[1]
        assert row.phase == (suffix if suffix in PHASES else str(int(suffix[1:])))
        assert (row.image_quality, row.EF, row.sex, row.age) == (
            data.info["ImageQuality"], data.info["EF"], data.info["Sex"], data.info.get("Age", ""))
        assert (float(row.spacing_x_mm), float(row.spacing_y_mm)) == data.spacing
        assert row.split == patients[row.patient].subgroup
        assert (row.info_ED, row.info_NbFrame, row.info_Comment) == (
            data.info["ED"], data.info["NbFrame"], data.info.get("Comment", ""))
    assert set(cases.loc[cases["patient"] == "patient0001", "phase"]) == {"ED", "ES", "2", "3", "4"}


def test_2023_splits_official_fold_then_patient_folds_without_leaks(converted_2023, release_2023, nnunet_folders):
    _, patients = release_2023
    splits = json.loads((nnunet_folders.preprocessed / DATASET / "splits_final.json").read_text())
    assert len(splits) == 5

    def patients_of(cases: list[str]) -> set[str]:
        return {case.split("_")[0] for case in cases}

    trainval = {name for name, p in patients.items() if p.subgroup in ("training", "validation")}
    assert set(splits[0]["train"]) == expected_cases(patients, {"training"}, half_sequence=True)
    assert set(splits[0]["val"]) == expected_cases(patients, {"validation"}, half_sequence=False)
    validated = []
    for fold in splits:
        train, val = patients_of(fold["train"]), patients_of(fold["val"])
        assert not train & val and train | val <= trainval  # testing and unlisted patients appear nowhere
        assert all(case.rsplit("_", 1)[1] in PHASES for case in fold["val"])  # validation = the benchmark
        for name in val:
            assert {c for c in fold["val"] if c.startswith(name)} == set(patients[name].phase_cases())
        for name in train:
            assert {c for c in fold["train"] if c.startswith(name)} == set(
                patients[name].phase_cases() + patients[name].half_sequence_cases())
    for fold in splits[1:]:
        validated += sorted(patients_of(fold["val"]))
    assert sorted(validated) == sorted(trainval)


def test_2023_summary(converted_2023, release_2023, nnunet_folders):
    dataset, summary = converted_2023
    root, _ = release_2023
    assert summary.splitlines() == [
        f"CAMUS 2023 public release (NIfTI) in {root} -> {dataset}",
        "  patients: 5 (training 3, validation 1, testing 1)",
        "  cases per split: training 12 (+13 half-sequence frames), validation 4 (+6 half-sequence frames), "
        "testing 4",
        "  cases: 35 in imagesTr/labelsTr, 4 in imagesTs/labelsTs",
        f"  splits: {nnunet_folders.preprocessed / DATASET / 'splits_final.json'} (5 folds: fold 0 = official "
        f"training/validation subgroups, then patient-level folds, balanced for image quality and EF)",
        "  skipped:",
        f"    1 patient of {root / 'database_nifti'} in no subgroup file (skipped: patient0006)",
        "    16 half-sequence frames at ED or ES (converted once, as the ED/ES case)",
        "    1 half-sequence frame without annotation"]


def test_2023_without_half_sequence_and_other_dataset_id(release_2023, nnunet_folders, capsys):
    root, patients = release_2023
    (root / "database_nifti" / "patient0001" / "patient0001_2CH_half_sequence_gt.nii.gz").unlink()  # not needed
    assert main([str(root), "-d", "42", "-np", "1"]) == 0
    dataset = nnunet_folders.raw / "Dataset042_CAMUS"
    assert names_in(dataset / "imagesTr") == {f"{c}_0000.nii.gz" for p in patients.values()
                                              if p.subgroup in ("training", "validation") for c in p.phase_cases()}
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 16
    assert (nnunet_folders.preprocessed / "Dataset042_CAMUS" / "splits_final.json").is_file()
    assert "skipped:\n" in capsys.readouterr().out


def test_half_sequence_asks_nothing_of_testing_patients_and_info_files_are_optional(release_2023, nnunet_folders,
                                                                                   capsys):
    root, _ = release_2023
    folder = root / "database_nifti" / "patient0005"
    for name in ("patient0005_2CH_half_sequence_gt.nii.gz", "patient0005_4CH_half_sequence.nii.gz", "Info_2CH.cfg",
                 "Info_4CH.cfg"):
        (folder / name).unlink()
    assert main([str(root), "--half-sequence", "-np", "1"]) == 0
    cases = pd.read_csv(nnunet_folders.raw / DATASET / "cases.csv", dtype=str, keep_default_na=False)
    tested = cases[cases["patient"] == "patient0005"]
    assert list(tested["case"]) == ["patient0005_2CH_ED", "patient0005_2CH_ES", "patient0005_4CH_ED",
                                    "patient0005_4CH_ES"]
    assert set(tested["image_quality"]) == {""} and set(tested["split"]) == {"testing"}
    assert "cases: 35 in imagesTr/labelsTr, 4 in imagesTs/labelsTs" in capsys.readouterr().out


# --------------------------------------------------------------------------------------- challenge release

def test_challenge_every_case_spacing_and_testing_without_labels(converted_challenge, release_challenge):
    dataset, summary = converted_challenge
    root, patients = release_challenge
    training = expected_cases(patients, {"training"}, half_sequence=False)
    testing = expected_cases(patients, {"testing"}, half_sequence=False)
    assert names_in(dataset) == {"imagesTr", "labelsTr", "imagesTs", "dataset.json", "cases.csv"}
    assert names_in(dataset / "imagesTr") == {f"{c}_0000.nii.gz" for c in training}
    assert names_in(dataset / "labelsTr") == {f"{c}.nii.gz" for c in training}
    assert names_in(dataset / "imagesTs") == {f"{c}_0000.nii.gz" for c in testing}
    for case in training | testing:
        patient, view, phase = case.split("_")
        data = patients[patient].views[view]
        folder = "Ts" if patients[patient].subgroup == "testing" else "Tr"
        image = read_nifti(dataset / f"images{folder}" / f"{case}_0000.nii.gz")
        assert image.GetDimension() == 2 and image.GetSpacing() == float32(data.spacing), case
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), data.image(phase), err_msg=case)
        if folder == "Tr":
            labels = read_nifti(dataset / "labelsTr" / f"{case}.nii.gz")
            assert labels.GetSpacing() == image.GetSpacing()
            np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), data.labels(phase), err_msg=case)
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 44

    cases = pd.read_csv(dataset / "cases.csv", dtype=str, keep_default_na=False).set_index("case")
    assert cases.loc["patient0007_4CH_ES", "EF"] == "62" and cases.loc["patient0007_4CH_ES", "info_LVedv"] == "110.5"
    assert set(cases["split"]) == {"training", "testing"}
    assert "  cases: 44 in imagesTr/labelsTr, 8 in imagesTs (no ground truth)" in summary.splitlines()
    assert summary.splitlines()[-1] == "  skipped: nothing"


def test_challenge_ten_patient_folds_balanced_for_quality_and_ef(converted_challenge, release_challenge,
                                                                nnunet_folders):
    _, patients = release_challenge
    splits = json.loads((nnunet_folders.preprocessed / DATASET / "splits_final.json").read_text())
    training = sorted(name for name, p in patients.items() if p.subgroup == "training")
    assert len(splits) == 10
    validated = []
    for fold in splits:
        train, val = {c.split("_")[0] for c in fold["train"]}, {c.split("_")[0] for c in fold["val"]}
        assert train | val == set(training) and not train & val and val
        assert set(fold["val"]) == {c for name in val for c in patients[name].phase_cases()}
        validated += val
    assert sorted(validated) == training

    def stratum(name: str) -> tuple[str, int]:
        info = patients[name].views["2CH"].info
        return info["ImageQuality"], int(info["LVef"])

    # no fold validates two patients of one quality (3 folds hold 2 patients, 11 patients of 3 qualities)...
    for fold in splits:
        qualities = Counter(stratum(c.split("_")[0])[0] for c in fold["val"][::4])
        assert max(qualities.values()) == 1
    # ...and each (quality, EF) stratum is spread over distinct folds
    fold_of = {c.split("_")[0]: i for i, fold in enumerate(splits) for c in fold["val"]}
    for quality in CHALLENGE_QUALITIES:
        for ef in CHALLENGE_EFS:
            members = [name for name in training if stratum(name) == (quality, ef)]
            assert len({fold_of[name] for name in members}) == len(members)


# ---------------------------------------------------------------------------------------------- re-running

def test_rerun_needs_overwrite_and_gives_identical_bytes(converted_2023, release_2023, nnunet_folders, capsys):
    dataset, _ = converted_2023
    first = file_bytes(dataset, nnunet_folders.preprocessed / DATASET)
    assert main([str(release_2023[0]), "--half-sequence", "-np", "1"]) == 2
    assert capsys.readouterr().err == f"error: {dataset}: already exists; pass --overwrite to replace it\n"
    assert main([str(release_2023[0]), "--half-sequence", "-np", "1", "--overwrite"]) == 0
    assert file_bytes(dataset, nnunet_folders.preprocessed / DATASET) == first
    assert sorted(p.name for p in nnunet_folders.raw.iterdir()) == [DATASET]
    # the NIfTI files are gzip streams without a time stamp: that is what makes them repeatable
    sample = dataset / "imagesTr" / "patient0001_2CH_ED_0000.nii.gz"
    assert sample.read_bytes()[4:8] == b"\0\0\0\0" and gzip.decompress(sample.read_bytes())[:4] == (348).to_bytes(
        4, "little")


def test_failed_overwrite_keeps_the_previous_dataset(converted_challenge, release_challenge, nnunet_folders,
                                                     capsys):
    before = file_bytes(nnunet_folders.raw, nnunet_folders.preprocessed)
    root, _ = release_challenge
    (root / "training" / "patient0007" / "patient0007_4CH_ES.raw").write_bytes(b"\0" * 10)
    assert main([str(root), "-np", "2", "--overwrite"]) == 2
    assert "truncated" in capsys.readouterr().err
    assert file_bytes(nnunet_folders.raw, nnunet_folders.preprocessed) == before


# ------------------------------------------------------------------------------------------------ bad input

def nifti_of(root: Path, patient: str, name: str) -> Path:
    return root / "database_nifti" / patient / f"{patient}_{name}.nii.gz"


def mhd_of(root: Path, patient: str, name: str, subgroup: str = "training") -> Path:
    return root / subgroup / patient / f"{patient}_{name}.mhd"


def rewrite(path: Path, array: np.ndarray, spacing: tuple[float, ...]) -> None:
    write_with_sitk(array, spacing, path)


def missing_image(root: Path):
    path = nifti_of(root, "patient0002", "4CH_ES")
    path.unlink()
    return path, r"not found \(missing image\)"


def missing_ground_truth(root: Path):
    path = nifti_of(root, "patient0005", "2CH_ED_gt")
    path.unlink()
    return path, r"not found \(missing ground truth\)"


def missing_half_sequence_labels(root: Path):
    path = nifti_of(root, "patient0004", "4CH_half_sequence_gt")
    path.unlink()
    return path, r"not found \(missing half-sequence ground truth\)"


def shape_mismatch(root: Path):
    image = sitk.ReadImage(str(nifti_of(root, "patient0001", "2CH_ES")))
    path = nifti_of(root, "patient0001", "2CH_ES_gt")
    rewrite(path, np.zeros((60, 49), np.uint8), image.GetSpacing())
    return path, (r"shape mismatch: 60 rows x 49 columns, but its image patient0001_2CH_ES.nii.gz has 60 rows x "
                  r"50 columns")


def spacing_mismatch(root: Path):
    path = nifti_of(root, "patient0004", "2CH_ED_gt")
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    rewrite(path, labels, (0.308, 0.154))  # x and y swapped
    return path, (r"spacing mismatch: 0.308 x 0.154 mm, but its image patient0004_2CH_ED.nii.gz has 0.154 x "
                  r"0.308 mm")


def rewrite_geometry(path: Path, direction=None, origin=None) -> None:
    """The same pixels and spacing, lying elsewhere (origin) or turned (direction)."""
    image = sitk.ReadImage(str(path))
    if direction is not None:
        image.SetDirection(direction)
    if origin is not None:
        image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), useCompression=True)


def direction_mismatch(root: Path):
    path = nifti_of(root, "patient0001", "4CH_ED_gt")
    rewrite_geometry(path, direction=(1.0, 0.0, 0.0, -1.0))  # upside down
    return path, r"direction mismatch: \(1, 0, 0, -1\), but its image patient0001_4CH_ED.nii.gz has \(1, 0, 0, 1\)"


def origin_mismatch(root: Path):
    path = nifti_of(root, "patient0003", "2CH_ES_gt")
    rewrite_geometry(path, origin=(2.5, 0.0))
    return path, r"origin mismatch: \(2.5, 0\) mm, but its image patient0003_2CH_ES.nii.gz has \(0, 0\) mm"


def half_sequence_direction_mismatch(root: Path):
    path = nifti_of(root, "patient0004", "2CH_half_sequence_gt")
    rewrite_geometry(path, direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # x and y swapped
    return path, r"direction mismatch: \(0, 1, 1, 0\), but its image patient0004_2CH_half_sequence.nii.gz has .*"


def nifti_spacing(value: float, shown: str):
    def edit(root: Path):
        """pixdim[1] (x spacing) of the header set to `value`, bytes patched as a broken writer leaves them:
        nibabel and SimpleITK would both repair it on writing."""
        path = nifti_of(root, "patient0001", "2CH_ED")
        content = bytearray(gzip.decompress(path.read_bytes()))
        content[80:84] = struct.pack("<f", value)
        path.write_bytes(gzip.compress(bytes(content)))
        return path, rf"spacing {shown} x 0.154 mm \(pixdim\) is not a positive finite number; a measurement in mm .*"
    return edit


def half_sequence_shape_mismatch(root: Path):
    path = nifti_of(root, "patient0003", "2CH_half_sequence_gt")
    rewrite(path, np.zeros((3, 64, 44), np.uint8), (0.2, 0.25, 1.0))
    return path, (r"shape mismatch: 3 frames of 64 rows x 44 columns, but its image "
                  r"patient0003_2CH_half_sequence.nii.gz has 4 frames of 64 rows x 44 columns")


def unreadable_nifti(root: Path):
    path = nifti_of(root, "patient0003", "4CH_ED")
    path.write_bytes(gzip.compress(b"this is not a NIfTI header"))
    return path, r"unreadable: not an image file SimpleITK can read"


def truncated_download(root: Path):
    path = nifti_of(root, "patient0001", "4CH_half_sequence")
    path.write_bytes(path.read_bytes()[:-600])
    return path, (r"unreadable: corrupt or truncated gzip stream \(Compressed file ended before the end-of-stream "
                  r"marker was reached\)")


def short_nifti_data(root: Path):
    path = nifti_of(root, "patient0004", "2CH_ES_gt")
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:1000]))
    return path, r"truncated: 1000 bytes of NIfTI, but its header describes 3040"


def unknown_label(root: Path):
    path = nifti_of(root, "patient0002", "2CH_ES_gt")
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image)
    labels[0, 0] = 4
    labels[1, 1] = 255
    changed = sitk.GetImageFromArray(labels)
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path), useCompression=True)
    return path, (r"unknown label values 4, 255; CAMUS ground truth has 0 background, 1 LV cavity, "
                  r"2 LV myocardium, 3 left atrium")


def unknown_label_in_half_sequence(root: Path):
    path = nifti_of(root, "patient0001", "4CH_half_sequence_gt")
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image)
    labels[2, 5, 5] = 7
    changed = sitk.GetImageFromArray(labels)
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path), useCompression=True)
    return path, r"frame 3: unknown label value 7; CAMUS ground truth has .*"


def two_frames_for_one_image(root: Path):
    path = nifti_of(root, "patient0004", "4CH_ED")
    rewrite(path, np.zeros((2, 58, 48), np.uint8), (0.154, 0.308, 1.0))
    return path, r"expected one 2D image, got 2 frames of 58 x 48 pixels"


def split_names_absent_patient(root: Path):
    path = root / "database_split" / "subgroup_testing.txt"
    path.write_text("patient0005\npatient0042\n")
    return path, rf"line 2: patient0042 has no folder {re.escape(str(root / 'database_nifti' / 'patient0042'))}"


def patient_in_two_subgroups(root: Path):
    path = root / "database_split" / "subgroup_validation.txt"
    path.write_text("patient0004\n\npatient0002\n")
    return path, (r"line 3: patient0002 is already listed \(subgroup_training.txt, line 2\); a patient belongs to "
                  r"one subgroup")


def malformed_split_line(root: Path):
    path = root / "database_split" / "subgroup_training.txt"
    path.write_text("patient0001\npatient 2\n")
    return path, r"line 2: expected a patient name like patient0001, got 'patient 2'"


def missing_split_file(root: Path):
    path = root / "database_split" / "subgroup_validation.txt"
    path.unlink()
    return path, r"not found; the 2023 release lists its official subgroups in .*"


def info_without_es(root: Path):
    path = root / "database_nifti" / "patient0003" / "Info_2CH.cfg"
    path.write_text("ED: 1\nNbFrame: 4\nImageQuality: Poor\n")
    return path, r"ES is missing; --half-sequence needs it to know which half-sequence frame is the ES case"


def info_es_beyond_half_sequence(root: Path):
    path = root / "database_nifti" / "patient0002" / "Info_4CH.cfg"
    path.write_text(path.read_text().replace("ES: 4", "ES: 9"))
    return path, r"ES is frame 9, but patient0002_4CH_half_sequence.nii.gz has 4 frames"


def malformed_info(root: Path):
    path = root / "database_nifti" / "patient0001" / "Info_4CH.cfg"
    path.write_text("ED: 1\nES 5\n")
    return path, r"line 2: expected 'key: value', got 'ES 5'"


def missing_raw(root: Path):
    path = mhd_of(root, "patient0004", "2CH_ED_gt")
    path.with_suffix(".raw").unlink()
    return path, r"its data file patient0004_2CH_ED_gt.raw \(ElementDataFile\) is not found beside it"


def truncated_raw(root: Path):
    path = mhd_of(root, "patient0009", "4CH_ES").with_suffix(".raw")
    path.write_bytes(path.read_bytes()[:100])
    return path, r"truncated: 100 bytes, but patient0009_4CH_ES.mhd describes 780 \(DimSize 26 30 1, MET_UCHAR\)"


def mhd_spacing(value: str):
    def edit(root: Path):
        path = mhd_of(root, "patient0008", "2CH_ES")
        lines = [f"ElementSpacing = {value} 0.308 1.54" if line.startswith("ElementSpacing") else line
                 for line in path.read_text().splitlines()]
        path.write_text("\n".join(lines) + "\n")
        return path, rf"spacing {value} x 0.308 mm \(ElementSpacing\) is not a positive finite number; .*"
    return edit


def missing_challenge_ground_truth(root: Path):
    path = mhd_of(root, "patient0011", "2CH_ES_gt")
    path.unlink()
    return path, r"not found \(missing ground truth\)"


def missing_challenge_test_image(root: Path):
    path = mhd_of(root, "patient0013", "4CH_ED", "testing")
    path.unlink()
    return path, r"not found \(missing image\)"


def float_label_in_mhd(root: Path):
    path = mhd_of(root, "patient0006", "4CH_ED_gt")
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image).astype(np.float32)
    labels[0, 3, 3] = 2.5
    rewrite(path, labels, image.GetSpacing())
    return path, r"unknown label value 2.5; CAMUS ground truth has .*"


def patient_in_training_and_testing(root: Path):
    (root / "testing" / "patient0003").mkdir()
    return root / "testing" / "patient0003", rf"is also in {re.escape(str(root / 'training'))}; a patient .*"


BAD_2023 = {
    "missing image": missing_image,
    "missing ground truth": missing_ground_truth,
    "missing half-sequence gt": missing_half_sequence_labels,
    "gt shape mismatch": shape_mismatch,
    "gt spacing mismatch": spacing_mismatch,
    "gt direction mismatch": direction_mismatch,
    "gt origin mismatch": origin_mismatch,
    "half-sequence gt direction mismatch": half_sequence_direction_mismatch,
    "zero spacing": nifti_spacing(0.0, "0"),
    "negative spacing": nifti_spacing(-0.154, "-0.154"),
    "NaN spacing": nifti_spacing(float("nan"), "nan"),
    "half-sequence gt shape mismatch": half_sequence_shape_mismatch,
    "unreadable file": unreadable_nifti,
    "truncated download": truncated_download,
    "NIfTI data shorter than its header": short_nifti_data,
    "unknown labels": unknown_label,
    "unknown label in a half-sequence frame": unknown_label_in_half_sequence,
    "sequence instead of an image": two_frames_for_one_image,
    "split file names an absent patient": split_names_absent_patient,
    "patient in two subgroups": patient_in_two_subgroups,
    "malformed split line": malformed_split_line,
    "missing split file": missing_split_file,
    "Info without ES": info_without_es,
    "malformed Info line": malformed_info,
    "Info ES beyond the half sequence": info_es_beyond_half_sequence,
}
BAD_CHALLENGE = {
    "missing raw": missing_raw,
    "truncated raw": truncated_raw,
    "missing ground truth": missing_challenge_ground_truth,
    "zero spacing": mhd_spacing("0"),
    "negative spacing": mhd_spacing("-0.3"),
    "infinite spacing": mhd_spacing("inf"),
    "missing testing image": missing_challenge_test_image,
    "non-integer label": float_label_in_mhd,
    "patient in training and testing": patient_in_training_and_testing,
}


def assert_one_error_and_nothing_left(capsys, path: Path, problem: str, folders: NnUNetFolders) -> None:
    errors = [line for line in re.split(r"[\r\n]+", capsys.readouterr().err) if line.startswith("error")]
    assert len(errors) == 1 and re.fullmatch(rf"error: {re.escape(str(path))}: {problem}", errors[0]), errors
    assert list(folders.raw.iterdir()) == [] and list(folders.preprocessed.iterdir()) == []


@pytest.mark.parametrize("make_bad", BAD_2023.values(), ids=BAD_2023.keys())
def test_bad_2023_input_is_one_error_line_and_leaves_nothing(make_bad, release_2023, nnunet_folders, capsys):
    path, problem = make_bad(release_2023[0])
    assert main([str(release_2023[0]), "--half-sequence", "-np", "2"]) == 2
    assert_one_error_and_nothing_left(capsys, path, problem, nnunet_folders)


@pytest.mark.parametrize("make_bad", BAD_CHALLENGE.values(), ids=BAD_CHALLENGE.keys())
def test_bad_challenge_input_is_one_error_line_and_leaves_nothing(make_bad, release_challenge, nnunet_folders,
                                                                  capsys):
    path, problem = make_bad(release_challenge[0])
    assert main([str(release_challenge[0]), "-np", "2"]) == 2
    assert_one_error_and_nothing_left(capsys, path, problem, nnunet_folders)


def test_ground_truth_geometry_within_float_noise_of_its_image_is_accepted(release_2023, nnunet_folders):
    root, _ = release_2023
    rewrite_geometry(nifti_of(root, "patient0001", "4CH_ED_gt"), direction=(1.0, 2e-6, -2e-6, 1.0),
                     origin=(3e-6, -3e-6))
    assert main([str(root), "-np", "1"]) == 0


def test_converting_no_case_at_all_is_an_error(release_2023, nnunet_folders, monkeypatch, capsys):
    monkeypatch.setattr(camus, "convert_patient", lambda task: camus.PatientResult(task.patient))
    assert main([str(release_2023[0]), "-np", "1"]) == 2
    assert_one_error_and_nothing_left(capsys, release_2023[0], r"no case could be converted from its 5 patients",
                                      nnunet_folders)


def test_folders_that_are_no_camus_release(tmp_path, release_2023, nnunet_folders, capsys):
    root, _ = release_2023
    cases = [
        (tmp_path / "nowhere", tmp_path / "nowhere", r"not a folder; expected a CAMUS release .*"),
        (tmp_path, tmp_path, r"neither CAMUS layout: expected database_nifti/ and database_split/ \(2023 release\) "
                             r"or training/ \(challenge release\)"),
        (root / "database_nifti", root / "database_nifti",
         rf"neither CAMUS layout: .*; it holds patient folders itself: pass its parent folder "
         rf"\({re.escape(str(root))}\) instead"),
    ]
    for argument, path, problem in cases:
        assert main([str(argument), "-np", "1"]) == 2
        assert_one_error_and_nothing_left(capsys, path, problem, nnunet_folders)
    (root / "training").mkdir()
    assert main([str(root), "-np", "1"]) == 2
    assert_one_error_and_nothing_left(capsys, root, r"holds both database_nifti/ .*", nnunet_folders)


def test_dataset_id_used_by_another_dataset(release_2023, nnunet_folders, capsys):
    other = nnunet_folders.raw / "Dataset601_Other"
    other.mkdir()
    assert main([str(release_2023[0])]) == 2
    assert capsys.readouterr().err == (f"error: {other}: dataset id 601 is already used by this dataset; "
                                       f"choose another id with -d\n")
    assert list(nnunet_folders.raw.iterdir()) == [other] and list(nnunet_folders.preprocessed.iterdir()) == []
