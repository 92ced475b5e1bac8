"""A trained nnU-Net model (any trainer, this package's included) loaded into nnU-Net's own nnUNetPredictor, and
every frame of a loop through it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.training.ext_trainer_path import ENV_VAR as EXT_TRAINER_VAR, ext_trainer_value

# nnU-Net reads a 2D image as one slice of a 3D volume, with this spacing along the slice axis
SLICE_AXIS_SPACING = 999.0
PIXEL_SPACING_WITHOUT_HEADER = 1.0  # what msvmamba_convert_echonet writes for AVIs by default


def model_folder_from_ids(dataset: str, trainer: str, plans: str, configuration: str) -> Path:
    """$nnUNet_results/DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION, as nnUNetv2_predict finds it."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    if not os.environ.get("nnUNet_results"):
        raise InputError("nnUNet_results", "environment variable not set; set it, or give the model folder with -m")
    try:
        dataset_name = maybe_convert_to_dataset_name(dataset)
    except RuntimeError:
        raise InputError(f"-d {dataset}", "no such dataset in nnUNet_raw, nnUNet_preprocessed or nnUNet_results"
                         ) from None
    return Path(get_output_folder(dataset_name, trainer, plans, configuration))


def check_model_folder(folder: Path, folds: Optional[Sequence[str]], checkpoint: str) -> None:
    if not folder.is_dir():
        raise InputError(folder, "model folder not found (expected a trained model: TRAINER__PLANS__CONFIGURATION "
                                 "with plans.json, dataset.json and fold_N/)")
    for name in ("plans.json", "dataset.json"):
        if not (folder / name).is_file():
            raise InputError(folder, f"not a trained nnU-Net model folder: no {name}")
    if folds is None:
        if not any(folder.glob(f"fold_*/{checkpoint}")):
            raise InputError(folder, f"no fold_*/{checkpoint}: has this model finished training?")
        return
    for fold in folds:
        if not (folder / f"fold_{fold}" / checkpoint).is_file():
            raise InputError(folder / f"fold_{fold}" / checkpoint, "not found: has this fold finished training?")


def load_predictor(folder: Path, folds: Optional[Sequence[str]], checkpoint: str, device: str,
                   mirroring: bool, step_size: float):
    """nnUNetPredictor initialised from a trained model folder (this package's trainers findable by nnU-Net)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    check_model_folder(folder, folds, checkpoint)
    os.environ[EXT_TRAINER_VAR] = ext_trainer_value(os.environ.get(EXT_TRAINER_VAR))
    predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=device != "cpu", device=torch.device(device),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), None if folds is None else tuple(folds),
                                                   checkpoint_name=checkpoint)
    patch_dimensions = len(predictor.configuration_manager.patch_size)
    if patch_dimensions != 2:
        raise InputError(folder, f"a {patch_dimensions}D configuration; whole-video inference predicts frame by "
                                 f"frame and needs a 2D model (-c 2d)")
    channels = len(predictor.dataset_json.get("channel_names", predictor.dataset_json.get("modality", {})))
    if channels != 1:
        raise InputError(folder, f"the model takes {channels} input channels; echo loops have one")
    return predictor


def predict_frames(predictor, frames: np.ndarray, spacing_rc: Optional[tuple[float, float]],
                   description: str) -> np.ndarray:
    """The label map of every frame, (frames, rows, columns) uint8: each frame goes through nnU-Net's
    preprocessing (resampling to the model's spacing, normalisation), sliding-window prediction and export
    to its own grid exactly as `nnUNetv2_predict` treats a 2D image file."""
    spacing = [SLICE_AXIS_SPACING, *(spacing_rc or (PIXEL_SPACING_WITHOUT_HEADER,) * 2)]
    labels = np.empty(frames.shape, np.uint8)
    for index in tqdm(range(len(frames)), desc=description, unit="frame"):
        image = frames[index][np.newaxis, np.newaxis].astype(np.float32)  # (channel, slice, rows, columns)
        labels[index] = predictor.predict_single_npy_array(image, {"spacing": spacing})[0]
    return labels
