"""The batched whole-loop path (nnunetv2_msvmamba/video/batched_prediction.py) against the stock `nnUNetv2_predict`
on the same frames written as 2D image files, with a model that has learned (MSV-Mamba, nnU-Net's own commands,
the demo's schedule shortened): frames that fit one patch after nnU-Net's resampling, frames that need several
tiles, TTA, and an ensemble of two folds. And how it gets there: each fold's weights loaded once, the frames
(and their mirrored copies) sharing forward passes."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from helpers.nnunet import NnUNetFolders, run_command
from helpers.toy_models import LEARNED_DATASET_ID, LEARNED_TRAINER
from nnunetv2_msvmamba.training.ext_trainer_path import trainer_folder
from nnunetv2_msvmamba.video.batched_prediction import BatchedFramePredictor, default_batch_size
from nnunetv2_msvmamba.video.predict import load_predictor

BATCH_SIZE = 4  # smaller than the loops, so that a batch is left part-filled
# A pixel's label may differ from nnUNetv2_predict's only where nnU-Net's own top two class probabilities are
# closer than this: batched convolutions round differently from single-image ones (float32), and the logits are
# summed in float16 as nnU-Net sums them, so a difference of one float16 step in a logit is possible.
MARGIN_TOLERANCE = 0.01
# (rows, columns), spacing (row, column) mm: the model's spacing is 0.3 mm and its patch 48 x 48
LOOPS = {"one tile": ((40, 44), (0.33, 0.3), 6),  # resampled to 44 x 44, padded to one patch
         "several tiles": ((56, 72), (0.3, 0.3), 3)}  # 2 x 2 overlapping tiles per frame
TILES_PER_FRAME = {"one tile": 1, "several tiles": 4}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> NnUNetFolders:
    return NnUNetFolders.make(tmp_path_factory.mktemp("nnunet"))


@pytest.fixture(scope="module")
def model(learned_toy_model, folders) -> Path:
    """A 2D MSV-Mamba model that has learned the toy dataset's disc (LV cavity) and ring, trained through nnU-Net's
    commands, copied into this module's nnUNet_results (where nnUNetv2_predict finds it by dataset and trainer);
    and a second fold for the ensemble: the same network with its weights perturbed by 5 % (a different model that
    still works; training a second fold would double the test's time)."""
    folder = folders.results / learned_toy_model.parent.name / learned_toy_model.name
    shutil.copytree(learned_toy_model, folder)
    checkpoint = torch.load(folder / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    generator = torch.Generator().manual_seed(1)
    for name, weights in checkpoint["network_weights"].items():
        if weights.is_floating_point():
            weights.mul_(1 + 0.05 * torch.randn(weights.shape, generator=generator))
    (folder / "fold_1").mkdir()
    torch.save(checkpoint, folder / "fold_1" / "checkpoint_final.pth")
    return folder


def beating_disc_loop(shape: tuple[int, int], n_frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (uint8) and their true labels: the toy dataset's dark disc (1) in a bright ring (2) on noise, its
    radius beating, centred differently in every loop."""
    rng = np.random.default_rng(seed)
    rows, columns = np.indices(shape)
    centre = rng.uniform(0.35, 0.65, 2) * shape
    frames, labels = [], []
    for t in range(n_frames):
        radius = 8.5 + 1.5 * np.cos(2 * np.pi * t / 4)
        distance = np.hypot(rows - centre[0], columns - centre[1])
        label = np.where(distance < radius, 1, np.where(distance < radius + 3, 2, 0)).astype(np.uint8)
        frames.append(np.choose(label, [20.0, 5.0, 80.0]) + rng.normal(0, 8, shape))
        labels.append(label)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8), np.stack(labels)


@pytest.fixture(scope="module")
def loops() -> dict[str, tuple[np.ndarray, np.ndarray, tuple[float, float]]]:
    return {name: (*beating_disc_loop(shape, n_frames, seed), spacing)
            for seed, (name, (shape, spacing, n_frames)) in enumerate(LOOPS.items())}


@pytest.fixture(scope="module")
def frame_files(loops, tmp_path_factory) -> Path:
    """Every frame of the loops as a 2D NIfTI with its spacing, as nnUNetv2_predict takes images."""
    folder = tmp_path_factory.mktemp("frames")
    for name, (frames, _, (row_spacing, column_spacing)) in loops.items():
        for index, frame in enumerate(frames):
            image = sitk.GetImageFromArray(frame)
            image.SetSpacing([column_spacing, row_spacing])
            sitk.WriteImage(image, str(folder / f"{name.replace(' ', '_')}_{index:02d}_0000.nii.gz"))
    return folder


def stock_prediction(folders, frame_files: Path, output: Path, folds: list[str], tta: bool):
    """nnUNetv2_predict on the frame files: {file stem: (labels, top-two probability margin)}."""
    run_command(["nnUNetv2_predict", "-i", str(frame_files), "-o", str(output), "-d", str(LEARNED_DATASET_ID),
                 "-c", "2d", "-tr", LEARNED_TRAINER, "-f", *folds, "-device", "cpu", "-npp", "1", "-nps", "1",
                 "--save_probabilities", "--disable_progress_bar", *([] if tta else ["--disable_tta"])],
                env=folders.env(nnUNet_extTrainer=str(trainer_folder())))
    predicted = {}
    for path in sorted(output.glob("*.nii.gz")):
        name = path.name[:-len(".nii.gz")]
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        probabilities = np.sort(np.load(output / f"{name}.npz")["probabilities"][:, 0], axis=0)
        predicted[name] = (labels, probabilities[-1] - probabilities[-2])
    return predicted


def dice(predicted: np.ndarray, truth: np.ndarray, label: int) -> float:
    return 2 * ((predicted == label) & (truth == label)).sum() / ((predicted == label).sum() + (truth == label).sum())


@pytest.mark.parametrize("folds, tta", [(["0"], False), (["0", "1"], True)], ids=["fold 0", "folds 0+1 with TTA"])
def test_labels_are_those_of_nnunetv2_predict_for_the_same_frames(folds, tta, model, loops, frame_files, folders,
                                                                  tmp_path):
    stock = stock_prediction(folders, frame_files, tmp_path / "stock", folds, tta)
    predictor = BatchedFramePredictor(load_predictor(model, folds, "checkpoint_final.pth", "cpu", tta, 0.5),
                                      BATCH_SIZE)
    differing = pixels = 0
    for name, (frames, truth, spacing) in loops.items():
        batched = predictor.predict_frames(frames, spacing)
        assert batched.shape == frames.shape and batched.dtype == np.uint8
        # the model has learned: the comparison is between two predictions that mean something
        assert dice(batched, truth, 1) > 0.8, (name, dice(batched, truth, 1))
        for index in range(len(frames)):
            labels, margin = stock[f"{name.replace(' ', '_')}_{index:02d}"]
            differs = batched[index] != labels
            assert not (differs & (margin > MARGIN_TOLERANCE)).any(), (
                f"{name} frame {index}: labels differ where nnU-Net's margin is up to "
                f"{margin[differs].max():.4f}")
            differing += int(differs.sum())
            pixels += differs.size
    # measured (2026-12-02): 0 of 22,656 pixels differ, for fold 0 and for folds 0+1 with TTA alike
    print(f"{differing} of {pixels} pixels differ from nnUNetv2_predict ({folds}, TTA {tta})")
    assert differing <= pixels * 1e-3


def test_each_fold_is_loaded_once_and_frames_share_forward_passes(model, loops, monkeypatch):
    predictor = load_predictor(model, ["0", "1"], "checkpoint_final.pth", "cpu", True, 0.5)
    loads = []
    original_load = torch.nn.Module.load_state_dict
    monkeypatch.setattr(torch.nn.Module, "load_state_dict",
                        lambda module, *args, **kwargs: loads.append(module) or original_load(module, *args, **kwargs))
    batched = BatchedFramePredictor(predictor, BATCH_SIZE)
    batch_sizes = []
    for network in batched.networks:
        network.register_forward_pre_hook(lambda module, inputs: batch_sizes.append(len(inputs[0])))
    for frames, _, spacing in loops.values():
        batched.predict_frames(frames, spacing)
    assert len(loads) == 2  # one per fold, however many frames and loops
    copies = 4  # the frame and its three mirrored copies (both axes of a 2D image, and both together)
    tiles_per_loop = [TILES_PER_FRAME[name] * n_frames for name, (_, _, n_frames) in LOOPS.items()]
    per_fold = [size * copies for tiles in tiles_per_loop for size in batch_split(tiles, BATCH_SIZE)]
    assert sorted(batch_sizes) == sorted(per_fold * 2)  # the folds take turns per batch of frames


def batch_split(n_tiles: int, batch_size: int) -> list[int]:
    return [batch_size] * (n_tiles // batch_size) + ([n_tiles % batch_size] if n_tiles % batch_size else [])


def test_default_batch_size_is_larger_on_a_gpu():
    assert default_batch_size("cpu") >= 1
    assert default_batch_size("cuda") > default_batch_size("cpu")
