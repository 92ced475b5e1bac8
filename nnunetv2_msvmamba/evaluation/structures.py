"""The echocardiographic structures the paper reports, as unions of nnU-Net label values, and the label set
of a dataset (from its dataset.json, or inferred from the ground truth)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True)
class Structure:
    """An anatomical structure scored as one binary mask: the union of `labels` in a label map."""

    name: str
    labels: tuple[int, ...]
    description: str


# Label values as the CAMUS and EchoNet-Dynamic converters write them: 1 LV_cavity, 2 LV_myocardium,
# 3 left_atrium. The paper's LV_epi is the area inside the epicardial contour, i.e. cavity and myocardium.
ECHO_STRUCTURES: tuple[Structure, ...] = (
    Structure("LV_endo", (1,), "LV cavity, inside the endocardial contour"),
    Structure("LV_epi", (1, 2), "LV cavity and myocardium, inside the epicardial contour"),
    Structure("myocardium", (2,), "LV myocardium"),
    Structure("LA", (3,), "left atrium"),
)


def labels_from_dataset_json(dataset_json: Mapping) -> dict[int, str]:
    """Foreground label value -> name from a dataset.json `labels` entry. Region entries (lists of values,
    nnU-Net's region-based training) contribute each of their values."""
    names: dict[int, str] = {}
    for name, value in dataset_json["labels"].items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for label in values:
            label = int(label)
            if label != 0:
                names.setdefault(label, name)
    return names


def structures_for_labels(labels: Iterable[int]) -> list[Structure]:
    """The echo structures whose every label value is in `labels`; the others are left out
    (EchoNet-Dynamic, with label 1 only, gets LV_endo alone)."""
    available = set(labels)
    return [structure for structure in ECHO_STRUCTURES if set(structure.labels) <= available]


def describe(structure: Structure, label_names: Mapping[int, str]) -> str:
    """'LV_epi = labels 1+2 (LV_cavity, LV_myocardium): ...' for reports."""
    numbers = "+".join(str(label) for label in structure.labels)
    names = ", ".join(label_names.get(label, "?") for label in structure.labels)
    word = "label" if len(structure.labels) == 1 else "labels"
    return f"{structure.name} = {word} {numbers} ({names}): {structure.description}"
