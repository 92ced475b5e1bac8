"""msvmamba_convert_echonet on a small EchoNet-Dynamic release in the real layout (MJPG AVIs written with
OpenCV, FileList.csv and VolumeTracings.csv with the release's headers), quirks included."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import skimage.draw

from dataset_conversion.echonet import QuirkCounts, main
from dataset_conversion.echonet_synthetic import SyntheticVideo, write_avi, write_release
from helpers.echonet_fixtures import (DATASET, EXPECTED, EXPECTED_QUIRKS, N_FRAMES, PERIOD, PHASES, RECTANGLE_COLUMNS,
                                      RECTANGLE_ROWS, cases_of, fixture_release_under)
from helpers.nnunet import NnUNetFolders, run_command



@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, dict[str, SyntheticVideo]]:
    return fixture_release_under(tmp_path)


@pytest.fixture
def converted(release, nnunet_folders: NnUNetFolders, capsys: pytest.CaptureFixture) -> tuple[Path, str]:
    """The fixture release converted with two worker processes: (dataset folder, printed summary)."""
    assert main([str(release[0]), "-np", "2"]) == 0
    return nnunet_folders.raw / DATASET, capsys.readouterr().out


def read_nifti(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetSpacing()


def all_cases() -> list[tuple[str, str, str]]:
    """(case id, images folder, labels folder) of every case the conversion must produce."""
    return [(f"{video}_{phase}", *(("imagesTs", "labelsTs") if e.split == "TEST" else ("imagesTr", "labelsTr")))
            for video, e in EXPECTED.items() for phase in PHASES]


def tracing_rows(root: Path) -> dict[tuple[str, int], np.ndarray]:
    """VolumeTracings.csv read independently of the converter: (video, frame) -> rows in file order."""
    table = pd.read_csv(root / "VolumeTracings.csv")
    table["video"] = table["FileName"].str.replace(".avi", "", regex=False)
    return {(video, int(frame)): group[["X1", "Y1", "X2", "Y2"]].to_numpy()
            for (video, frame), group in table.groupby(["video", "Frame"], sort=False)}


def authors_mask(t: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The LV mask exactly as echonet/datasets/echo.py of the EchoNet-Dynamic authors draws it from a traced
    frame's rows (X1, Y1, X2, Y2), all of them, however many: the first row is the long axis, the outline runs
    down the X1/Y1 wall and back up the X2/Y2 wall."""
    x1, y1, x2, y2 = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    x = np.concatenate((x1[1:], np.flip(x2[1:])))
    y = np.concatenate((y1[1:], np.flip(y2[1:])))
    r, c = skimage.draw.polygon(np.rint(y).astype(int), np.rint(x).astype(int), shape)
    mask = np.zeros(shape, np.uint8)
    mask[r, c] = 1
    return mask


def summary_count(summary: str, quirk: str) -> int:
    match = re.search(rf"^\s+(\d+)\s+{re.escape(QuirkCounts.DESCRIPTIONS[quirk])}$", summary, re.MULTILINE)
    assert match, f"no line for {quirk!r} in the summary:\n{summary}"
    return int(match.group(1))


def file_bytes(*folders: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder.parent)): p.read_bytes()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_case_dataset_json_and_summary(converted):
    dataset, summary = converted
    def names(folder: str) -> set[str]:
        return {p.name for p in (dataset / folder).iterdir()}

    training = cases_of("TRAIN") | cases_of("VAL")
    assert names("imagesTr") == {f"{c}_0000.nii.gz" for c in training}
    assert names("labelsTr") == {f"{c}.nii.gz" for c in training}
    assert names("imagesTs") == {f"{c}_0000.nii.gz" for c in cases_of("TEST")}
    assert names("labelsTs") == {f"{c}.nii.gz" for c in cases_of("TEST")}
    assert sorted(p.name for p in dataset.iterdir()) == ["cases.csv", "dataset.json", "imagesTr", "imagesTs",
                                                        "labelsTr", "labelsTs"]

    dataset_json = json.loads((dataset / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "LV_cavity": 1}
    assert dataset_json["channel_names"] == {"0": "US"}
    assert dataset_json["file_ending"] == ".nii.gz"
    assert dataset_json["numTraining"] == 12

    for quirk, count in EXPECTED_QUIRKS.items():
        assert summary_count(summary, quirk) == count, quirk
    assert "converted: 4 TRAIN, 2 VAL, 2 TEST" in summary
    assert summary.endswith("\n  traced frames without 21 rows, drawn from all their rows:\n"
                            "    0XAXISONLY.avi frame 10: 1 row\n")


def test_ed_es_assignment_and_cases_csv(converted, release):
    dataset, _ = converted
    cases = pd.read_csv(dataset / "cases.csv").set_index("case")
    file_list = pd.read_csv(release[0] / "FileList.csv")
    file_list["video"] = file_list["FileName"].str.replace(".avi", "", regex=False)
    file_list = file_list.set_index("video")
    assert sorted(cases.index) == sorted(c for c, _, _ in all_cases())
    for video, expected in EXPECTED.items():
        ed, es = cases.loc[f"{video}_ED"], cases.loc[f"{video}_ES"]
        assert (ed["frame"], es["frame"]) == (expected.end_diastole, expected.end_systole), video
        assert ed["lv_area_pixels"] > es["lv_area_pixels"]
        for row in (ed, es):
            assert row["video"] == video and row["split"] == expected.split
            assert bool(row["csv_order_agrees"]) == expected.csv_order_agrees, video
            for column in ("EF", "EDV", "ESV", "FPS", "NumberOfFrames"):
                assert row[column] == pytest.approx(file_list.loc[video, column]), (video, column)
        assert (ed["phase"], es["phase"]) == ("ED", "ES")


def test_masks_match_independent_rasterisations(converted, release):
    """Exactly the authors' recipe (written out here from the raw CSV rows), and OpenCV's polygon fill
    of the same outline everywhere but on the outline itself, where the two fills' edge rules differ."""
    dataset, _ = converted
    root, _ = release
    cases = pd.read_csv(dataset / "cases.csv").set_index("case")
    rows_of = tracing_rows(root)
    for case, _, labels in all_cases():
        label, spacing = read_nifti(dataset / labels / f"{case}.nii.gz")
        assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1} and spacing == (1.0, 1.0)
        t = rows_of[(cases.loc[case, "video"], int(cases.loc[case, "frame"]))]
        np.testing.assert_array_equal(label, authors_mask(t, (112, 112)), err_msg=case)

        x = np.concatenate((t[1:, 0], np.flip(t[1:, 2])))
        y = np.concatenate((t[1:, 1], np.flip(t[1:, 3])))
        outline = np.stack([np.rint(x), np.rint(y)], axis=1).astype(np.int32)
        opencv = cv2.fillPoly(np.zeros((112, 112), np.uint8), [outline], 1)
        near_outline = cv2.polylines(np.zeros((112, 112), np.uint8), [outline], True, 1, thickness=3)
        away = near_outline == 0
        np.testing.assert_array_equal(label[away], opencv[away], err_msg=case)
        assert label.sum() == cases.loc[case, "lv_area_pixels"]


def test_rectangle_tracing_has_its_known_area_and_clipped_outline_stays_in_frame(converted):
    dataset, _ = converted
    rectangle, _ = read_nifti(dataset / "labelsTr" / "0XVAL0001_ED.nii.gz")
    expected = np.zeros((112, 112), np.uint8)
    expected[RECTANGLE_ROWS.start:RECTANGLE_ROWS.stop, RECTANGLE_COLUMNS.start:RECTANGLE_COLUMNS.stop] = 1
    np.testing.assert_array_equal(rectangle, expected)
    assert rectangle.sum() == 39 * 31

    # the ED outline of 0XTRAIN0003 reaches x = -4: the cavity is cut at the frame's left edge
    clipped, _ = read_nifti(dataset / "labelsTr" / "0XTRAIN0003_ED.nii.gz")
    rows_at_edge = np.flatnonzero(clipped[:, 0])
    assert len(rows_at_edge) > 20 and clipped[rows_at_edge, 1].all()


def test_frames_equal_decoded_video_frames(converted, release):
    dataset, _ = converted
    root, videos = release
    cases = pd.read_csv(dataset / "cases.csv").set_index("case")
    for case, images, _ in all_cases():
        video = cases.loc[case, "video"]
        capture = cv2.VideoCapture(str(root / "Videos" / f"{video}.avi"))
        decoded = []
        while (frame := capture.read())[0]:
            decoded.append(cv2.cvtColor(frame[1], cv2.COLOR_BGR2GRAY))
        capture.release()
        image, spacing = read_nifti(dataset / images / f"{case}_0000.nii.gz")
        frame_index = int(cases.loc[case, "frame"])
        assert image.dtype == np.uint8 and spacing == (1.0, 1.0)
        np.testing.assert_array_equal(image, decoded[frame_index], err_msg=case)
        # and it is the source frame the tracing belongs to, not a neighbour or a transposed copy
        error_to_source = [np.abs(image.astype(float) - f).mean() for f in videos[video].frames()]
        assert int(np.argmin(error_to_source)) == frame_index and error_to_source[frame_index] < 3, case


def test_splits_official_fold_then_video_level_folds(converted, nnunet_folders):
    splits = json.loads((nnunet_folders.preprocessed / DATASET / "splits_final.json").read_text())
    assert len(splits) == 5
    assert set(splits[0]["train"]) == cases_of("TRAIN") and set(splits[0]["val"]) == cases_of("VAL")
    trainval = cases_of("TRAIN") | cases_of("VAL")
    validated = []
    for fold in splits[1:]:
        train, val = set(fold["train"]), set(fold["val"])
        assert train | val == trainval and not train & val and val
        validated += fold["val"]
        for case in val:  # a video's two cases never straddle train and validation
            assert case.rsplit("_", 1)[0] + "_ED" in val and case.rsplit("_", 1)[0] + "_ES" in val
    assert sorted(validated) == sorted(trainval)


def test_spacing_and_dataset_id_options(release, nnunet_folders, capsys):
    assert main([str(release[0]), "-d", "777", "--spacing", "0.25", "-np", "1"]) == 0
    dataset = nnunet_folders.raw / "Dataset777_EchoNetDynamic"
    for path in (dataset / "imagesTr" / "0XTRAIN0001_ED_0000.nii.gz", dataset / "labelsTs" / "0XTEST0001_ES.nii.gz"):
        assert read_nifti(path)[1] == (0.25, 0.25)
    assert (nnunet_folders.preprocessed / "Dataset777_EchoNetDynamic" / "splits_final.json").is_file()


def test_rerun_needs_overwrite_and_gives_identical_files(converted, release, nnunet_folders, capsys):
    dataset, _ = converted
    first = file_bytes(dataset, nnunet_folders.preprocessed / DATASET)
    assert main([str(release[0]), "-np", "1"]) == 2
    assert re.fullmatch(rf"error: {re.escape(str(dataset))}: already exists; pass --overwrite to replace it\n",
                        capsys.readouterr().err)
    assert main([str(release[0]), "-np", "1", "--overwrite"]) == 0
    assert file_bytes(dataset, nnunet_folders.preprocessed / DATASET) == first
    assert sorted(p.name for p in nnunet_folders.raw.iterdir()) == [DATASET]


def test_failed_overwrite_keeps_the_previous_dataset(converted, release, nnunet_folders, capsys):
    dataset, _ = converted
    before = file_bytes(nnunet_folders.raw, nnunet_folders.preprocessed)
    (release[0] / "Videos" / "0XTEST0001.avi").write_bytes(b"RIFF\0\0\0\0AVI not a video")
    assert main([str(release[0]), "-np", "1", "--overwrite"]) == 2
    assert "unreadable video" in capsys.readouterr().err
    assert file_bytes(nnunet_folders.raw, nnunet_folders.preprocessed) == before


def set_field(name: str, line: int, column: str, value: str | None, problem: str):
    """A bad input: in CSV `name`, the field of `column` on `line` (1 = header) set to `value`, or removed
    when `value` is None."""
    def edit(root: Path) -> tuple[Path, str]:
        lines = (root / name).read_text().splitlines()
        index = lines[0].split(",").index(column)
        fields = lines[line - 1].split(",")
        fields[index:index + 1] = [] if value is None else [value]
        lines[line - 1] = ",".join(fields)
        (root / name).write_text("\n".join(lines) + "\n")
        return root / name, problem
    return edit


def corrupt_avi(root: Path) -> tuple[Path, str]:
    path = root / "Videos" / "0XTRAIN0004.avi"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path, "unreadable video: OpenCV cannot open it"


def truncate_avi(root: Path, name: str = "0XTRAIN0001", keep: float = 0.25) -> Path:
    """The first `keep` of the AVI's bytes, as an interrupted download leaves it: OpenCV opens it and decodes
    the frames that are whole, then stops."""
    path = root / "Videos" / f"{name}.avi"
    content = path.read_bytes()
    path.write_bytes(content[:int(len(content) * keep)])
    return path


def truncated_avi(root: Path) -> tuple[Path, str]:
    # 36 frames in FileList.csv, frames 10 and 20 traced, about 9 decodable
    return truncate_avi(root), (r"unreadable video: ends early, only \d of its 36 frames \(NumberOfFrames in "
                                r"FileList.csv\) can be decoded, but frame 20 is traced; truncated or damaged\?")


def header_only_file_list(root: Path) -> tuple[Path, str]:
    path = root / "FileList.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    return path, "lists no video, only its header; nothing to convert"


def remove_video(root: Path) -> tuple[Path, str]:
    path = root / "Videos" / "0XTEST0002.avi"
    path.unlink()
    return path, (r"not found; 1 video\(s\) of FileList.csv are missing from Videos/ \(first: 0XTEST0002\); "
                  r"pass --skip-missing to convert without them")


BAD_INPUTS = {
    "FileList header": set_field("FileList.csv", 1, "FileName", "Filename", r"line 1: malformed header .*"),
    "VolumeTracings header": set_field("VolumeTracings.csv", 1, "Frame", None, r"line 1: malformed header .*"),
    "non-numeric EF": set_field("FileList.csv", 4, "EF", "n/a", r"line 4: EF is not a number: 'n/a'"),
    "non-finite EDV": set_field("FileList.csv", 5, "EDV", "inf", r"line 5: EDV is not a finite number: 'inf'"),
    "non-numeric X1": set_field("VolumeTracings.csv", 30, "X1", "12px",
                                r"line 30: X1 is not a number: '12px'"),
    "fractional frame": set_field("VolumeTracings.csv", 7, "Frame", "10.5",
                                  r"line 7: Frame is not a non-negative whole number: '10.5'"),
    "negative frame": set_field("VolumeTracings.csv", 8, "Frame", "-1",
                                r"line 8: Frame is not a non-negative whole number: '-1'"),
    "unknown split": set_field("FileList.csv", 3, "Split", "HOLDOUT",
                               r"line 3: Split must be one of TRAIN/VAL/TEST, got 'HOLDOUT'"),
    "missing field": set_field("VolumeTracings.csv", 12, "Y2", None, r"line 12: 5 fields, but the header has 6"),
    "duplicate video": set_field("FileList.csv", 3, "FileName", "0XTRAIN0001",
                                 r"line 3: video 0XTRAIN0001 is listed twice \(also on line 2\)"),
    "unreadable AVI": corrupt_avi,
    "truncated AVI": truncated_avi,
    "FileList.csv with only its header": header_only_file_list,
    "missing video": remove_video,
}


@pytest.mark.parametrize("make_bad", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_error_line_and_leaves_nothing(make_bad, release, nnunet_folders, capsys):
    path, problem = make_bad(release[0])
    assert main([str(release[0]), "-np", "2"]) == 2
    errors = [line for line in re.split(r"[\r\n]+", capsys.readouterr().err) if line.startswith("error")]
    assert len(errors) == 1 and re.fullmatch(rf"error: {re.escape(str(path))}: {problem}", errors[0]), errors
    assert list(nnunet_folders.raw.iterdir()) == [] and list(nnunet_folders.preprocessed.iterdir()) == []


def test_dataset_id_used_by_another_dataset(release, nnunet_folders, capsys):
    other = nnunet_folders.raw / "Dataset602_Other"
    other.mkdir()
    assert main([str(release[0])]) == 2
    assert capsys.readouterr().err == (f"error: {other}: dataset id 602 is already used by this dataset; "
                                       f"choose another id with -d\n")
    assert list(nnunet_folders.raw.iterdir()) == [other] and list(nnunet_folders.preprocessed.iterdir()) == []


def test_skip_missing_converts_the_rest(release, nnunet_folders, capsys):
    (release[0] / "Videos" / "0XTEST0002.avi").unlink()
    assert main([str(release[0]), "-np", "1", "--skip-missing"]) == 0
    summary = capsys.readouterr().out
    assert summary_count(summary, "missing_videos_skipped") == 1 and "converted: 4 TRAIN, 2 VAL, 1 TEST" in summary
    assert {p.name for p in (nnunet_folders.raw / DATASET / "imagesTs").iterdir()} == {
        "0XTEST0001_ED_0000.nii.gz", "0XTEST0001_ES_0000.nii.gz"}


def test_skip_unreadable_lists_the_truncated_and_undecodable_videos(release, nnunet_folders, capsys):
    truncate_avi(release[0])
    corrupt_avi(release[0])
    assert main([str(release[0]), "-np", "2", "--skip-unreadable"]) == 0
    summary = capsys.readouterr().out
    assert summary_count(summary, "unreadable_videos_skipped") == 2
    assert summary_count(summary, "videos_without_two_usable_frames") == EXPECTED_QUIRKS[
        "videos_without_two_usable_frames"]
    assert "converted: 2 TRAIN, 2 VAL, 2 TEST" in summary
    listed = summary.split("skipped as unreadable (--skip-unreadable):\n")[1].splitlines()
    assert [line.split(":")[0].strip() for line in listed] == ["0XTRAIN0001.avi", "0XTRAIN0004.avi"]
    assert "ends early" in listed[0] and "OpenCV cannot open it" in listed[1]
    assert not any(p.name.startswith(("0XTRAIN0001", "0XTRAIN0004"))
                   for p in (nnunet_folders.raw / DATASET / "imagesTr").iterdir())


def test_tracings_exported_twice_give_the_same_masks_and_count_the_repeats(release, nnunet_folders, capsys,
                                                                           tmp_path, monkeypatch):
    root = release[0]
    assert main([str(root), "-np", "1"]) == 0
    once = file_bytes(nnunet_folders.raw / DATASET)
    tracings = root / "VolumeTracings.csv"
    lines = tracings.read_text().splitlines()
    tracings.write_text("\n".join(lines + lines[1:]) + "\n")  # the whole file again, header aside
    capsys.readouterr()
    assert main([str(root), "-np", "1", "--overwrite"]) == 0
    assert file_bytes(nnunet_folders.raw / DATASET) == once  # repeated rows would draw a wrong outline
    assert summary_count(capsys.readouterr().out, "duplicate_tracing_rows") == len(lines) - 1


def decodable_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return count


ENDS_EARLY = ("unreadable video: ends early, frame 35, the last of its 36 frames (NumberOfFrames in FileList.csv), "
              "cannot be decoded; truncated or damaged?")


def download_cut_after_traced_frames(root: Path, video: SyntheticVideo) -> tuple[Path, str]:
    path = truncate_avi(root, video.name, keep=0.8)
    assert 21 < decodable_frames(path) < 36
    return path, ENDS_EARLY


def whole_avi_with_fewer_frames(root: Path, video: SyntheticVideo) -> tuple[Path, str]:
    """A well-formed AVI holding the first 30 of the frames FileList.csv lists."""
    path = root / "Videos" / f"{video.name}.avi"
    write_avi(path, video.frames()[:30], video.fps)
    assert decodable_frames(path) == 30
    return path, ENDS_EARLY


def download_cut_before_a_traced_frame(root: Path, video: SyntheticVideo) -> tuple[Path, str]:
    """Cut inside a frame, which FFmpeg's decoder complains about on stderr unless told not to."""
    path = truncate_avi(root, video.name, keep=0.25)
    decodable = decodable_frames(path)
    assert decodable < 20
    return path, (f"unreadable video: ends early, only {decodable} of its 36 frames (NumberOfFrames in "
                  f"FileList.csv) can be decoded, but frame 20 is traced; truncated or damaged?")


SHORT_AVIS = {"download cut after the traced frames": download_cut_after_traced_frames,
              "whole AVI with fewer frames": whole_avi_with_fewer_frames,
              "download cut before a traced frame": download_cut_before_a_traced_frame}


@pytest.mark.parametrize("skip_unreadable", [False, True], ids=["error", "--skip-unreadable"])
@pytest.mark.parametrize("shorten", SHORT_AVIS.values(), ids=SHORT_AVIS.keys())
def test_avi_shorter_than_listed(shorten, skip_unreadable, release, nnunet_folders):
    """0XTRAIN0001 has 36 frames in FileList.csv and frames 10 and 20 traced; its AVI ends before frame 35.
    Through the installed command: one error line naming the file and nothing written, or with
    --skip-unreadable a listed skip and the dataset without it."""
    root, videos = release
    path, problem = shorten(root, videos["0XTRAIN0001"])
    result = run_command(["msvmamba_convert_echonet", str(root), "-np", "2",
                          *(["--skip-unreadable"] if skip_unreadable else [])], env=nnunet_folders.env(), check=False)
    assert "Traceback" not in result.stderr
    other_lines = [line for line in re.split(r"[\r\n]+", result.stderr)
                   if line and not line.startswith("EchoNet-Dynamic videos:")]  # the progress bar aside
    if not skip_unreadable:
        assert result.returncode == 2, result.stdout + result.stderr
        assert other_lines == [f"error: {path}: {problem}"]
        assert list(nnunet_folders.raw.iterdir()) == [] and list(nnunet_folders.preprocessed.iterdir()) == []
        return
    assert result.returncode == 0 and other_lines == [], result.stderr
    summary = result.stdout
    assert summary_count(summary, "unreadable_videos_skipped") == 1
    assert summary.split("skipped as unreadable (--skip-unreadable):\n")[1].splitlines()[0] == (
        f"    0XTRAIN0001.avi: {problem}")
    assert "converted: 3 TRAIN, 2 VAL, 2 TEST" in summary
    dataset = nnunet_folders.raw / DATASET
    training = (cases_of("TRAIN") | cases_of("VAL")) - {"0XTRAIN0001_ED", "0XTRAIN0001_ES"}
    assert {p.name for p in (dataset / "imagesTr").iterdir()} == {f"{case}_0000.nii.gz" for case in training}
    assert {p.name for p in (dataset / "labelsTr").iterdir()} == {f"{case}.nii.gz" for case in training}
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == len(training)
    splits = json.loads((nnunet_folders.preprocessed / DATASET / "splits_final.json").read_text())
    assert set(splits[0]["train"]) | set(splits[0]["val"]) == training


def test_frames_with_13_31_and_42_rows_are_drawn_from_all_rows_as_the_authors_loader_does(tmp_path, nnunet_folders,
                                                                                         capsys):
    """The authors' loader draws every traced frame from all its rows, whatever their number: such frames are
    converted like any other (the masks equal an independent re-implementation of the authors' drawing), and
    the summary counts and lists every frame without 21 rows."""
    short = SyntheticVideo("0XROWS1331", "TRAIN", N_FRAMES, [10, 20], PERIOD, seed=1)
    twice = SyntheticVideo("0XTWICE42", "VAL", N_FRAMES, [10, 20], PERIOD, seed=2)
    # 0XTWICE42's frame 20: two different tracings of the frame run together, the second shifted half a pixel
    short.tracing_overrides = {10: short.ventricle_at(10).tracing(n_discs=12),
                               20: short.ventricle_at(20).tracing(n_discs=30)}
    twice.tracing_overrides = {20: np.concatenate([twice.tracing_at(20), twice.tracing_at(20) + 0.5])}
    root = tmp_path / "EchoNet-Dynamic"
    write_release(root, [short, twice])

    assert main([str(root), "-np", "1"]) == 0
    summary = capsys.readouterr().out
    assert "converted: 1 TRAIN, 1 VAL, 0 TEST" in summary
    assert summary_count(summary, "frames_with_other_than_21_rows") == 3
    listed = summary.split("traced frames without 21 rows, drawn from all their rows:\n")[1].splitlines()
    assert listed == ["    0XROWS1331.avi frame 10: 13 rows", "    0XROWS1331.avi frame 20: 31 rows",
                      "    0XTWICE42.avi frame 20: 42 rows"]

    dataset = nnunet_folders.raw / DATASET
    cases = pd.read_csv(dataset / "cases.csv").set_index("case")
    rows_of = tracing_rows(root)
    assert {(video, frame): len(rows) for (video, frame), rows in rows_of.items()} == {
        ("0XROWS1331", 10): 13, ("0XROWS1331", 20): 31, ("0XTWICE42", 10): 21, ("0XTWICE42", 20): 42}
    for case in ("0XROWS1331_ED", "0XROWS1331_ES", "0XTWICE42_ED", "0XTWICE42_ES"):
        label, _ = read_nifti(dataset / "labelsTr" / f"{case}.nii.gz")
        frame = int(cases.loc[case, "frame"])
        np.testing.assert_array_equal(label, authors_mask(rows_of[(case[:-3], frame)], (112, 112)), err_msg=case)
        assert label.sum() == cases.loc[case, "lv_area_pixels"] > 0
    for video in ("0XROWS1331", "0XTWICE42"):  # ED the larger of the two drawn areas, ES the smaller
        area = {frame: authors_mask(rows_of[(video, frame)], (112, 112)).sum() for frame in (10, 20)}
        assert (cases.loc[f"{video}_ED", "frame"], cases.loc[f"{video}_ES", "frame"]) == (
            max(area, key=area.get), min(area, key=area.get)), (video, area)
