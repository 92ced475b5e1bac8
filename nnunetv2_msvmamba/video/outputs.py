"""The files `msvmamba_predict_video` writes for each loop, named after the loop, and how a later run recognises
them: an output folder may lie inside an input folder, or a run may write beside its inputs, and the next run
must not take a label sequence (a `*_half_sequence.nii.gz` when the loop was a CAMUS one) or an AVI overlay for a
new echo loop."""
from __future__ import annotations

from pathlib import Path

from .overlay import FOURCC

LABEL_SEQUENCE_ENDING = ".nii.gz"
OVERLAY_FORMATS = tuple(sorted(FOURCC))
OVERLAY_SUFFIX = "_overlay"


def label_sequence_name(loop_name: str) -> str:
    return f"{loop_name}{LABEL_SEQUENCE_ENDING}"


def overlay_name(loop_name: str, overlay_format: str) -> str:
    return f"{loop_name}{OVERLAY_SUFFIX}.{overlay_format}"


def is_own_output(path: Path) -> bool:
    """True for the pair this command writes per loop, NAME.nii.gz beside NAME_overlay.(avi|mp4), for either of
    the two files: one alone may be anybody's, both together are a loop's outputs, not echo loops."""
    folder, name = path.parent, path.name
    if name.endswith(LABEL_SEQUENCE_ENDING):
        loop_name = name[:-len(LABEL_SEQUENCE_ENDING)]
        return any((folder / overlay_name(loop_name, kind)).is_file() for kind in OVERLAY_FORMATS)
    for kind in OVERLAY_FORMATS:
        ending = f"{OVERLAY_SUFFIX}.{kind}"
        if name.endswith(ending):
            return (folder / label_sequence_name(name[:-len(ending)])).is_file()
    return False
