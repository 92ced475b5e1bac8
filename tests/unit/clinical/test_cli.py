"""msvmamba_clinical on label folders made by the real converters (synthetic CAMUS patients through the CAMUS
converter; EchoNet-Dynamic-style cases), on label sequences, and on every kind of bad input."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dataset_conversion.echonet import convert_echonet
from dataset_conversion.echonet_synthetic import ejection_fraction as file_list_ef
from dataset_conversion.echonet_synthetic import random_release_videos, write_release
from helpers.clinical_fixtures import (CAMUS_LIKE_SPACING, CONVERTED_CAMUS_PATIENTS, badly_segmented_ed_frame,
                                       beating_sequence, camus_like_cases, converted_synthetic_camus, half_ellipse,
                                       half_ellipsoid_volume, set_nifti_pixdim, with_island, write_label_folder,
                                       write_sequence)
from helpers.nnunet import run_command
from helpers.tables import read_rows
from nnunetv2_msvmamba.clinical import report
from nnunetv2_msvmamba.clinical.cli import main

N_PATIENTS = CONVERTED_CAMUS_PATIENTS
REPORT_FILES = {"clinical_per_patient.csv", "clinical_summary.json", "clinical_summary.md", "bland_altman.png",
                "scatter.png"}
# The generator's Info EF is the biplane area-length EF (exact for ellipsoids) of the true cavity lengths,
# rounded to a whole percent; the cavity is close to a half prolate spheroid, so Simpson's biplane EF of its
# ground truth agrees within the rounding and the discretisation: measured on 38 life-size patients at 256 x 224
# pixels, bias -0.09, MAE 0.28 and at most 0.73 EF points.
MAX_EF_DIFFERENCE_TO_INFO = 1.5
MAX_EF_MAE_TO_INFO = 0.75


@pytest.fixture(scope="module")
def camus(tmp_path_factory) -> Path:
    """Synthetic CAMUS release -> CAMUS converter: Dataset601_CAMUS with labelsTr, labelsTs and cases.csv."""
    return converted_synthetic_camus(tmp_path_factory.mktemp("clinical_camus"))


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_ground_truth_ef_agrees_with_the_info_ef_of_the_synthetic_patients(camus, tmp_path, capsys):
    out = tmp_path / "out"
    status, stdout, _ = run(["--reference", str(camus / "labelsTr"), "--cases", str(camus / "cases.csv"),
                             "-o", str(out), "-np", "1"], capsys)
    assert status == 0
    assert REPORT_FILES <= {p.name for p in out.iterdir()}
    rows = read_rows(out / "clinical_per_patient.csv")
    assert list(rows[0])[:5] == ["model", "patient", "edv_ml", "esv_ml", "ef_percent"]
    reference = {r["patient"]: r for r in rows if r["model"] == "reference"}
    info = {r["patient"]: float(r["ef_percent"]) for r in rows if r["model"] == "cases.csv"}
    assert len(reference) == N_PATIENTS - 1 and set(info) == set(reference)  # labelsTr: training + validation
    differences = [float(reference[p]["ef_percent"]) - info[p] for p in reference]
    assert max(abs(d) for d in differences) <= MAX_EF_DIFFERENCE_TO_INFO, differences
    summary = json.loads((out / "clinical_summary.json").read_text())
    [entry] = summary["agreement"]
    assert (entry["model"], entry["reference"]) == ("reference", "cases.csv")
    assert entry["ef"]["n"] == N_PATIENTS - 1 and entry["ef"]["mae"] <= MAX_EF_MAE_TO_INFO
    assert entry["ef"]["mae"] == pytest.approx(np.mean(np.abs(differences)))
    assert entry["edv"]["n"] == 0  # CAMUS Info files give EF only
    assert summary["volume_unit"] == "mL" and summary["cases"] == "CAMUS"
    for row in reference.values():  # volumes in mL; both single-plane views reported too
        edv, esv = float(row["edv_ml"]), float(row["esv_ml"])
        assert 0 < esv < edv and float(row["ef_percent"]) == pytest.approx(100 * (edv - esv) / edv)
        assert 0.7 * edv < float(row["edv_2ch_ml"]) < 1.3 * edv and 0.7 * edv < float(row["edv_4ch_ml"]) < 1.3 * edv
    assert "| reference | cases.csv | EF |" in (out / "clinical_summary.md").read_text()
    assert "| reference | cases.csv | EF |" in stdout


def write_eroded_copy(source: Path, target: Path) -> None:
    """A 'model' whose cavity is one pixel too small all round: its border becomes myocardium."""
    target.mkdir()
    for path in source.iterdir():
        image = sitk.ReadImage(str(path))
        labels = sitk.GetArrayFromImage(image)
        cavity = labels == 1
        labels[cavity & ~ndimage.binary_erosion(cavity)] = 2
        eroded = sitk.GetImageFromArray(labels)
        eroded.CopyInformation(image)
        sitk.WriteImage(eroded, str(target / path.name))


def test_models_side_by_side_against_ground_truth_and_info_ef(camus, tmp_path, capsys):
    shutil.copytree(camus / "labelsTs", tmp_path / "same")
    write_eroded_copy(camus / "labelsTs", tmp_path / "eroded")
    out = tmp_path / "out"
    status, _, _ = run(["--pred", f"same={tmp_path / 'same'}", "--pred", f"eroded={tmp_path / 'eroded'}",
                        "--reference", str(camus / "labelsTs"), "--cases", str(camus / "cases.csv"),
                        "-o", str(out), "-np", "2"], capsys)
    assert status == 0
    rows = read_rows(out / "clinical_per_patient.csv")
    assert [r["model"] for r in rows] == ["same", "eroded", "reference", "cases.csv"]  # one test patient
    summary = json.loads((out / "clinical_summary.json").read_text())
    pairs = [(e["model"], e["reference"]) for e in summary["agreement"]]
    assert pairs == [("same", "reference"), ("eroded", "reference"), ("same", "cases.csv"),
                     ("eroded", "cases.csv"), ("reference", "cases.csv")]
    same, eroded = summary["agreement"][0], summary["agreement"][1]
    assert same["edv"]["bias"] == 0 and same["ef"]["mae"] == 0
    assert eroded["edv"]["bias"] < 0 and eroded["esv"]["bias"] < 0  # a smaller cavity, smaller volumes
    by_model = {r["model"]: r for r in rows}
    assert float(by_model["eroded"]["edv_ml"]) - float(by_model["reference"]["edv_ml"]) == \
        pytest.approx(eroded["edv"]["bias"])


def echonet_folder(folder: Path, videos: dict[str, tuple[float, float]]) -> Path:
    """EchoNet-Dynamic-style cases (cavity only, spacing 1): per video a half-ellipse cavity at ED and ES
    (length, half-width in pixels) scaled by (1, es_scale)."""
    cases = {}
    for video, (length, es_scale) in videos.items():
        for phase, scale in (("ED", 1.0), ("ES", es_scale)):
            cases[f"{video}_{phase}"] = half_ellipse((112, 112), (100.0, 56.0), length * scale, 0.3 * length * scale,
                                                     angle=0.35, atrium=False)
    return write_label_folder(folder, cases)


def test_echonet_cases_single_plane_with_spacing_and_filelist_values(tmp_path, capsys):
    videos = {"0X1A2B3C4D5E6F7A8B": (80.3, 0.8), "0X9F8E7D6C5B4A3F2E": (70.7, 0.9)}
    labels = echonet_folder(tmp_path / "labelsTs", videos)
    with open(tmp_path / "cases.csv", "w") as f:
        f.write("case,video,phase,EF,EDV,ESV\n")
        for video, (length, es_scale) in videos.items():
            edv = half_ellipsoid_volume(length, 0.3 * length, 0.3 * length) * 0.5 ** 3 / 1000
            ef = 100 * (1 - es_scale ** 3)
            for phase in ("ED", "ES"):
                f.write(f"{video}_{phase},{video},{phase},{ef:.2f},{edv:.4f},{edv * es_scale ** 3:.4f}\n")
    out = tmp_path / "out"
    status, _, _ = run(["--reference", str(labels), "--cases", str(tmp_path / "cases.csv"), "--spacing", "0.5",
                        "-o", str(out), "-np", "1"], capsys)
    assert status == 0
    summary = json.loads((out / "clinical_summary.json").read_text())
    assert summary["cases"] == "EchoNet-Dynamic" and "single-plane" in summary["method"]
    [entry] = summary["agreement"]
    assert entry["edv"]["n"] == entry["esv"]["n"] == entry["ef"]["n"] == 2
    assert abs(entry["edv"]["bias"]) < 0.03 * summary["means"]["cases.csv"]["edv"] and entry["ef"]["mae"] < 2.0
    rows = [r for r in read_rows(out / "clinical_per_patient.csv") if r["model"] == "reference"]
    for row in rows:
        length, _ = videos[row["patient"]]
        expected = half_ellipsoid_volume(length, 0.3 * length, 0.3 * length) * 0.125 / 1000
        assert float(row["edv_ml"]) == pytest.approx(expected, rel=0.03)
        assert row["edv_2ch_ml"] == "" and row["volume_unit"] == "mL"

    status, _, stderr = run(["--reference", str(labels), "--cases", str(tmp_path / "cases.csv"),
                             "-o", str(tmp_path / "pixels"), "-np", "1"], capsys)
    assert status == 0 and "pixels³" in stderr
    [entry] = json.loads((tmp_path / "pixels" / "clinical_summary.json").read_text())["agreement"]
    assert (entry["edv"]["n"], entry["esv"]["n"], entry["ef"]["n"]) == (0, 0, 2)  # px³ vs mL: EF only
    pixel_rows = [r for r in read_rows(tmp_path / "pixels" / "clinical_per_patient.csv") if r["model"] == "reference"]
    assert float(pixel_rows[0]["edv_ml"]) == pytest.approx(float(rows[0]["edv_ml"]) * 1000 / 0.125)
    assert pixel_rows[0]["volume_unit"] == "pixels3"


def test_echonet_dynamic_release_through_its_converter(tmp_path, nnunet_folders, capsys):
    """The real converter's layout: `<FileName>_{ED,ES}` cases (no spacing, cavity only, so the annulus comes from
    the hull) and cases.csv with FileList.csv's EF, EDV and ESV, which become the `cases.csv` series. The
    synthetic release's FileList EF is the area-length EF of the full elliptical cavity; its tracings stop
    short of both ends (disc chords from -0.905 to 0.905 of the half-length), so the single-plane EF of the
    rasterised masks is a little lower: measured on 14 videos, bias -1.46, limits -2.35 to -0.58, r 0.999."""
    videos = random_release_videos(8, n_frames=60)
    write_release(tmp_path / "release", videos)
    convert_echonet(tmp_path / "release", num_processes=1)
    dataset = next(nnunet_folders.raw.iterdir())
    out = tmp_path / "out"
    status, _, _ = run(["--reference", str(dataset / "labelsTr"), "--cases", str(dataset / "cases.csv"),
                        "-o", str(out), "-np", "1"], capsys)
    assert status == 0
    rows = read_rows(out / "clinical_per_patient.csv")
    measured = {r["patient"]: r for r in rows if r["model"] == "reference"}
    assert set(measured) == {path.name[:-len("_ED.nii.gz")] for path in (dataset / "labelsTr").glob("*_ED.nii.gz")}
    listed = {video.name: file_list_ef(video)[0] for video in videos}
    for row in rows:
        if row["model"] == "cases.csv":
            assert float(row["ef_percent"]) == pytest.approx(listed[row["patient"]], abs=1e-3)
        else:
            assert row["volume_unit"] == "pixels3" and float(row["edv_ml"]) > 0
            assert -3.0 < float(row["ef_percent"]) - listed[row["patient"]] < 0.5
    [entry] = json.loads((out / "clinical_summary.json").read_text())["agreement"]
    assert entry["ef"]["pearson_r"] > 0.98 and entry["ef"]["mae"] < 2.5


def test_sequence_mode_on_camus_half_sequences_matches_the_ed_es_cases(camus, tmp_path, capsys):
    """A half sequence's first and last frames are the ED and ES cases, so its EF is that view's single-plane
    EF from the label folder."""
    patient = patients_in(camus / "labelsTr")[0]
    sequences = tmp_path / "sequences"
    sequences.mkdir()
    for view in ("2CH", "4CH"):
        name = f"{patient}_{view}_half_sequence_gt.nii.gz"
        shutil.copy(camus / "release" / "database_nifti" / patient / name, sequences / name)
    status, stdout, _ = run(["--sequence", str(sequences), "-o", str(tmp_path / "seq")], capsys)
    assert status == 0 and "EF" in stdout
    summary = {r["sequence"]: r for r in read_rows(tmp_path / "seq" / "sequence_summary.csv")}
    frames = read_rows(tmp_path / "seq" / "sequence_frames.csv")
    run(["--reference", str(camus / "labelsTr"), "-o", str(tmp_path / "cases"), "-np", "1"], capsys)
    cases = {r["patient"]: r for r in read_rows(tmp_path / "cases" / "clinical_per_patient.csv")}
    for view in ("2CH", "4CH"):
        row = summary[f"{patient}_{view}_half_sequence_gt"]
        n_frames = int(row["frames"])
        assert (row["beats"], row["ed_frames"], row["es_frames"]) == ("1", "0", str(n_frames - 1))
        assert float(row["ef_percent"]) == pytest.approx(float(cases[patient][f"ef_{view.lower()}_percent"]))
        phases = [r["phase"] for r in frames if r["sequence"] == f"{patient}_{view}_half_sequence_gt"]
        assert phases == ["ED"] + [""] * (n_frames - 2) + ["ES"]
    assert (tmp_path / "seq" / f"{patient}_2CH_half_sequence_gt_volume_curve.png").is_file()


# ------------------------------------------------------------------------------------------------- bad input

def camus_copy(camus: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(camus / "labelsTr", tmp_path / "labels"))


def patients_in(labels: Path) -> list[str]:
    return sorted({path.name.split("_")[0] for path in labels.iterdir()})


def rewrite(path: Path, change) -> None:
    image = sitk.ReadImage(str(path))
    labels = sitk.GetArrayFromImage(image)
    changed = sitk.GetImageFromArray(change(labels))
    changed.CopyInformation(image)
    sitk.WriteImage(changed, str(path))


def no_lv(camus, tmp_path):
    labels = camus_copy(camus, tmp_path)
    bad = labels / f"{patients_in(labels)[1]}_4CH_ES.nii.gz"
    rewrite(bad, lambda a: np.where(a == 1, 2, a))
    return ["--reference", str(labels)], bad, "no LV cavity (label 1)"


def two_chamber_without_four_chamber(camus, tmp_path):
    labels = camus_copy(camus, tmp_path)
    patient = patients_in(labels)[2]
    for phase in ("ED", "ES"):
        (labels / f"{patient}_4CH_{phase}.nii.gz").unlink()
    return ["--reference", str(labels)], labels / f"{patient}_2CH_ED.nii.gz", "has no 4CH view"


def mismatched_spacing(camus, tmp_path):
    labels = camus_copy(camus, tmp_path)
    prediction = Path(shutil.copytree(labels, tmp_path / "prediction"))
    patient = patients_in(labels)[0]
    for path in prediction.glob(f"{patient}_*"):  # the whole patient, so each view's ED and ES still agree
        image = sitk.ReadImage(str(path))
        image.SetSpacing([s * 1.5 for s in image.GetSpacing()])
        sitk.WriteImage(image, str(path))
    bad = prediction / f"{patient}_2CH_ED.nii.gz"
    return ["--pred", f"model={prediction}", "--reference", str(labels)], bad, "spacing"


def spacing_option_against_the_files(camus, tmp_path):
    labels = camus_copy(camus, tmp_path)
    return ["--reference", str(labels), "--spacing", "0.77"], labels / f"{patients_in(labels)[0]}_2CH_ED.nii.gz", \
        "does not match --spacing 0.77"


def unreadable_label_file(camus, tmp_path):
    labels = camus_copy(camus, tmp_path)
    bad = labels / f"{patients_in(labels)[0]}_4CH_ED.nii.gz"
    bad.write_bytes(b"\x1f\x8b truncated")
    return ["--reference", str(labels)], bad, "unreadable: corrupt or truncated gzip stream"


def missing_model_folder(camus, tmp_path):
    return ["--pred", f"model={tmp_path / 'nowhere'}", "--reference", str(camus / "labelsTr")], \
        tmp_path / "nowhere", "prediction folder of model model does not exist"


def missing_reference_folder(camus, tmp_path):
    return ["--reference", str(tmp_path / "nowhere")], tmp_path / "nowhere", "does not exist"


def echonet_es_missing(camus, tmp_path):
    labels = echonet_folder(tmp_path / "echonet", {"0XAB": (80.3, 0.8)})
    (labels / "0XAB_ES.nii.gz").unlink()
    (tmp_path / "other").mkdir()
    return ["--reference", str(labels)], labels / "0XAB_ED.nii.gz", "0XAB_ES is missing"


def sequence_frame_without_lv(camus, tmp_path):
    source = camus / "release" / "database_nifti" / "patient0001" / "patient0001_4CH_half_sequence_gt.nii.gz"
    bad = tmp_path / "seq.nii.gz"
    shutil.copy(source, bad)
    rewrite(bad, lambda a: np.where((a == 1) & (np.arange(len(a))[:, None, None] == 2), 0, a))
    return ["--sequence", str(bad)], bad, "sequence seq: frame 2 (0-based): no LV cavity"


def unreadable_sequence(camus, tmp_path):
    bad = tmp_path / "seq.nii.gz"
    bad.write_text("not an image")
    return ["--sequence", str(bad)], bad, "unreadable: corrupt or truncated gzip stream"


def sequence_that_is_one_frame(camus, tmp_path):
    bad = sorted((camus / "labelsTr").iterdir())[0]
    return ["--sequence", str(bad)], bad, "expected a 3D image"


@pytest.mark.parametrize("make_case", [no_lv, two_chamber_without_four_chamber, mismatched_spacing,
                                       spacing_option_against_the_files, unreadable_label_file, missing_model_folder,
                                       missing_reference_folder, echonet_es_missing, sequence_frame_without_lv,
                                       unreadable_sequence, sequence_that_is_one_frame])
def test_bad_input_gives_one_line_naming_the_file_and_exit_status_2(camus, tmp_path, capsys, make_case):
    argv, bad_file, problem = make_case(camus, tmp_path)
    out = tmp_path / "out"
    status, _, stderr = run([*argv, "-o", str(out), "-np", "1"], capsys)
    lines = [line for line in stderr.splitlines() if line.startswith("error")]
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad_file}: "), stderr
    assert problem in lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_a_failure_while_writing_leaves_no_half_written_reports(camus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "clinical_summary.md").write_text("an earlier run")

    def broken_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report, "agreement_grid", broken_plot)
    status, _, stderr = run(["--reference", str(camus / "labelsTs"), "--cases", str(camus / "cases.csv"),
                             "-o", str(out), "-np", "1"], capsys)
    assert status == 2 and "disk full" in stderr
    assert [p.name for p in out.iterdir()] == ["clinical_summary.md"]
    assert (out / "clinical_summary.md").read_text() == "an earlier run"


# ------------------------------------------------- untrustworthy input, through the installed command

def clinical(*args) -> subprocess.CompletedProcess:
    """msvmamba_clinical as a user runs it."""
    return run_command(["msvmamba_clinical", *map(str, args), "-np", "1"], check=False)


def assert_refused(result, bad_file: Path, problem: str, out: Path) -> str:
    """Exit status 2, one error line on stderr (after the progress bar, if any) naming the file and the problem,
    no traceback, no reports."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error")]
    assert len(errors) == 1 and errors[0] == lines[-1] and errors[0].startswith(f"error: {bad_file}: "), result.stderr
    assert problem in errors[0], errors[0]
    assert not out.exists() or not any(out.iterdir())
    return errors[0]


def beating_file(path: Path, dtype: type = np.uint8) -> Path:
    labels, _ = beating_sequence(24, 12.0, 2.0, shape=(70, 50), length=40.0, half_width=15.0, noise=0.0)
    return write_sequence(path, labels, (0.3, 0.3), dtype)


@pytest.mark.parametrize("axis, value", [(1, math.nan), (2, math.inf), (1, 0.0)], ids=["nan-x", "inf-y", "zero-x"])
def test_a_sequence_whose_header_spacing_is_not_a_positive_finite_number_is_refused(tmp_path, axis, value):
    """SimpleITK would read it as 1 mm, with a warning, and the volumes would be in pixels³ or the wrong mL."""
    bad = beating_file(tmp_path / "loop.nii.gz")
    set_nifti_pixdim(bad, axis, value)
    out = tmp_path / "out"
    assert_refused(clinical("--sequence", bad, "-o", out), bad, "(pixdim) is not a positive finite number", out)


def test_a_sequence_with_nan_voxels_is_refused(tmp_path):
    """SimpleITK reads a NaN voxel of a NIfTI file as 0: a hole in the cavity nobody would see."""
    labels, _ = beating_sequence(24, 12.0, 2.0, shape=(70, 50), length=40.0, half_width=15.0, noise=0.0)
    labels = labels.astype(np.float32)
    assert labels[5, 30, 25] == 1
    labels[5, 30, 25] = np.nan  # inside the cavity of frame 5
    bad = write_sequence(tmp_path / "loop.nii.gz", labels, dtype=np.float32)
    out = tmp_path / "out"
    assert_refused(clinical("--sequence", bad, "-o", out), bad, "1 NaN or infinite voxel value(s)", out)


def test_nii_beside_nii_gz_of_one_name_in_a_sequence_folder_is_refused_naming_both(tmp_path):
    folder = tmp_path / "loops"
    folder.mkdir()
    beating_file(folder / "loop.nii.gz")
    beating_file(folder / "loop.nii")
    beating_file(folder / "other.nii.gz")
    out = tmp_path / "out"
    line = assert_refused(clinical("--sequence", folder, "-o", out), folder / "loop.nii.gz", "has the same name", out)
    assert str(folder / "loop.nii") + " " in line


def test_a_sequence_with_an_implausible_beat_is_measured_and_flagged(tmp_path):
    path = write_sequence(tmp_path / "loop.nii.gz", badly_segmented_ed_frame())
    result = clinical("--sequence", path, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    [summary] = read_rows(tmp_path / "out" / "sequence_summary.csv")
    assert summary["note"].startswith("beat ED 5 -> ES 15: ESV > EDV (EF -")
    assert f"warning: {path}: {summary['note']}" in result.stderr.splitlines()
    assert "ED 5 -> ES 15: EF -" in result.stdout and "(ESV > EDV!)" in result.stdout
    assert float(summary["ef_per_beat"].split()[0]) < 0  # the measured value is kept


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_label_file_whose_header_spacing_is_not_a_positive_finite_number_is_refused(tmp_path, value):
    labels = write_label_folder(tmp_path / "labels", camus_like_cases({"p1": 22.0, "p2": 24.0}), CAMUS_LIKE_SPACING)
    bad = labels / "p2_4CH_ES.nii.gz"
    set_nifti_pixdim(bad, 1, value)
    out = tmp_path / "out"
    assert_refused(clinical("--reference", labels, "-o", out), bad, "(pixdim) is not a positive finite number", out)


def per_patient(out: Path, model: str = "reference") -> dict[str, dict]:
    return {row["patient"]: row for row in read_rows(out / "clinical_per_patient.csv") if row["model"] == model}


def test_an_island_of_cavity_far_from_the_ventricle_changes_no_volume_and_is_named_in_the_note(tmp_path):
    cases = camus_like_cases({"p1": 22.0, "p2": 24.0})
    clean = write_label_folder(tmp_path / "clean", cases, CAMUS_LIKE_SPACING)
    cases["p2_4CH_ED"] = with_island(cases["p2_4CH_ED"], 1, (2, 2), 4)  # beyond the apex: it would be the 'apex'
    island = write_label_folder(tmp_path / "island", cases, CAMUS_LIKE_SPACING)
    assert clinical("--reference", clean, "-o", tmp_path / "out_clean").returncode == 0
    result = clinical("--reference", island, "-o", tmp_path / "out_island")
    assert result.returncode == 0, result.stderr
    measured, expected = per_patient(tmp_path / "out_island"), per_patient(tmp_path / "out_clean")
    for patient in ("p1", "p2"):
        for column in ("edv_ml", "esv_ml", "ef_percent", "edv_4ch_ml"):
            assert measured[patient][column] == expected[patient][column], (patient, column)
    cavity = int(np.count_nonzero(cases["p2_4CH_ED"] == 1))
    assert measured["p2"]["note"] == (f"p2_4CH_ED.nii.gz: 1 island(s) of LV cavity (label 1) removed (16 pixels, "
                                      f"{100 * 16 / cavity:.1f} % of it)")
    assert measured["p1"]["note"] == expected["p2"]["note"] == ""
    assert "p2_4CH_ED.nii.gz" in result.stderr and "island" in result.stderr


def test_esv_larger_than_edv_is_flagged_per_patient_warned_and_counted_in_the_summary(tmp_path):
    """ED and ES files swapped: the measured values stay, with the flag beside them."""
    cases = camus_like_cases({"p1": 22.0, "p2": 24.0, "p3": 23.0})
    for view in ("2CH", "4CH"):
        cases[f"p3_{view}_ED"], cases[f"p3_{view}_ES"] = cases[f"p3_{view}_ES"], cases[f"p3_{view}_ED"]
    labels = write_label_folder(tmp_path / "labels", cases, CAMUS_LIKE_SPACING)
    out = tmp_path / "out"
    result = clinical("--reference", labels, "-o", out)
    assert result.returncode == 0, result.stderr
    rows = per_patient(out)
    p3 = rows["p3"]
    assert float(p3["esv_ml"]) > float(p3["edv_ml"]) and float(p3["ef_percent"]) < 0  # kept as measured
    assert p3["note"].startswith(f"ESV > EDV (EF {float(p3['ef_percent']):.1f} %): physiologically implausible")
    assert "2CH single plane: ESV > EDV" in p3["note"] and "4CH single plane: ESV > EDV" in p3["note"]
    assert rows["p1"]["note"] == rows["p2"]["note"] == ""
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: reference: 1 of 3 patient(s) with ESV > EDV, physiologically implausible (ED and "
                        "ES swapped, or a failed segmentation): p3; see the note column of clinical_per_patient.csv"]
    summary = json.loads((out / "clinical_summary.json").read_text())
    assert summary["implausible"]["patients"] == {"reference": ["p3"]}
    assert summary["means"]["reference"]["n_implausible"] == 1
    markdown = (out / "clinical_summary.md").read_text()
    assert "- Patients with ESV > EDV, physiologically implausible (ED and ES swapped, or a failed segmentation): " \
        "reference: 1 of 3 patient(s) (p3)\n" in markdown
    header, _, reference_row = [line for line in result.stdout.splitlines() if line.startswith("|")][:3]
    assert header.endswith("| ESV > EDV |") and reference_row.startswith("| reference | 3 |")
    assert reference_row.endswith("| 1 |")


def test_reference_values_that_are_not_numbers_are_named_per_patient_and_a_percent_sign_is_read(tmp_path):
    patients = {"p1": 22.0, "p2": 24.0, "p3": 23.0, "p4": 21.0, "p5": 25.0}
    labels = write_label_folder(tmp_path / "labels", camus_like_cases(patients), CAMUS_LIKE_SPACING)
    ef_text = {"p1": "31%", "p2": "", "p3": "n/a", "p4": "inf", "p5": "48.5"}
    with open(tmp_path / "cases.csv", "w") as f:
        f.write("case,EF\n")
        for patient, text in ef_text.items():
            for view in ("2CH", "4CH"):
                for phase in ("ED", "ES"):
                    f.write(f"{patient}_{view}_{phase},{text}\n")
    out = tmp_path / "out"
    result = clinical("--reference", labels, "--cases", tmp_path / "cases.csv", "-o", out)
    assert result.returncode == 0, result.stderr
    stated = per_patient(out, "cases.csv")
    assert float(stated["p1"]["ef_percent"]) == 31.0 and float(stated["p5"]["ef_percent"]) == 48.5
    expected_notes = {"p2": "EF is empty", "p3": "EF 'n/a' is not a number", "p4": "EF 'inf' is not a finite number"}
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    summary = json.loads((out / "clinical_summary.json").read_text())
    markdown = (out / "clinical_summary.md").read_text()
    for patient, reason in expected_notes.items():
        note = f"{tmp_path / 'cases.csv'}: patient {patient}: {reason}; left out of the agreement"
        assert f"note: {note}" in notes and note in summary["notes"] and note in markdown
        assert math.isnan(float(stated[patient]["ef_percent"]))
        assert stated[patient]["note"] == f"{reason}; left out of the agreement"
    [entry] = summary["agreement"]
    assert entry["ef"]["n"] == 2  # p1 and p5
