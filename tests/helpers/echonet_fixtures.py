"""A small EchoNet-Dynamic release in the real layout (MJPG AVIs, FileList.csv, VolumeTracings.csv) with every
quirk the converter must survive, and what a correct conversion of it contains."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset_conversion.echonet_synthetic import LeftVentricle, SyntheticVideo, write_release

DATASET = "Dataset602_EchoNetDynamic"  # what the converter writes by default
PHASES = ("ED", "ES")
PERIOD = 20  # frames per cardiac cycle: ED (largest LV) at multiples of 20, ES (smallest) halfway between
N_FRAMES = 36
EDGE_VENTRICLE = LeftVentricle(12, 60, 16, 30, 0.0)  # at ED the left wall lies left of the frame

# A rectangle, rows 31..69 and columns 30..60 once rounded: 39 x 31 = 1209 pixels, edges included.
RECTANGLE_ROWS, RECTANGLE_COLUMNS = range(31, 70), range(30, 61)
RECTANGLE_TRACING = np.array([[45.0, 30.0, 45.0, 70.0]]
                             + [[30.4, y + 0.3, 59.6, y + 0.3] for y in range(31, 70, 2)])
LONG_AXIS_ONLY = np.array([[50.0, 30.0, 52.0, 80.0]])


@dataclass(frozen=True)
class ExpectedVideo:
    split: str
    end_diastole: int
    end_systole: int
    csv_order_agrees: bool


def release_videos() -> list[SyntheticVideo]:
    def video(name: str, split: str, traced: list[int], **options) -> SyntheticVideo:
        seed = sum(map(ord, name)) * 7919
        # ventricles of different widths, so that each video has its own volumes in FileList.csv
        options.setdefault("ventricle", LeftVentricle(56, 60, 13 + seed % 5, 30, 0.15))
        options.setdefault("contraction", 0.15 + seed % 7 / 100)
        return SyntheticVideo(name, split, options.pop("n_frames", N_FRAMES), traced, PERIOD, seed=seed,
                              **options)

    return [
        video("0XTRAIN0001", "TRAIN", [10, 20]),                      # release order: ES first, ED last
        video("0XTRAIN0002", "TRAIN", [20, 30]),                      # ED first: the CSV order disagrees
        video("0XTRAIN0003", "TRAIN", [30, 20], ventricle=EDGE_VENTRICLE),  # ED outline clipped at the edge
        video("0XTRAIN0004", "TRAIN", [15, 10, 20]),                  # three traced frames, ES not first
        video("0XVAL0001", "val", [10, 20], tracing_overrides={20: RECTANGLE_TRACING}),
        video("0XVAL0002", "Val", [20, 10]),                          # ED first again
        video("0XTEST0001", "test", [10, 20]),
        video("0XTEST0002", "TEST", [10, 0]),
        video("0XONETRACE", "TRAIN", [10]),                           # fewer than two traced frames
        video("0XBEYOND", "TRAIN", [10, 40], n_frames=25),            # frame 40 is past the end
        video("0XAXISONLY", "VAL", [10, 20], tracing_overrides={10: LONG_AXIS_ONLY}),  # outline covers nothing
    ]


EXPECTED = {
    "0XTRAIN0001": ExpectedVideo("TRAIN", 20, 10, True),
    "0XTRAIN0002": ExpectedVideo("TRAIN", 20, 30, False),
    "0XTRAIN0003": ExpectedVideo("TRAIN", 20, 30, True),
    "0XTRAIN0004": ExpectedVideo("TRAIN", 20, 10, False),
    "0XVAL0001": ExpectedVideo("VAL", 20, 10, True),
    "0XVAL0002": ExpectedVideo("VAL", 20, 10, False),
    "0XTEST0001": ExpectedVideo("TEST", 20, 10, True),
    "0XTEST0002": ExpectedVideo("TEST", 0, 10, True),
}

EXPECTED_QUIRKS = {
    "missing_videos_skipped": 0,
    "unreadable_videos_skipped": 0,
    "duplicate_tracing_rows": 0,
    "frames_with_other_than_21_rows": 1,  # 0XAXISONLY's frame 10: its long axis alone
    "videos_with_fewer_than_two_traced_frames": 1,
    "frames_beyond_video_length": 1,
    "frames_with_empty_tracing": 1,
    "videos_without_two_usable_frames": 2,
    "frames_clipped_to_frame": 1,
    "videos_with_more_than_two_traced_frames": 1,
    "videos_csv_order_disagrees": 3,
    "untracked_videos_with_tracings": 1,
    "untracked_tracing_rows": 42,
}


def write_fixture_release(root: Path) -> list[SyntheticVideo]:
    """Writes the quirky release under `root`; one FileList name carries `.avi`, and a video that is not in
    FileList.csv has tracings."""
    videos = release_videos()
    names = [f"{v.name}.avi" if v.name == "0XTRAIN0002" else v.name for v in videos]
    not_listed = SyntheticVideo("0XNOTLISTED", "TRAIN", N_FRAMES, [5, 10], PERIOD)
    write_release(root, videos, names, [("0XNOTLISTED.avi", frame, not_listed.tracing_at(frame))
                                        for frame in not_listed.traced_frames])
    return videos


def fixture_release_under(folder: Path) -> tuple[Path, dict[str, SyntheticVideo]]:
    """The quirky release written under `folder`: its root, and its videos by name."""
    root = folder / "EchoNet-Dynamic"
    videos = write_fixture_release(root)
    return root, {video.name: video for video in videos}


def cases_of(split: str) -> set[str]:
    """The nnU-Net case ids (`<video>_ED`, `<video>_ES`) a correct conversion gives the videos of `split`."""
    return {f"{video}_{phase}" for video, e in EXPECTED.items() if e.split == split for phase in PHASES}
