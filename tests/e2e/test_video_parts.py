"""`msvmamba_predict_video` in large runs, through the real command: split in parts (-num_parts/-part_id) that
together give exactly the outputs of one run, --continue after a kill redoing only the unfinished loop, the
reference EF of CAMUS's Info files and EchoNet-Dynamic's FileList.csv with its agreement, and the one-line
errors of the new options."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dataset_conversion.echonet_synthetic import write_avi
from helpers.handshake import Handshake
from helpers.nnunet import run_command
from helpers.paths import TESTS, pythonpath_with_tests
from helpers.tables import read_rows
from nnunetv2_msvmamba.video import cli

FAST = ["-device", "cpu", "--disable_tta", "-f", "0"]
REFERENCE_EF = {"patient0001": 61.0, "patient0002": 48.5, "patient0003": 55.0}


@pytest.fixture(scope="module")
def model(learned_toy_model) -> Path:
    return learned_toy_model


def beating_disc_frames(n_frames: int, shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, columns = np.indices(shape)
    frames = []
    for t in range(n_frames):
        radius = 8.5 + 1.5 * np.cos(2 * np.pi * t / 4)
        distance = np.hypot(rows - shape[0] * 0.45, columns - shape[1] * 0.55)
        label = np.where(distance < radius, 1, np.where(distance < radius + 3, 2, 0))
        frames.append(np.choose(label, [20.0, 5.0, 80.0]) + rng.normal(0, 8, shape))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def camus_loops(tmp_path_factory) -> Path:
    """Three CAMUS-style patients, each a 4CH half sequence with its Info_4CH.cfg (and the LVef in it)."""
    root = tmp_path_factory.mktemp("camus")
    for index, (patient, ef) in enumerate(REFERENCE_EF.items()):
        folder = root / patient
        folder.mkdir()
        image = sitk.GetImageFromArray(beating_disc_frames(9, (40, 44), index))
        image.SetSpacing([0.3, 0.3, 1.0])
        sitk.WriteImage(image, str(folder / f"{patient}_4CH_half_sequence.nii.gz"), useCompression=True)
        (folder / "Info_4CH.cfg").write_text(f"ED: 1\nES: 5\nFrameRate: 25\nLVef: {ef}\n")
    return root


def predict(inputs: list[Path], output: Path, model: Path, *options: str, check: bool = True):
    return run_command(["msvmamba_predict_video", "-i", *map(str, inputs), "-o", str(output), "-m", str(model),
                        *FAST, *options], check=check)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "seconds_per_frame"} for row in rows]


def test_two_parts_give_exactly_the_outputs_of_one_run(model, camus_loops, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    predict([camus_loops], whole, model)
    first = predict([camus_loops], parts, model, "-num_parts", "2", "-part_id", "0")
    assert "2 loop(s) (part 0 of 0..1)" in first.stdout
    # after the first part, the summary has its loops only: patients 1 and 3 (loops 0 and 2 of the sorted inputs)
    assert [row["sequence"] for row in read_rows(parts / "video_summary.csv")] == [
        "patient0001_4CH_half_sequence", "patient0003_4CH_half_sequence"]
    predict([camus_loops], parts, model, "-num_parts", "2", "-part_id", "1")

    assert sorted(p.name for p in whole.iterdir()) == sorted(p.name for p in parts.iterdir())
    for labels in whole.glob("*.nii.gz"):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(labels))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(parts / labels.name)))), labels.name
    for table in ("sequence_frames.csv", "sequence_summary.csv"):
        assert (whole / table).read_bytes() == (parts / table).read_bytes(), table
    summary = read_rows(whole / "video_summary.csv")
    assert without_timing(summary) == without_timing(read_rows(parts / "video_summary.csv"))
    # the reference EF of each loop's Info_4CH.cfg, beside its predicted EF, and the agreement over the loops
    assert [float(row["reference_ef_percent"]) for row in summary] == list(REFERENCE_EF.values())
    agreement = json.loads((whole / "ef_agreement.json").read_text())
    assert agreement == json.loads((parts / "ef_agreement.json").read_text())
    assert [pair["reference_ef_percent"] for pair in agreement["pairs"]] == list(REFERENCE_EF.values())
    assert {"pearson_r", "bias", "loa_lower", "loa_upper", "mae"} <= set(agreement)
    assert (whole / "ef_bland_altman.png").stat().st_size > 0


def test_continue_after_a_kill_redoes_only_the_unfinished_loop(model, camus_loops, tmp_path):
    output = tmp_path / "out"
    handshake = Handshake(tmp_path / "handshake")
    command = [sys.executable, "-m", "helpers.held_video_predictor", "-i", str(camus_loops), "-o", str(output),
               "-m", str(model), *FAST]
    env = dict(os.environ, PYTHONPATH=pythonpath_with_tests(), **handshake.env())
    process = subprocess.Popen(command, cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        handshake.wait_until_waiting(process)  # the first loop is written, the second is being predicted
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    first = "patient0001_4CH_half_sequence"
    assert (output / f"{first}_loop.json").is_file()
    assert not list(output.glob("patient0002*")) and not list(output.glob("patient0003*"))
    kept = {path.name: path.stat().st_mtime_ns for path in output.glob(f"{first}*")}

    resumed = predict([camus_loops], output, model, "--continue")
    assert "2 loop(s), 1 complete one(s) skipped (--continue)" in resumed.stdout
    assert f"{first}:" not in resumed.stdout  # not predicted again
    assert {path.name: path.stat().st_mtime_ns for path in output.glob(f"{first}*")} == kept
    assert [row["sequence"] for row in read_rows(output / "video_summary.csv")] == [
        f"{patient}_4CH_half_sequence" for patient in REFERENCE_EF]
    again = predict([camus_loops], output, model, "--continue")  # nothing left: the summary is rebuilt, no loop
    assert "0 loop(s), 3 complete one(s) skipped (--continue)" in again.stdout


def test_file_list_gives_echonet_videos_their_reference_ef(model, tmp_path):
    videos = tmp_path / "Videos"
    videos.mkdir()
    for index, name in enumerate(("0X1A", "0X2B")):
        write_avi(videos / f"{name}.avi", beating_disc_frames(9, (40, 44), index), 50.0)
    file_list = tmp_path / "FileList.csv"
    file_list.write_text("FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split\n"
                         "0X1A,62.5,1,2,40,44,50,9,TEST\n0X2B,41,1,2,40,44,50,9,TEST\n0X3C,50,1,2,40,44,50,9,TEST\n")
    output = tmp_path / "out"
    predict([videos], output, model, "--file-list", str(file_list), "--batch-size", "3")
    summary = read_rows(output / "video_summary.csv")
    assert [(row["sequence"], row["reference_ef_percent"]) for row in summary] == [("0X1A", "62.50"),
                                                                                     ("0X2B", "41.00")]
    assert json.loads((output / "ef_agreement.json").read_text())["pairs"][1]["reference_ef_percent"] == 41.0


def run_in_process(arguments: list[str], capsys) -> tuple[int, str]:
    status = cli.main(arguments)
    return status, capsys.readouterr().err


@pytest.mark.parametrize("options, expected", [
    (["-num_parts", "2", "-part_id", "2"], "error: -part_id: must be from 0 to 1 with -num_parts 2, got 2"),
    (["-num_parts", "0"], "error: -num_parts: must be at least 1, got 0"),
    (["--batch-size", "0"], "error: --batch-size: must be at least 1, got 0"),
    (["-part_id", "one"], "error: -part_id: must be a whole number, got 'one'"),
    (["--file-list", "{file_list}"], "error: {file_list}: no row for patient0001_4CH_half_sequence.nii.gz"),
])
def test_bad_values_of_the_new_options_are_one_line_errors(options, expected, model, camus_loops, tmp_path,
                                                           capsys):
    file_list = tmp_path / "FileList.csv"
    file_list.write_text("FileName,EF\n0X1A,60\n")
    options = [option.format(file_list=file_list) for option in options]
    status, error = run_in_process(["-i", str(camus_loops), "-o", str(tmp_path / "out"), "-m", str(model), *FAST,
                                    *options], capsys)
    assert status == 2 and error.startswith(expected.format(file_list=file_list)) and error.count("\n") == 1, error
    assert not (tmp_path / "out").exists()
