"""Echo evaluation: hand-computable metrics, the empty-mask convention, statistics, the reports and the
`msvmamba_evaluate` command."""
from __future__ import annotations

import csv
import gzip
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from scipy.spatial.distance import cdist

from dataset_conversion.common import write_image_2d
from helpers.image_faults import set_nifti_pixdim, write_float_nifti
from helpers.nnunet import run_command
from helpers.tables import read_rows
from nnunetv2_msvmamba.evaluation.case_metadata import load_case_metadata, subset_value
from nnunetv2_msvmamba.evaluation.cli import main
from nnunetv2_msvmamba.evaluation.metrics import compare_masks
from nnunetv2_msvmamba.evaluation.summary_statistics import paired_difference

CAMUS_LABELS = {"background": 0, "LV_cavity": 1, "LV_myocardium": 2, "left_atrium": 3}
ROW_SPACING, COLUMN_SPACING = 0.5, 2.0


# ---------------------------------------------------------------- fixtures written as nnU-Net label files

def write_labels(array: np.ndarray, spacing: tuple[float, ...], path: Path) -> None:
    """A 2D or 3D label map with `spacing` per array axis, as NIfTI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 2:
        write_image_2d(array.astype(np.uint8), spacing[::-1], path)
    else:
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.SetSpacing(spacing[::-1])
        sitk.WriteImage(image, str(path), useCompression=True)


def rectangle(shape: tuple[int, ...], box: tuple[slice, ...], label: int = 1) -> np.ndarray:
    array = np.zeros(shape, np.uint8)
    array[box] = label
    return array


def camus_like(shift_rows: int = 0) -> np.ndarray:
    """48x40 echo-like label map: myocardium around a 15-row cavity, atrium below; shifted down by rows."""
    labels = np.zeros((48, 40), np.uint8)
    labels[8:30, 8:32] = 2
    labels[12:27, 12:28] = 1
    labels[32:40, 12:28] = 3
    return np.roll(labels, shift_rows, axis=0)


def dataset_folder(root: Path, labels: dict, num_cases: int) -> Path:
    root.mkdir(parents=True)
    generate_dataset_json(str(root), {0: "echo"}, labels, num_cases, ".nii.gz", dataset_name="test")
    return root / "labelsTs"


def evaluate(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    status = main([*args, "-np", "1"])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# ---------------------------------------------------------------- metrics

def test_row_shifted_rectangle_has_hand_computed_dice_hd95_and_msd_under_anisotropic_spacing():
    # 6 x 20 rectangle moved down 2 rows; rows are 0.5 mm apart, columns 2.0 mm.
    reference = rectangle((30, 30), (slice(10, 16), slice(5, 25))).astype(bool)
    prediction = np.roll(reference, 2, axis=0)
    result = compare_masks(reference, prediction, (ROW_SPACING, COLUMN_SPACING))
    # overlap 4 of 6 rows: Dice = 2 * 80 / (120 + 120)
    assert result.dice == pytest.approx(2 / 3)
    # 48 surface pixels per mask; from the reference: the top row (20) and the bottom row minus its two
    # corners (18) are 2 rows = 1.0 mm from the prediction's surface, one pixel per side column 0.5 mm, the
    # rest 0. The shift is symmetric, so the other direction is the same: 76 of the 96 pooled distances are
    # 1.0 mm, four are 0.5 mm, sixteen 0.
    assert result.hd95_mm == pytest.approx(1.0)
    assert result.msd_mm == pytest.approx((76 * 1.0 + 4 * 0.5) / 96)
    assert result.size == pytest.approx(120 * ROW_SPACING * COLUMN_SPACING)
    assert result.empty == ""


def test_box_shifted_across_slices_in_3d():
    # 6 x 5 x 5 box moved 2 slices along the first axis (0.5 mm slices; 1.5 mm and 1.0 mm in-plane).
    spacing = (0.5, 1.5, 1.0)
    reference = rectangle((16, 12, 12), (slice(4, 10), slice(3, 8), slice(3, 8))).astype(bool)
    prediction = np.roll(reference, 2, axis=0)
    result = compare_masks(reference, prediction, spacing)
    assert result.dice == pytest.approx(2 / 3)
    assert result.hd95_mm == pytest.approx(2 * 0.5)
    assert result.size == pytest.approx(150 * 0.5 * 1.5 * 1.0)


def brute_force_surface_distances(reference: np.ndarray, prediction: np.ndarray, spacing) -> np.ndarray:
    """Independent reference: surface = mask pixels with a face-neighbour outside (padding counts as outside),
    distances by comparing every pair of surface points in mm."""
    def surface_points(mask):
        padded = np.pad(mask, 1)
        inner = tuple(slice(1, -1) for _ in range(mask.ndim))
        touches_outside = np.zeros_like(mask)
        for axis in range(mask.ndim):
            for step in (-1, 1):
                touches_outside |= ~np.roll(padded, step, axis=axis)[inner]
        return np.argwhere(mask & touches_outside) * np.asarray(spacing)
    a, b = surface_points(reference), surface_points(prediction)
    pairwise = cdist(a, b)
    return np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)])


@pytest.mark.parametrize("shape, spacing, radii, shift", [
    ((40, 50), (0.7, 1.3), (9.0, 11.0), (3, -4)),
    ((14, 24, 24), (2.0, 0.6, 0.9), (4.0, 8.0, 7.0), (1, 2, -3)),
])
def test_shifted_discs_and_ellipsoids_match_a_brute_force_reference(shape, spacing, radii, shift):
    grid = np.indices(shape)
    centre = [s / 2 for s in shape]
    reference = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1
    prediction = sum(((g - c - d) / r) ** 2 for g, c, r, d in zip(grid, centre, radii, shift)) <= 1
    result = compare_masks(reference, prediction, spacing)
    distances = brute_force_surface_distances(reference, prediction, spacing)
    assert result.dice == pytest.approx(2 * (reference & prediction).sum() / (reference.sum() + prediction.sum()))
    assert result.hd95_mm == pytest.approx(np.percentile(distances, 95))
    assert result.msd_mm == pytest.approx(distances.mean())
    assert 0 < result.dice < 1 and result.hd95_mm > 0


def test_empty_masks_follow_the_stated_convention():
    empty, square = np.zeros((10, 10), bool), rectangle((10, 10), (slice(2, 5), slice(2, 5))).astype(bool)
    both = compare_masks(empty, empty, (1.0, 1.0))
    assert (both.dice, both.hd95_mm, both.msd_mm, both.empty) == (1.0, 0.0, 0.0, "both")
    for reference, prediction, which in ((empty, square, "reference"), (square, empty, "prediction")):
        one = compare_masks(reference, prediction, (1.0, 2.0))
        assert one.dice == 0.0 and math.isnan(one.hd95_mm) and math.isnan(one.msd_mm) and one.empty == which
    assert compare_masks(empty, square, (1.0, 2.0)).size == pytest.approx(18.0)


# ---------------------------------------------------------------- statistics

def test_paired_difference_and_wilcoxon_edge_cases():
    reference = {f"c{i}": 0.9 for i in range(6)}
    worse = {f"c{i}": 0.9 - 0.01 * (i + 1) for i in range(6)}
    difference = paired_difference(reference, worse)
    assert difference["mean"] == pytest.approx(-0.035) and difference["n_pairs"] == 6
    # six differences of one sign and distinct size: the exact two-sided p-value is 2 / 2**6
    assert difference["p_value"] == pytest.approx(2 / 2 ** 6)

    same = paired_difference(reference, dict(reference))
    assert same["p_value"] == 1.0 and same["mean"] == 0.0 and "zero" in same["note"]

    worse["c5"] = math.nan  # an undefined value drops its case from the pairs: 5 pairs are too few
    too_few = paired_difference(reference, worse)
    assert too_few["n_pairs"] == 5 and math.isnan(too_few["p_value"]) and "fewer than 6" in too_few["note"]


# ---------------------------------------------------------------- the command and its reports

@pytest.fixture
def two_model_camus(tmp_path: Path) -> dict:
    """6 CAMUS-like 2D cases, cases.csv, a perfect model and one shifted by 1..6 rows (distinct Dice drops)."""
    labels_dir = dataset_folder(tmp_path / "Dataset501_CAMUS", CAMUS_LABELS, 6)
    spacing = (0.4, 0.6)
    rows = []
    for i in range(6):
        case = f"patient{i:04d}"
        write_labels(camus_like(), spacing, labels_dir / f"{case}.nii.gz")
        write_labels(camus_like(), spacing, tmp_path / "pred_nnunet" / f"{case}.nii.gz")
        write_labels(camus_like(shift_rows=i + 1), spacing, tmp_path / "pred_msv" / f"{case}.nii.gz")
        rows.append({"case": case, "patient": f"p{i}", "phase": "ED" if i % 2 == 0 else "ES",
                     "view": "2CH" if i < 3 else "4CH", "image_quality": ("Good", "Medium", "Poor")[i % 3]})
    with open(labels_dir.parent / "cases.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "pred_msv" / "plans.json").write_text("{}")  # nnU-Net writes such files beside predictions
    return {"gt": labels_dir, "nnunet": tmp_path / "pred_nnunet", "msv": tmp_path / "pred_msv",
            "out": tmp_path / "report"}


def test_command_help():
    result = run_command(["msvmamba_evaluate", "--help"])
    assert "--pred NAME=PRED_DIR" in result.stdout and "--allow-missing" in result.stdout


def test_command_compares_two_models_and_its_reports_agree(two_model_camus):
    d = two_model_camus
    result = run_command(["msvmamba_evaluate", "--gt", str(d["gt"]), "--pred", f"nnU-Net={d['nnunet']}",
                          "--pred", f"MSV={d['msv']}", "-o", str(d["out"]), "-np", "2"])
    assert "evaluating cases" in result.stderr  # the progress bar
    assert "LV_endo" in result.stdout and "p=0.0312" in result.stdout

    rows = read_rows(d["out"] / "metrics_per_case.csv")
    assert list(rows[0]) == ["model", "case", "structure", "dice", "hd95_mm", "msd_mm", "size", "size_gt",
                             "empty", "phase", "view", "image_quality"]
    assert len(rows) == 2 * 6 * 4
    assert {r["structure"] for r in rows} == {"LV_endo", "LV_epi", "myocardium", "LA"}
    assert all(float(r["dice"]) == 1.0 and float(r["hd95_mm"]) == 0.0 for r in rows if r["model"] == "nnU-Net")
    endo = {r["case"]: r for r in rows if r["model"] == "MSV" and r["structure"] == "LV_endo"}
    for i in range(6):  # the 15-row cavity moved down i+1 rows of 0.4 mm
        row = endo[f"patient{i:04d}"]
        assert float(row["dice"]) == pytest.approx(1 - (i + 1) / 15)
        assert float(row["size"]) == pytest.approx(15 * 16 * 0.4 * 0.6, rel=1e-5)
        assert row["phase"] == ("ED" if i % 2 == 0 else "ES")

    summary = json.loads((d["out"] / "summary.json").read_text())
    assert summary["reference_model"] == "nnU-Net" and summary["n_cases"] == 6
    assert summary["labels"] == {"1": "LV_cavity", "2": "LV_myocardium", "3": "left_atrium"}
    assert summary["size_unit"] == "mm²"
    markdown = (d["out"] / "summary.md").read_text()
    for structure in ("LV_endo", "LV_epi", "myocardium", "LA"):
        for model in ("nnU-Net", "MSV"):
            dice = [float(r["dice"]) for r in rows if r["model"] == model and r["structure"] == structure]
            stats = summary["results"][structure]["all"][model]["dice"]
            assert stats["mean"] == pytest.approx(np.mean(dice)) and stats["std"] == pytest.approx(np.std(dice, ddof=1))
            assert f"| all | {model} | 6 | {100 * stats['mean']:.2f} ± {100 * stats['std']:.2f} |" in markdown
        difference = summary["results"][structure]["all"]["MSV"]["paired_difference"]["dice"]
        dice_of = {m: [float(r["dice"]) for r in rows if r["model"] == m and r["structure"] == structure]
                   for m in ("nnU-Net", "MSV")}
        assert difference["mean"] == pytest.approx(np.mean(np.subtract(dice_of["MSV"], dice_of["nnU-Net"])))
        assert f"{100 * difference['mean']:+.2f} (p={difference['p_value']:.3g})" in markdown
    lv_endo = summary["results"]["LV_endo"]
    assert lv_endo["all"]["MSV"]["paired_difference"]["dice"]["p_value"] == pytest.approx(2 / 2 ** 6)
    assert set(lv_endo) == {"all", "phase=ED", "phase=ES", "view=2CH", "view=4CH", "image_quality=Good",
                            "image_quality=Medium", "image_quality=Poor"}
    assert lv_endo["phase=ED"]["MSV"]["n_cases"] == 3
    assert lv_endo["phase=ED"]["MSV"]["paired_difference"]["dice"]["p_value"] is None  # 3 pairs: too few
    assert "| phase=ED | MSV | 3 |" in markdown and "p n/a" in markdown
    assert "both masks empty: Dice 1, HD95 0, MSD 0" in markdown

    png = d["out"] / "boxplot.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(png).shape
    assert height > 400 and width > 800


def test_spacing_is_read_from_the_files_in_the_right_axis_order(tmp_path, capsys):
    labels_dir = dataset_folder(tmp_path / "ds", {"background": 0, "LV_cavity": 1}, 1)
    reference = rectangle((30, 30), (slice(10, 16), slice(5, 25)))
    write_labels(reference, (ROW_SPACING, COLUMN_SPACING), labels_dir / "a.nii.gz")
    write_labels(np.roll(reference, 2, axis=0), (ROW_SPACING, COLUMN_SPACING), tmp_path / "pred" / "a.nii.gz")
    status, _, _ = evaluate(["--gt", str(labels_dir), "--pred", f"m={tmp_path / 'pred'}", "-o", str(tmp_path / "o")],
                            capsys)
    assert status == 0
    (row,) = read_rows(tmp_path / "o" / "metrics_per_case.csv")
    assert float(row["hd95_mm"]) == pytest.approx(1.0) and float(row["msd_mm"]) == pytest.approx(78 / 96)
    assert float(row["dice"]) == pytest.approx(2 / 3) and float(row["size"]) == pytest.approx(120.0)


def test_echonet_like_labels_without_dataset_json_give_lv_endo_only(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for i in range(3):
        cavity = rectangle((32, 32), (slice(8, 20), slice(10, 22)))
        write_labels(cavity, (1.0, 1.0), gt / f"video{i}_ED.nii.gz")
        write_labels(np.roll(cavity, 1, axis=1), (1.0, 1.0), pred / f"video{i}_ED.nii.gz")
    # EchoNet's cases.csv has a phase but no view; video2 has no row and a column is unknown: both tolerated
    (tmp_path / "cases.csv").write_text("case,phase,split\nvideo0_ED,ED,TEST\nvideo1_ED,ES,TEST\n")
    status, out, _ = evaluate(["--gt", str(gt), "--pred", str(pred), "-o", str(tmp_path / "o")], capsys)
    assert status == 0
    assert "no dataset.json" in out and "inferred" in out and "in pixels" in out
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert list(summary["results"]) == ["LV_endo"] and list(summary["models"]) == ["pred"]
    assert "inferred" in summary["labels_source"]
    assert list(summary["results"]["LV_endo"]) == ["all", "phase=ED", "phase=ES"]
    rows = read_rows(tmp_path / "o" / "metrics_per_case.csv")
    assert {r["structure"] for r in rows} == {"LV_endo"} and len(rows) == 3
    assert [r["phase"] for r in rows] == ["ED", "ES", ""] and "split" not in rows[0]
    assert float(rows[0]["dice"]) == pytest.approx(2 * 11 * 12 / (2 * 144))


def test_case_descriptions_tolerate_missing_columns(tmp_path):
    notes = []
    (tmp_path / "no_case.csv").write_text("video,phase\nv0,ED\n")
    assert load_case_metadata(tmp_path / "no_case.csv", notes) == {} and "no 'case' column" in notes[0]
    (tmp_path / "camus.csv").write_text("case,view,phase,image_quality\np1_2CH_ED,2CH,ED,Poor\np1_2CH_17,2CH,17,\n")
    metadata = load_case_metadata(tmp_path / "camus.csv", notes)
    assert metadata == {"p1_2CH_ED": {"phase": "ED", "view": "2CH", "image_quality": "Poor"},
                        "p1_2CH_17": {"phase": "17", "view": "2CH"}}
    assert subset_value("phase", "17") == "other frames" and subset_value("phase", "es") == "ES"


def test_3d_volumes_are_scored_in_cubic_millimetres(tmp_path, capsys):
    labels_dir = dataset_folder(tmp_path / "ds", CAMUS_LABELS, 1)
    box = rectangle((16, 12, 12), (slice(4, 10), slice(3, 8), slice(3, 8)))
    spacing = (0.5, 1.5, 1.0)
    write_labels(box, spacing, labels_dir / "vol.nii.gz")
    write_labels(np.roll(box, 2, axis=0), spacing, tmp_path / "pred" / "vol.nii.gz")
    status, _, _ = evaluate(["--gt", str(labels_dir), "--pred", f"m={tmp_path / 'pred'}", "-o", str(tmp_path / "o")],
                            capsys)
    assert status == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["dimensions"] == [3] and summary["size_unit"] == "mm³"
    lv_endo = summary["results"]["LV_endo"]["all"]["m"]
    assert lv_endo["dice"]["mean"] == pytest.approx(2 / 3) and lv_endo["hd95_mm"]["mean"] == pytest.approx(1.0)
    assert lv_endo["size"]["mean"] == pytest.approx(150 * 0.75)
    assert summary["results"]["LA"]["all"]["m"]["n_both_empty"] == 1  # no label 3 anywhere


def test_empty_masks_are_counted_in_the_reports(tmp_path, capsys):
    labels_dir = dataset_folder(tmp_path / "ds", CAMUS_LABELS, 2)
    no_atrium = camus_like()
    no_atrium[no_atrium == 3] = 0
    write_labels(camus_like(), (1.0, 1.0), labels_dir / "with_la.nii.gz")
    write_labels(no_atrium, (1.0, 1.0), labels_dir / "without_la.nii.gz")
    for case in ("with_la", "without_la"):  # a model that always draws an atrium, and one that draws nothing
        write_labels(camus_like(), (1.0, 1.0), tmp_path / "always" / f"{case}.nii.gz")
        write_labels(np.zeros((48, 40)), (1.0, 1.0), tmp_path / "nothing" / f"{case}.nii.gz")
    status, _, _ = evaluate(["--gt", str(labels_dir), "--pred", f"always={tmp_path / 'always'}",
                             "--pred", f"nothing={tmp_path / 'nothing'}", "-o", str(tmp_path / "o")], capsys)
    assert status == 0
    rows = read_rows(tmp_path / "o" / "metrics_per_case.csv")
    la = {(r["model"], r["case"]): r for r in rows if r["structure"] == "LA"}
    assert la[("always", "without_la")]["empty"] == "reference" and la[("always", "without_la")]["hd95_mm"] == "nan"
    assert la[("nothing", "without_la")]["empty"] == "both" and float(la[("nothing", "without_la")]["dice"]) == 1.0
    assert la[("nothing", "with_la")]["empty"] == "prediction"
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    always, nothing = summary["results"]["LA"]["all"]["always"], summary["results"]["LA"]["all"]["nothing"]
    assert (always["n_one_empty"], always["n_both_empty"]) == (1, 0)
    assert (nothing["n_one_empty"], nothing["n_both_empty"]) == (1, 1)
    assert always["dice"]["mean"] == pytest.approx(0.5) and always["hd95_mm"] == {"mean": 0.0, "std": None, "n": 1}
    assert summary["results"]["LV_endo"]["all"]["nothing"]["hd95_mm"]["mean"] is None  # every distance undefined
    assert "| all | always | 2 | 50.00 ± 70.71 |" in (tmp_path / "o" / "summary.md").read_text()
    assert (tmp_path / "o" / "boxplot.png").stat().st_size > 0


# ---------------------------------------------------------------- bad input

def break_shape(d: dict) -> str:
    write_labels(camus_like()[:40], (0.4, 0.6), d["msv"] / "patient0002.nii.gz")
    return "patient0002: shape"


def break_spacing(d: dict) -> str:
    write_labels(camus_like(), (0.4, 0.7), d["msv"] / "patient0003.nii.gz")
    return "patient0003: spacing"


def break_labels(d: dict) -> str:
    labels = camus_like()
    labels[0, 0] = 5
    write_labels(labels, (0.4, 0.6), d["msv"] / "patient0004.nii.gz")
    return "patient0004 (model MSV): label value(s) [5] not in the dataset's labels"


def remove_case(d: dict) -> str:
    (d["msv"] / "patient0001.nii.gz").unlink()
    return "has no prediction for case patient0001"


@pytest.mark.parametrize("break_input", [break_shape, break_spacing, break_labels, remove_case])
def test_bad_input_is_one_line_naming_the_case(two_model_camus, capsys, break_input):
    d = two_model_camus
    expected = break_input(d)
    status, _, err = evaluate(["--gt", str(d["gt"]), "--pred", f"nnU-Net={d['nnunet']}", "--pred", f"MSV={d['msv']}",
                               "-o", str(d["out"])], capsys)
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(error_lines) == 1, err
    assert expected in error_lines[0] and str(d["msv"]) in error_lines[0]


def test_allow_missing_reports_the_missing_case_and_goes_on(two_model_camus, capsys):
    d = two_model_camus
    remove_case(d)
    status, out, _ = evaluate(["--gt", str(d["gt"]), "--pred", f"nnU-Net={d['nnunet']}", "--pred", f"MSV={d['msv']}",
                               "-o", str(d["out"]), "--allow-missing"], capsys)
    assert status == 0 and "patient0001" in out
    summary = json.loads((d["out"] / "summary.json").read_text())
    assert summary["missing_cases"] == {"MSV": ["patient0001"]}
    lv_endo = summary["results"]["LV_endo"]["all"]
    assert lv_endo["MSV"]["n_cases"] == 5 and lv_endo["nnU-Net"]["n_cases"] == 6
    assert lv_endo["MSV"]["paired_difference"]["dice"]["n_pairs"] == 5
    assert "Missing predictions of MSV: patient0001" in (d["out"] / "summary.md").read_text()


def test_bad_arguments_are_one_line_errors(two_model_camus, capsys, tmp_path):
    d = two_model_camus
    status, _, err = evaluate(["--gt", str(d["gt"]), "--pred", f"a={tmp_path / 'nowhere'}"], capsys)
    assert status == 2 and err.strip() == f"error: {tmp_path / 'nowhere'}: prediction folder of model a does not exist"
    status, _, err = evaluate(["--gt", str(d["gt"]), "--pred", f"a={d['msv']}", "--pred", f"a={d['nnunet']}"], capsys)
    assert status == 2 and "given twice" in err
    (d["gt"].parent / "dataset.json").write_text('{"labels": {"background": 0, "LV_cavity": 1}}')
    status, _, err = evaluate(["--gt", str(d["gt"]), "--pred", f"a={d['msv']}"], capsys)
    assert status == 2 and err.strip() == f"error: {d['gt'].parent / 'dataset.json'}: has no 'file_ending' entry"
    shutil.rmtree(d["gt"])
    status, _, err = evaluate(["--gt", str(d["gt"]), "--pred", f"a={d['msv']}"], capsys)
    assert status == 2 and err.startswith(f"error: {d['gt']}:")


def test_output_naming_an_existing_file_is_one_line_before_any_work(two_model_camus, capsys, tmp_path):
    d = two_model_camus
    a_file = tmp_path / "report.txt"
    a_file.write_text("my notes")
    status, _, err = evaluate(["--gt", str(d["gt"]), "--pred", f"a={d['msv']}", "-o", str(a_file)], capsys)
    assert status == 2
    assert err == f"error: {a_file}: exists and is not a folder; -o names the folder for the reports\n"
    assert a_file.read_text() == "my notes"


@pytest.mark.parametrize("content, problem", [
    (b"not an image at all", "unreadable: corrupt or truncated gzip stream"),
    (gzip.compress(b"\x5c\x01\x00\x00 broken NIfTI"), "cannot be read as a segmentation")],
    ids=["garbage", "gzip of a broken header"])
def test_corrupt_prediction_file_is_one_short_line(two_model_camus, capsys, content, problem):
    d = two_model_camus
    broken = d["msv"] / "patient0002.nii.gz"
    broken.write_bytes(content)
    status, _, err = evaluate(["--gt", str(d["gt"]), "--pred", f"nnU-Net={d['nnunet']}", "--pred", f"MSV={d['msv']}",
                               "-o", str(d["out"])], capsys)
    assert status == 2
    line = err.rstrip("\n").split("\n")[-1]  # the last line, after the closed progress bar
    assert err.endswith(f"\n{line}\n") and line.startswith(f"error: {broken}: {problem}")
    assert "Traceback" not in err and ".cxx" not in line and len(line) < 400 + len(str(broken)), line
    assert not d["out"].exists()


# ---------------------------------------------------------------- numbers that must not be measured at all

def evaluate_command(d: dict) -> subprocess.CompletedProcess:
    return run_command(["msvmamba_evaluate", "--gt", str(d["gt"]), "--pred", f"nnU-Net={d['nnunet']}",
                        "--pred", f"MSV={d['msv']}", "-o", str(d["out"]), "-np", "1"], check=False)


def assert_one_error_line_and_no_report(result, d: dict, expected: str) -> None:
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(error_lines) == 1, result.stderr
    assert re.fullmatch(expected, error_lines[0]), error_lines[0]
    assert "Traceback" not in result.stderr
    assert not d["out"].exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, -0.4])
@pytest.mark.parametrize("folder", ["gt", "msv"])
def test_a_header_spacing_that_is_not_a_positive_finite_number_is_refused(two_model_camus, folder, value):
    """SimpleITK reads such a spacing as 1 mm with only a warning: HD95 would be in the wrong unit, exit 0."""
    d = two_model_camus
    broken = d[folder] / "patient0003.nii.gz"
    set_nifti_pixdim(broken, 1, value)
    result = evaluate_command(d)
    assert_one_error_line_and_no_report(result, d, rf"error: {re.escape(str(broken))}: spacing {value:g} x 0.4 mm "
                                                   rf"\(pixdim\) is not a positive finite number; .*")


def test_nan_voxels_that_simpleitk_reads_as_zero_are_refused(two_model_camus):
    d = two_model_camus
    broken = d["msv"] / "patient0001.nii.gz"
    labels = camus_like().astype(np.float32)
    labels[20, 20] = np.nan
    write_float_nifti(labels.T, (0.4, 0.6), broken)  # (x, y) = (rows, columns) as write_labels lays them out
    result = evaluate_command(d)
    assert_one_error_line_and_no_report(result, d, rf"error: {re.escape(str(broken))}: contains 1 NaN or infinite "
                                                   rf"voxel value\(s\)")


@pytest.mark.parametrize("folder", ["gt", "msv"])
def test_nii_beside_nii_gz_of_one_name_is_refused_naming_both(two_model_camus, folder):
    """ITK opens x.nii when asked for x.nii.gz: one file's labels could be scored under the other's name."""
    d = two_model_camus
    twin = d[folder] / "patient0002.nii"
    write_labels(camus_like(shift_rows=9), (0.4, 0.6), twin)
    result = evaluate_command(d)
    assert_one_error_line_and_no_report(
        result, d, rf"error: {re.escape(str(d[folder] / 'patient0002.nii.gz'))}: has the same name as "
                   rf"{re.escape(str(twin))} \(.nii and .nii.gz of one name\); remove or rename one of them")


FULL_DISK_WHILE_PLOTTING = """
import errno, os, sys
import matplotlib.figure
def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
matplotlib.figure.Figure.savefig = full_disk
from nnunetv2_msvmamba.evaluation.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_while_writing_the_reports_names_the_output_and_writes_none_of_them(two_model_camus):
    """The box plot is written last: before, the CSV, JSON and Markdown were left behind, and the error named
    '(unnamed file)'."""
    d = two_model_camus
    d["out"].mkdir()
    (d["out"] / "my_notes.txt").write_text("kept")
    result = subprocess.run([sys.executable, "-c", FULL_DISK_WHILE_PLOTTING, "--gt", str(d["gt"]),
                             "--pred", f"MSV={d['msv']}", "-o", str(d["out"]), "-np", "1"],
                            capture_output=True, text=True, timeout=600)
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and error_lines == [f"error: {d['out']}: no space left on the device"], \
        result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in d["out"].iterdir()) == ["my_notes.txt"]
