"""EchoNet-Dynamic -> nnU-Net raw dataset.

Every video with expert tracings gives two 2D cases, `<FileName>_ED` and `<FileName>_ES`: the traced frame as
a grey image and the LV cavity (label 1) rasterised from VolumeTracings.csv exactly as the dataset's authors
do (echonet/datasets/echo.py): from all the frame's rows, however many, the first one the long axis. A tracing
usually has 21 rows (the long axis and 20 disc lines); frames with another number are drawn all the same, and
counted and listed in the summary. TRAIN and VAL go to imagesTr/labelsTr, TEST to imagesTs/labelsTs;
`splits_final.json` gets fold 0 = the official TRAIN/VAL split plus four video-level folds.

A video that cannot be decoded up to its last frame by FileList.csv's NumberOfFrames is truncated or damaged:
an error (with --skip-unreadable, a listed skip), never a quirk. The frames up to the last traced one are
decoded, and then the last listed frame is sought and decoded; the frames between them are not."""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np
import skimage.draw
from nnunetv2.configuration import default_num_processes
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from dataset_conversion.common import (check_targets, dataset_name, expand_to_cases, patient_level_folds,
                                      require_env_folder, run_converter, write_image_2d, write_splits_final)
from nnunetv2_msvmamba.common.arguments import positive_float, positive_int
from nnunetv2_msvmamba.common.atomic import atomic_folder
from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.parallel import parallel_map
from nnunetv2_msvmamba.common.tables import write_csv

DEFAULT_DATASET_ID = 602
SHORT_NAME = "EchoNetDynamic"
FILE_ENDING = ".nii.gz"
LABELS = {"background": 0, "LV_cavity": 1}
SPLITS = ("TRAIN", "VAL", "TEST")
EXTRA_FOLDS = 4
FILE_LIST_COLUMNS = ("FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames",
                     "Split")
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
CASE_COLUMNS = ("case", "video", "phase", "frame", "lv_area_pixels", "EF", "EDV", "ESV", "FPS",
                "NumberOfFrames", "split", "csv_order_agrees")
MISSING_NAMES_SHOWN = 5
AV_LOG_QUIET = -8  # FFmpeg's log level that prints nothing
# A tracing is usually the long axis followed by the 20 disc lines of the method of discs. The authors' loader
# draws a frame with another number of rows all the same, so the converter does too, and lists those frames.
USUAL_TRACING_ROWS = 21


# ---------------------------------------------------------------------------------------------- reading CSVs

@dataclass(frozen=True)
class VideoInfo:
    """One row of FileList.csv."""
    name: str
    ef: float
    esv: float
    edv: float
    frame_height: int
    frame_width: int
    fps: float
    n_frames: int
    split: str


def video_name(file_name: str) -> str:
    """FileName without `.avi`: FileList.csv has no extension in the release, VolumeTracings.csv has one."""
    return file_name[:-4] if file_name.lower().endswith(".avi") else file_name


def read_csv_rows(path: Path, required_columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for every non-blank data row, after checking the header names every required
    column once."""
    if not path.is_file():
        raise InputError(path, "not found; an EchoNet-Dynamic folder has FileList.csv, VolumeTracings.csv "
                                    "and Videos/")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [name.strip() for name in next(reader, [])]
            missing = [c for c in required_columns if c not in header]
            if missing or len(set(header)) != len(header):
                raise InputError(path, f"line 1: malformed header {','.join(header)!r}; expected "
                                            f"{','.join(required_columns)}")
            for values in reader:
                if not any(value.strip() for value in values):
                    continue
                if len(values) != len(header):
                    raise InputError(path, f"line {reader.line_num}: {len(values)} fields, but the header "
                                                f"has {len(header)}")
                yield reader.line_num, {name: value.strip() for name, value in zip(header, values)}
        except (csv.Error, UnicodeDecodeError) as error:
            raise InputError(path, f"line {reader.line_num + 1}: not readable as CSV ({error})") from None


def parse_number(text: str, column: str, path: Path, line: int, whole: bool = False) -> float | int:
    try:
        value = float(text)
    except ValueError:
        raise InputError(path, f"line {line}: {column} is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise InputError(path, f"line {line}: {column} is not a finite number: {text!r}")
    if whole:
        if not value.is_integer() or value < 0:
            raise InputError(path, f"line {line}: {column} is not a non-negative whole number: {text!r}")
        return int(value)
    return value


def read_file_list(path: Path) -> dict[str, VideoInfo]:
    """FileList.csv as {video name: VideoInfo}, in file order."""
    videos: dict[str, VideoInfo] = {}
    first_line: dict[str, int] = {}
    for line, row in read_csv_rows(path, FILE_LIST_COLUMNS):
        name = video_name(row["FileName"])
        if not name:
            raise InputError(path, f"line {line}: FileName is empty")
        if name in videos:
            raise InputError(path, f"line {line}: video {name} is listed twice (also on line "
                                        f"{first_line[name]})")
        split = row["Split"].upper()
        if split not in SPLITS:
            raise InputError(path, f"line {line}: Split must be one of {'/'.join(SPLITS)}, got "
                                        f"{row['Split']!r}")

        def number(column: str, whole: bool = False) -> float | int:
            return parse_number(row[column], column, path, line, whole)

        videos[name] = VideoInfo(name, number("EF"), number("ESV"), number("EDV"), number("FrameHeight", True),
                                 number("FrameWidth", True), number("FPS"), number("NumberOfFrames", True), split)
        first_line[name] = line
    return videos


def read_volume_tracings(path: Path) -> dict[str, dict[int, np.ndarray]]:
    """VolumeTracings.csv as {video name: {frame: rows (X1, Y1, X2, Y2)}}; frames in order of first
    appearance, rows in file order, as the authors' loader collects them."""
    rows_of: dict[str, dict[int, list[tuple[float, ...]]]] = {}
    for line, row in read_csv_rows(path, TRACING_COLUMNS):
        name = video_name(row["FileName"])
        if not name:
            raise InputError(path, f"line {line}: FileName is empty")
        point = tuple(parse_number(row[c], c, path, line) for c in ("X1", "Y1", "X2", "Y2"))
        frame = parse_number(row["Frame"], "Frame", path, line, whole=True)
        rows_of.setdefault(name, {}).setdefault(frame, []).append(point)
    return {name: {frame: np.array(rows, dtype=float) for frame, rows in frames.items()}
            for name, frames in rows_of.items()}


def drop_repeated_rows(tracings: dict[str, dict[int, np.ndarray]]) -> tuple[dict[str, dict[int, np.ndarray]], int]:
    """(the tracings without exact repeats of a frame's rows, how many were dropped): VolumeTracings.csv
    exported twice into one file, say, would otherwise draw the outline twice over. The first occurrence of
    each row is kept, in file order."""
    cleaned: dict[str, dict[int, np.ndarray]] = {}
    duplicates = 0
    for name, frames in tracings.items():
        for frame, rows in frames.items():
            _, first = np.unique(rows, axis=0, return_index=True)
            cleaned.setdefault(name, {})[frame] = rows[np.sort(first)]
            duplicates += len(rows) - len(first)
    return cleaned, duplicates


# ------------------------------------------------------------------------------------ masks, frames, phases

def tracing_polygon(tracing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the outline, rounded to pixels, from all the tracing's rows as the authors' loader
    takes them: the first row is the long axis and is not part of the outline; then one wall (X1, Y1) down and
    the other (X2, Y2) back up."""
    x1, y1, x2, y2 = tracing.T
    x = np.concatenate((x1[1:], np.flip(x2[1:])))
    y = np.concatenate((y1[1:], np.flip(y2[1:])))
    return np.rint(y).astype(int), np.rint(x).astype(int)


def lv_cavity_mask(tracing: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The LV cavity as the EchoNet-Dynamic authors rasterise it: scikit-image's polygon fill of the rounded
    outline, clipped to the frame. uint8, 1 inside; empty for a tracing that is only a long axis."""
    mask = np.zeros(shape, np.uint8)
    if len(tracing) > 1:
        rows, columns = skimage.draw.polygon(*tracing_polygon(tracing), shape)
        mask[rows, columns] = 1
    return mask


def outline_leaves_frame(tracing: np.ndarray, shape: tuple[int, int]) -> bool:
    rows, columns = tracing_polygon(tracing)
    return bool((rows < 0).any() or (rows >= shape[0]).any() or (columns < 0).any() or (columns >= shape[1]).any())


def read_grey_frames(path: Path, wanted: Iterable[int], listed_frames: int) -> dict[int, np.ndarray]:
    """The `wanted` frames of a video that exist, as grey uint8 images. Channels are identical in EchoNet
    videos up to compression noise, so the grey value is OpenCV's luma of the decoded colour frame.

    A video that cannot be decoded up to the `listed_frames` of FileList.csv is truncated or damaged: an error.
    Decodes no further than the last wanted frame (or the end), then, if the video should go on, seeks to its
    last listed frame and decodes that one alone: a truncated file has lost its end, and an AVI's index takes
    the seek there without decoding the frames between."""
    wanted = set(wanted)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(path, "unreadable video: OpenCV cannot open it")
        frames: dict[int, np.ndarray] = {}
        decoded = 0
        while decoded <= max(wanted) and capture.grab():  # grab() skips the colour conversion of unused frames
            if decoded in wanted:
                ok, frame = capture.retrieve()
                if not ok:
                    raise InputError(path, f"unreadable video: frame {decoded} cannot be decoded")
                frames[decoded] = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
            decoded += 1
        if decoded == 0:
            raise InputError(path, "unreadable video: not a single frame can be decoded")
        within_length = [frame for frame in wanted if frame < listed_frames]
        if within_length and max(within_length) >= decoded:
            raise InputError(path, f"unreadable video: ends early, only {decoded} of its {listed_frames} frames "
                                   f"(NumberOfFrames in FileList.csv) can be decoded, but frame "
                                   f"{max(within_length)} is traced; truncated or damaged?")
        if decoded < listed_frames and not decodes_frame(capture, listed_frames - 1):
            raise InputError(path, f"unreadable video: ends early, frame {listed_frames - 1}, the last of its "
                                   f"{listed_frames} frames (NumberOfFrames in FileList.csv), cannot be decoded; "
                                   f"truncated or damaged?")
        return frames
    finally:
        capture.release()


def decodes_frame(capture: cv2.VideoCapture, index: int) -> bool:
    """Whether frame `index` of the open video can be decoded, reached by seeking."""
    return capture.set(cv2.CAP_PROP_POS_FRAMES, index) and capture.grab()


def assign_phases(csv_order: Sequence[int], areas: dict[int, int]) -> tuple[int, int]:
    """(ED frame, ES frame): the largest and the smallest traced area among `areas`. Ties go the way of the
    authors' loader, which takes the last traced frame in the CSV as ED and the first as ES."""
    position = {frame: index for index, frame in enumerate(csv_order)}
    end_diastole = max(areas, key=lambda frame: (areas[frame], position[frame]))
    end_systole = min(areas, key=lambda frame: (areas[frame], position[frame]))
    return end_diastole, end_systole


# ---------------------------------------------------------------------------------------------- one video

@dataclass(frozen=True)
class VideoTask:
    video: VideoInfo
    path: Path
    tracings: dict[int, np.ndarray]
    images_folder: Path
    labels_folder: Path
    spacing: float
    skip_unreadable: bool = False


@dataclass
class VideoResult:
    video: VideoInfo
    phases: dict[str, tuple[int, int]] = field(default_factory=dict)  # "ED"/"ES" -> (frame, area in pixels)
    csv_order_agrees: bool = True
    frames_beyond_length: int = 0
    frames_empty: int = 0
    frames_clipped: int = 0
    unusual_row_counts: dict[int, int] = field(default_factory=dict)  # drawn frame -> rows, when not the usual 21
    unreadable: str | None = None  # why, when --skip-unreadable skipped it


def convert_video(task: VideoTask) -> VideoResult:
    """Writes the ED and ES cases of one video (nothing if fewer than two traced frames are usable)."""
    try:
        frames = read_grey_frames(task.path, task.tracings, task.video.n_frames)
    except InputError as error:
        if not task.skip_unreadable:
            raise
        return VideoResult(task.video, unreadable=error.problem)
    result = VideoResult(task.video, frames_beyond_length=len(set(task.tracings) - set(frames)))
    areas, masks = {}, {}
    for frame, image in frames.items():
        masks[frame] = lv_cavity_mask(task.tracings[frame], image.shape)
        if len(task.tracings[frame]) != USUAL_TRACING_ROWS:
            result.unusual_row_counts[frame] = len(task.tracings[frame])
        result.frames_clipped += outline_leaves_frame(task.tracings[frame], image.shape)
        if masks[frame].any():
            areas[frame] = int(masks[frame].sum())
        else:
            result.frames_empty += 1
    if len(areas) < 2:
        return result
    csv_order = list(task.tracings)
    end_diastole, end_systole = assign_phases(csv_order, areas)
    result.csv_order_agrees = end_diastole == csv_order[-1] and end_systole == csv_order[0]
    for phase, frame in (("ED", end_diastole), ("ES", end_systole)):
        case = f"{task.video.name}_{phase}"
        spacing = (task.spacing, task.spacing)
        write_image_2d(frames[frame], spacing, task.images_folder / f"{case}_0000{FILE_ENDING}")
        write_image_2d(masks[frame], spacing, task.labels_folder / f"{case}{FILE_ENDING}")
        result.phases[phase] = (frame, areas[frame])
    return result


# ------------------------------------------------------------------------------------------- whole dataset

@dataclass
class QuirkCounts:
    """Known irregularities of the release: handled, counted, reported; none stops a conversion."""
    missing_videos_skipped: int = 0
    unreadable_videos_skipped: int = 0
    duplicate_tracing_rows: int = 0
    frames_with_other_than_21_rows: int = 0
    videos_with_fewer_than_two_traced_frames: int = 0
    frames_beyond_video_length: int = 0
    frames_with_empty_tracing: int = 0
    videos_without_two_usable_frames: int = 0
    frames_clipped_to_frame: int = 0
    videos_with_more_than_two_traced_frames: int = 0
    videos_csv_order_disagrees: int = 0
    untracked_videos_with_tracings: int = 0
    untracked_tracing_rows: int = 0

    DESCRIPTIONS = {
        "missing_videos_skipped": "videos in FileList.csv missing from Videos/ (skipped, --skip-missing)",
        "unreadable_videos_skipped": "unreadable or truncated videos (skipped, --skip-unreadable; listed below)",
        "duplicate_tracing_rows": "exact repeats of a frame's tracing rows (dropped)",
        "frames_with_other_than_21_rows": f"traced frames without {USUAL_TRACING_ROWS} distinct rows (drawn from "
                                          f"all their rows, as the authors' loader does; listed below)",
        "videos_with_fewer_than_two_traced_frames": "videos with fewer than two traced frames (skipped)",
        "frames_beyond_video_length": "traced frames beyond the video's length (skipped)",
        "frames_with_empty_tracing": "traced frames whose outline covers no pixel (skipped)",
        "videos_without_two_usable_frames": "videos left with fewer than two usable traced frames (skipped)",
        "frames_clipped_to_frame": "traced frames with outline points outside the frame (clipped)",
        "videos_with_more_than_two_traced_frames": "videos with more than two traced frames (largest area ED, "
                                                   "smallest ES)",
        "videos_csv_order_disagrees": "videos whose CSV order disagrees with the areas (the authors' loader "
                                      "takes the last traced frame as ED)",
        "untracked_videos_with_tracings": "videos in VolumeTracings.csv but not in FileList.csv (ignored)",
        "untracked_tracing_rows": "tracing rows of those videos (ignored)",
    }


@dataclass
class ConversionSummary:
    """What a conversion produced and which quirks it met."""
    dataset_folder: Path
    splits_file: Path
    videos_listed: int
    videos_converted: dict[str, int]
    quirks: QuirkCounts
    unreadable: dict[str, str] = field(default_factory=dict)  # video -> why (--skip-unreadable)
    unusual_row_counts: dict[str, dict[int, int]] = field(default_factory=dict)  # video -> {frame: rows}

    def report(self) -> str:
        converted = ", ".join(f"{self.videos_converted[s]} {s}" for s in SPLITS)
        training = 2 * (self.videos_converted["TRAIN"] + self.videos_converted["VAL"])
        lines = [f"EchoNet-Dynamic -> {self.dataset_folder}",
                 f"  videos in FileList.csv: {self.videos_listed}; converted: {converted}",
                 f"  cases: {training} in imagesTr/labelsTr, {2 * self.videos_converted['TEST']} in "
                 f"imagesTs/labelsTs",
                 f"  splits: {self.splits_file} (fold 0 = official TRAIN/VAL, then video-level folds)",
                 "  quirks:"]
        lines += [f"    {getattr(self.quirks, f.name):>6}  {QuirkCounts.DESCRIPTIONS[f.name]}"
                  for f in fields(QuirkCounts)]
        if self.unusual_row_counts:
            lines.append(f"  traced frames without {USUAL_TRACING_ROWS} rows, drawn from all their rows:")
            lines += [f"    {video}.avi frame {frame}: {rows} row{'' if rows == 1 else 's'}"
                      for video, frames in self.unusual_row_counts.items() for frame, rows in frames.items()]
        if self.unreadable:
            lines.append("  skipped as unreadable (--skip-unreadable):")
            lines += [f"    {video}.avi: {why}" for video, why in self.unreadable.items()]
        return "\n".join(lines)


def case_rows(results: Sequence[VideoResult]) -> list[dict]:
    def number(value: float) -> str:
        return str(int(value)) if float(value).is_integer() else repr(float(value))

    rows = []
    for result in results:
        video = result.video
        for phase, (frame, area) in result.phases.items():
            rows.append({"case": f"{video.name}_{phase}", "video": video.name, "phase": phase, "frame": frame,
                         "lv_area_pixels": area, "EF": number(video.ef), "EDV": number(video.edv),
                         "ESV": number(video.esv), "FPS": number(video.fps), "NumberOfFrames": video.n_frames,
                         "split": video.split, "csv_order_agrees": result.csv_order_agrees})
    return sorted(rows, key=lambda row: row["case"])


def build_splits(results: Sequence[VideoResult]) -> list[dict[str, list[str]]]:
    """Fold 0: the official TRAIN vs VAL videos; folds 1-4: video-level folds over TRAIN+VAL (fewer when there
    are fewer videos), both cases of a video always on the same side."""
    cases_of = {r.video.name: [f"{r.video.name}_{phase}" for phase in r.phases]
                for r in results if r.phases and r.video.split != "TEST"}
    split_of = {r.video.name: r.video.split for r in results}
    official = {part: sorted(case for video, cases in cases_of.items() if split_of[video] == split
                             for case in cases) for part, split in (("train", "TRAIN"), ("val", "VAL"))}
    n_folds = min(EXTRA_FOLDS, len(cases_of))
    extra = expand_to_cases(patient_level_folds(cases_of, n_folds), cases_of) if n_folds >= 2 else []
    return [official, *extra]


def convert_echonet(root: Path, dataset_id: int = DEFAULT_DATASET_ID, num_processes: int = default_num_processes,
                    overwrite: bool = False, spacing: float = 1.0, skip_missing: bool = False,
                    skip_unreadable: bool = False) -> ConversionSummary:
    """Converts the EchoNet-Dynamic release in `root` into $nnUNet_raw/Dataset<ID>_EchoNetDynamic and its
    splits_final.json; any error (converting no video at all included) leaves neither behind."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "not a folder; expected EchoNet-Dynamic's folder with FileList.csv, "
                                    "VolumeTracings.csv and Videos/")
    name = dataset_name(dataset_id, SHORT_NAME)
    raw_folder = require_env_folder("nnUNet_raw")
    splits_file = check_targets(raw_folder, name, dataset_id, overwrite)
    videos = read_file_list(root / "FileList.csv")
    if not videos:
        raise InputError(root / "FileList.csv", "lists no video, only its header; nothing to convert")
    tracings, duplicate_rows = drop_repeated_rows(read_volume_tracings(root / "VolumeTracings.csv"))
    videos_folder = root / "Videos"
    if not videos_folder.is_dir():
        raise InputError(videos_folder, "not a folder; EchoNet-Dynamic keeps its AVI files there")

    quirks = QuirkCounts(duplicate_tracing_rows=duplicate_rows)
    untracked = [v for v in tracings if v not in videos]
    quirks.untracked_videos_with_tracings = len(untracked)
    quirks.untracked_tracing_rows = sum(len(rows) for v in untracked for rows in tracings[v].values())
    present = set(os.listdir(videos_folder))
    missing = [v for v in videos if f"{v}.avi" not in present]
    if missing and not skip_missing:
        raise InputError(videos_folder / f"{missing[0]}.avi",
                              f"not found; {len(missing)} video(s) of FileList.csv are missing from Videos/ "
                              f"(first: {', '.join(missing[:MISSING_NAMES_SHOWN])}); pass --skip-missing to "
                              f"convert without them")
    quirks.missing_videos_skipped = len(missing)
    missing_names = set(missing)
    listed = [v for v in videos.values() if v.name not in missing_names]
    traced = [v for v in listed if len(tracings.get(v.name, {})) >= 2]
    quirks.videos_with_fewer_than_two_traced_frames = len(listed) - len(traced)
    quirks.videos_with_more_than_two_traced_frames = sum(len(tracings[v.name]) > 2 for v in traced)

    with atomic_folder(raw_folder / name, overwrite) as staging:
        folders = {kind: staging / kind for kind in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
        for folder in folders.values():
            folder.mkdir()
        tasks = [VideoTask(v, videos_folder / f"{v.name}.avi", tracings[v.name],
                           folders["imagesTs" if v.split == "TEST" else "imagesTr"],
                           folders["labelsTs" if v.split == "TEST" else "labelsTr"], spacing, skip_unreadable)
                 for v in traced]
        results = parallel_map(convert_video, tasks, num_processes, desc="EchoNet-Dynamic videos")
        converted = [r for r in results if r.phases]
        unreadable = {r.video.name: r.unreadable for r in results if r.unreadable is not None}
        unusual_row_counts = {r.video.name: r.unusual_row_counts for r in results if r.unusual_row_counts}
        quirks.frames_with_other_than_21_rows = sum(map(len, unusual_row_counts.values()))
        quirks.unreadable_videos_skipped = len(unreadable)
        for result in results:
            quirks.frames_beyond_video_length += result.frames_beyond_length
            quirks.frames_with_empty_tracing += result.frames_empty
            quirks.frames_clipped_to_frame += result.frames_clipped
        quirks.videos_without_two_usable_frames = len(results) - len(converted) - len(unreadable)
        if not converted:
            raise InputError(root, f"no video could be converted: of {len(videos)} in FileList.csv, "
                                   f"{quirks.missing_videos_skipped} are missing, {len(unreadable)} unreadable, "
                                   f"{quirks.videos_with_fewer_than_two_traced_frames} have fewer than two "
                                   f"traced frames and {quirks.videos_without_two_usable_frames} fewer than two "
                                   f"usable ones")
        quirks.videos_csv_order_disagrees = sum(not r.csv_order_agrees for r in converted)
        write_csv(case_rows(converted), CASE_COLUMNS, staging / "cases.csv")
        n_training = 2 * sum(r.video.split != "TEST" for r in converted)
        generate_dataset_json(
            str(staging), {0: "US"}, dict(LABELS), n_training, FILE_ENDING, dataset_name=name,
            description="EchoNet-Dynamic apical-4-chamber echocardiography: LV cavity at the traced "
                        "end-diastolic and end-systolic frames of each video, rasterised from "
                        "VolumeTracings.csv as the dataset's authors do",
            reference="Ouyang et al., Video-based AI for beat-to-beat assessment of cardiac function, "
                      "Nature 580, 252-256 (2020); https://echonet.github.io/dynamic/",
            license="EchoNet-Dynamic Research Use Agreement (Stanford University)",
            converted_by="msvmamba_convert_echonet (nnunetv2-msvmamba)",
            pixel_spacing_note=f"the AVIs carry no physical spacing; {spacing} is written for both axes")
        write_splits_final(build_splits(converted), name, overwrite)

    return ConversionSummary(raw_folder / name, splits_file, len(videos),
                             {s: sum(r.video.split == s for r in converted) for s in SPLITS}, quirks, unreadable,
                             unusual_row_counts)


# ----------------------------------------------------------------------------------------------- command

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msvmamba_convert_echonet",
        description="Convert EchoNet-Dynamic (FileList.csv, VolumeTracings.csv, Videos/*.avi) into the nnU-Net "
                    "raw dataset $nnUNet_raw/Dataset<ID>_EchoNetDynamic: the traced ED and ES frame of each "
                    "video with its LV cavity mask (label 1). TRAIN+VAL -> imagesTr/labelsTr, TEST -> "
                    "imagesTs/labelsTs, official TRAIN/VAL as fold 0 of $nnUNet_preprocessed/.../"
                    "splits_final.json. Each mask is drawn from all the frame's rows of VolumeTracings.csv, as the "
                    "dataset's authors' loader draws it: usually 21 (the long axis, then 20 disc lines), and frames "
                    "with another number of rows are converted too and listed in the summary; exact repeats of a "
                    "row are dropped.")
    parser.add_argument("root", type=Path, help="the EchoNet-Dynamic folder as downloaded")
    parser.add_argument("-d", "--dataset-id", type=int, default=DEFAULT_DATASET_ID,
                        help=f"nnU-Net dataset id (default {DEFAULT_DATASET_ID})")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=default_num_processes,
                        help=f"worker processes decoding videos (default {default_num_processes})")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset folder and splits_final.json")
    parser.add_argument("--spacing", type=positive_float, default=1.0,
                        help="pixel spacing written to the images (default 1.0; the AVIs carry none)")
    parser.add_argument("--skip-missing", action="store_true",
                        help="convert without the videos of FileList.csv that are missing from Videos/ "
                             "(default: an error)")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="convert without the videos that cannot be decoded, or that end before the last of "
                             "their NumberOfFrames in FileList.csv (truncated downloads); they are listed in the "
                             "summary (default: an error). A video is decoded up to its last traced frame, then "
                             "its last listed frame alone is sought and decoded: damage confined to the frames "
                             "between those two goes unseen")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """msvmamba_convert_echonet: EchoNet-Dynamic -> nnU-Net raw dataset."""
    # A damaged video gets one error line (or a listed skip) from the converter itself; FFmpeg's decoder would
    # print its own messages about it around that line. Setting the variable brings them back.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", str(AV_LOG_QUIET))
    return run_converter(build_parser(), argv, SHORT_NAME, lambda args: convert_echonet(
        args.root, args.dataset_id, args.num_processes, args.overwrite, args.spacing, args.skip_missing,
        args.skip_unreadable))


if __name__ == "__main__":
    sys.exit(main())
