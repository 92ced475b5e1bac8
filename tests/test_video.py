"""`msvmamba_predict_video` end to end with a tiny model trained by nnU-Net's own commands (the Debug trainer):
a tiny EchoNet-style AVI and a tiny CAMUS-style NIfTI sequence, frame for frame what nnUNetv2_predict gives,
the outputs; and the bad inputs, each one line and exit status 2 with the finished outputs kept."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import NnUNetFolders, run_command
from dataset_conversion.echonet_synthetic import write_avi
from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.training.ext_trainer_path import trainer_folder
from nnunetv2_msvmamba.video import cli
from nnunetv2_msvmamba.video.sources import find_inputs, read_loop
from toy_datasets import write_toy_dataset

pytestmark = pytest.mark.e2e
TRAINER = "nnUNetTrainerMSVMamba_Debug"
DATASET_ID = 931
NIFTI_SPACING = (0.3, 0.33)  # x (columns), y (rows): unequal, so that a swapped axis shows
NIFTI_FRAMES = 5
AVI_FRAMES = 4
FAST = ["-device", "cpu", "--disable_tta"]  # one forward pass per frame: the CPU network is the slow part


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> NnUNetFolders:
    return NnUNetFolders.make(tmp_path_factory.mktemp("nnunet"))


@pytest.fixture(scope="module")
def model(folders) -> Path:
    """A 2D MSV-Mamba model trained (two tiny epochs) through the real nnU-Net commands."""
    dataset = write_toy_dataset(folders.raw, DATASET_ID, (48, 48), n_train=5, n_test=0)
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1"],
                env=folders.env())
    run_command(["nnUNetv2_train", str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu"],
                env=folders.env(nnUNet_extTrainer=str(trainer_folder()), nnUNet_n_proc_DA="0"))
    return folders.results / dataset.name / f"{TRAINER}__nnUNetPlans__2d"


def beating_disc_frames(n_frames: int, shape: tuple[int, int]) -> np.ndarray:
    """A dark disc in a bright ring whose radius beats, on noise: the toy dataset's look, over time."""
    rng = np.random.default_rng(3)
    rows, columns = np.indices(shape)
    frames = []
    for t in range(n_frames):
        radius = shape[0] * (0.2 + 0.05 * np.cos(2 * np.pi * t / 4))
        distance = np.hypot(rows - shape[0] * 0.45, columns - shape[1] * 0.55)
        label = np.where(distance < radius, 1, np.where(distance < radius + 3, 2, 0))
        frames.append(np.choose(label, [20.0, 5.0, 80.0]) + rng.normal(0, 8, shape))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def loops(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loops")
    nifti = folder / "patient0001_4CH_half_sequence.nii.gz"
    image = sitk.GetImageFromArray(beating_disc_frames(NIFTI_FRAMES, (40, 44)))  # (x, y, t) = (44, 40, 5)
    image.SetSpacing([*NIFTI_SPACING, 1.0])
    image.SetOrigin([1.5, -2.0, 0.0])
    sitk.WriteImage(image, str(nifti), useCompression=True)
    avi = folder / "0XVIDEO0001.avi"  # grey frames in an MJPG AVI, as EchoNet-Dynamic's
    write_avi(avi, beating_disc_frames(AVI_FRAMES, (40, 44)), 50.0)
    return {"nifti": nifti, "avi": avi}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def predicted(model, loops, tmp_path_factory, folders):
    output = tmp_path_factory.mktemp("video") / "out"
    result = run_command(["msvmamba_predict_video", "-i", str(loops["nifti"]), str(loops["avi"]), "-o", str(output),
                          "-m", str(model), "-f", "0", "--spacing", "0.3", *FAST], env=folders.env(), check=False)
    return output, result


def test_every_frame_of_an_avi_and_a_nifti_sequence_is_segmented_and_analysed(predicted, loops):
    output, result = predicted
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "frame" in result.stderr  # the progress bar over frames

    labels = sitk.ReadImage(str(output / "patient0001_4CH_half_sequence.nii.gz"))
    source = sitk.ReadImage(str(loops["nifti"]))
    assert labels.GetSize() == source.GetSize() == (44, 40, NIFTI_FRAMES)  # frames on the last axis
    assert np.allclose(labels.GetSpacing(), source.GetSpacing()) and np.allclose(labels.GetOrigin(),
                                                                                 source.GetOrigin())
    assert set(np.unique(sitk.GetArrayFromImage(labels))) <= {0, 1, 2}
    avi_labels = sitk.ReadImage(str(output / "0XVIDEO0001.nii.gz"))
    assert avi_labels.GetSize() == (44, 40, AVI_FRAMES) and np.allclose(avi_labels.GetSpacing(), (0.3, 0.3, 1))

    summary = read_csv(output / "video_summary.csv")
    assert [row["sequence"] for row in summary] == ["patient0001_4CH_half_sequence", "0XVIDEO0001"]
    assert [int(row["frames"]) for row in summary] == [NIFTI_FRAMES, AVI_FRAMES]
    assert summary[0]["spacing_mm"] == "0.33 x 0.3" and summary[1]["spacing_mm"] == "0.3 x 0.3"
    for row in summary:
        assert (output / row["labels"]).is_file() and float(row["seconds_per_frame"]) > 0
        overlay = cv2.VideoCapture(str(output / row["overlay"]))
        assert overlay.isOpened()
        assert int(overlay.get(cv2.CAP_PROP_FRAME_COUNT)) == int(row["frames"])
        ok, frame = overlay.read()
        assert ok and min(frame.shape[:2]) >= 336  # small echoes are enlarged
        overlay.release()
        # analysed, or the reason it could not be stated
        assert row["ef_percent"] or row["note"]
    # sequence_frames.csv has every frame of every sequence that could be measured; the others say which frame not
    frames = read_csv(output / "sequence_frames.csv") if (output / "sequence_frames.csv").exists() else []
    for row in summary:
        measured = [frame for frame in frames if frame["sequence"] == row["sequence"]]
        assert len(measured) == int(row["frames"]) or "frame" in row["note"]


def test_frames_are_predicted_as_nnunetv2_predict_predicts_them(predicted, loops, model, folders, tmp_path):
    """The same frames as 2D image files through the stock nnUNetv2_predict give the same labels: orientation,
    spacing, preprocessing and export all agree."""
    output, result = predicted
    assert result.returncode == 0
    frames = sitk.GetArrayFromImage(sitk.ReadImage(str(loops["nifti"])))
    images, predictions = tmp_path / "images", tmp_path / "predictions"
    images.mkdir()
    for index in (0, NIFTI_FRAMES - 1):
        image = sitk.GetImageFromArray(frames[index])
        image.SetSpacing(NIFTI_SPACING)
        sitk.WriteImage(image, str(images / f"frame{index}_0000.nii.gz"))
    run_command(["nnUNetv2_predict_from_modelfolder", "-i", str(images), "-o", str(predictions), "-m", str(model),
                 "-f", "0", "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1", "--disable_progress_bar"],
                env=folders.env(nnUNet_extTrainer=str(trainer_folder())))
    sequence = sitk.GetArrayFromImage(sitk.ReadImage(str(output / "patient0001_4CH_half_sequence.nii.gz")))
    for index in (0, NIFTI_FRAMES - 1):
        stock = sitk.GetArrayFromImage(sitk.ReadImage(str(predictions / f"frame{index}.nii.gz")))
        assert np.array_equal(sequence[index], stock), f"frame {index}"


# ---------------------------------------------------------------------------------------------- bad inputs

def run_in_process(arguments: list[str], capsys) -> tuple[int, str]:
    status = cli.main(arguments)
    return status, capsys.readouterr().err


def test_an_unreadable_video_stops_with_one_line_and_keeps_the_finished_outputs(model, loops, tmp_path, capsys):
    broken = tmp_path / "zz_broken.avi"
    broken.write_bytes(b"RIFF not really a video" * 10)
    output = tmp_path / "out"
    status, error = run_in_process(["-i", str(loops["nifti"]), str(broken), "-o", str(output), "-m", str(model),
                                    "-f", "0", *FAST], capsys)
    assert status == 2
    assert error.strip().splitlines()[-1] == f"error: {broken}: unreadable video: OpenCV cannot open it"
    summary = read_csv(output / "video_summary.csv")
    assert [row["sequence"] for row in summary] == ["patient0001_4CH_half_sequence"]
    assert (output / summary[0]["labels"]).is_file() and (output / summary[0]["overlay"]).is_file()
    assert not list(output.glob("zz_broken*")) and not list(output.glob(".partial-*"))


def test_a_truncated_nifti_sequence_is_named(model, loops, tmp_path, capsys):
    truncated = tmp_path / "patient0002_2CH_half_sequence.nii.gz"
    truncated.write_bytes(loops["nifti"].read_bytes()[:200])
    status, error = run_in_process(["-i", str(truncated), "-o", str(tmp_path / "out"), "-m", str(model),
                                    *FAST], capsys)
    assert status == 2 and error.startswith(f"error: {truncated}: unreadable")
    assert error.count("\n") == 1


@pytest.mark.parametrize("case", ["missing model", "missing fold", "missing input", "not a video", "empty folder"])
def test_bad_arguments_are_one_line_errors(case, model, loops, tmp_path, capsys):
    arguments = {"-i": [str(loops["avi"])], "-m": str(model), "-f": ["0"]}
    expected = None
    if case == "missing model":
        arguments["-m"] = str(tmp_path / "no_such_model")
        expected = f"error: {tmp_path / 'no_such_model'}: model folder not found"
    elif case == "missing fold":
        arguments["-f"] = ["3"]
        expected = f"error: {model / 'fold_3' / 'checkpoint_final.pth'}: not found"
    elif case == "missing input":
        arguments["-i"] = [str(tmp_path / "gone.avi")]
        expected = f"error: {tmp_path / 'gone.avi'}: not found"
    elif case == "not a video":
        (tmp_path / "notes.txt").write_text("hello")
        arguments["-i"] = [str(tmp_path / "notes.txt")]
        expected = f"error: {tmp_path / 'notes.txt'}: not an AVI video or a NIfTI sequence"
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        arguments["-i"] = [str(tmp_path / "empty")]
        expected = f"error: {tmp_path / 'empty'}: no AVI video and no *_half_sequence.nii.gz in this folder"
    status, error = run_in_process(["-i", *arguments["-i"], "-o", str(tmp_path / "out"), "-m", arguments["-m"],
                                    "-f", *arguments["-f"], *FAST], capsys)
    assert status == 2 and error.startswith(expected) and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_help_names_the_inputs_and_the_outputs(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for fragment in ("AVI", "half_sequence", "-m MODEL_FOLDER", "-device", "video_summary.csv"):
        assert fragment in text


def test_a_folder_gives_its_videos_and_camus_half_sequences_not_their_ground_truth(tmp_path, loops):
    patient = tmp_path / "database_nifti" / "patient0001"
    patient.mkdir(parents=True)
    for name in ("patient0001_4CH_half_sequence.nii.gz", "patient0001_4CH_half_sequence_gt.nii.gz",
                 "patient0001_4CH_ED.nii.gz"):
        (patient / name).write_bytes(loops["nifti"].read_bytes())
    (patient / "Info_4CH.cfg").write_text("ED: 1\nES: 5\nFrameRate: 31\n")
    (tmp_path / "0XVIDEO0001.avi").write_bytes(loops["avi"].read_bytes())
    found = find_inputs([tmp_path])
    assert found == [tmp_path / "0XVIDEO0001.avi", patient / "patient0001_4CH_half_sequence.nii.gz"]  # sorted
    loop = read_loop(found[1])
    assert loop.fps == 31 and loop.frames.shape == (NIFTI_FRAMES, 40, 44) and np.allclose(loop.spacing_rc, (0.33, 0.3))
    video = read_loop(found[0])
    assert video.frames.shape == (AVI_FRAMES, 40, 44) and video.spacing_rc is None and video.fps == 50
    # the same name twice would overwrite one loop's outputs with the other's
    (tmp_path / "patient0001_4CH_half_sequence.avi").write_bytes(loops["avi"].read_bytes())
    with pytest.raises(InputError, match="has the same name as"):
        find_inputs([tmp_path])
