"""Tiny nnU-Net raw datasets for the end-to-end tests: a bright ring (label 2) around a darker disc (label 1), or
with `merge_foreground` both as one label 1 (a dataset with another label count, as EchoNet's LV against CAMUS)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json


def _disc_and_ring(shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices(shape, dtype=np.float32)
    centre = [rng.uniform(0.4, 0.6) * s for s in shape]
    radius = rng.uniform(0.15, 0.22) * min(shape)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    label = np.zeros(shape, np.uint8)
    label[distance < radius + 3] = 2
    label[distance < radius] = 1
    image = (np.choose(label, [20.0, 5.0, 80.0]) + rng.normal(0, 8, shape)).astype(np.float32)
    return image, label


def write_toy_dataset(raw: Path, dataset_id: int, shape: tuple[int, ...], n_train: int, n_test: int,
                      spacing: float = 0.3, merge_foreground: bool = False) -> Path:
    """DatasetNNN_Toy with imagesTr/labelsTr/imagesTs/labelsTs and dataset.json; returns its folder."""
    folder = raw / f"Dataset{dataset_id:03d}_Toy{len(shape)}D"
    rng = np.random.default_rng(dataset_id)
    for split, count in (("Tr", n_train), ("Ts", n_test)):
        (folder / f"images{split}").mkdir(parents=True)
        (folder / f"labels{split}").mkdir(parents=True)
        for i in range(count):
            image, label = _disc_and_ring(shape, rng)
            if merge_foreground:
                label = (label > 0).astype(np.uint8)
            for array, path in ((image, f"images{split}/case{split}{i:03d}_0000.nii.gz"),
                                (label, f"labels{split}/case{split}{i:03d}.nii.gz")):
                itk = sitk.GetImageFromArray(array)
                itk.SetSpacing([spacing] * len(shape))
                sitk.WriteImage(itk, str(folder / path))
    labels = ({"background": 0, "LV": 1} if merge_foreground else
              {"background": 0, "LV_cavity": 1, "LV_myocardium": 2})
    generate_dataset_json(str(folder), {0: "US"}, labels, n_train, ".nii.gz", dataset_name=folder.name)
    return folder
