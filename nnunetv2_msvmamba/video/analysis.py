"""The cardiac analysis of a predicted label sequence, by nnunetv2_msvmamba.clinical: LV area and volume per
frame, ED/ES frames per beat, ejection fraction."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from nnunetv2_msvmamba.clinical.sequence import SequenceAnalysis, analyse_label_sequence, write_sequence_reports
from nnunetv2_msvmamba.common.errors import InputError
from .sources import EchoLoop


@dataclass
class LoopResult:
    """What one loop gave: where its outputs are, its analysis (None when the labels allow none, with the reason
    in `note`) and the prediction time."""
    loop: EchoLoop
    labels_path: Path
    spacing_rc: Optional[tuple[float, float]]
    seconds_per_frame: float
    analysis: Optional[SequenceAnalysis]
    note: str = ""
    overlay_path: Optional[Path] = None

    @property
    def phases(self) -> list[str]:
        return list(self.analysis.phases) if self.analysis is not None else [""] * len(self.loop.frames)

    @property
    def implausible_beats(self) -> int:
        """The beats in the loop's EF whose ESV is larger than their EDV."""
        return self.analysis.implausible_beats_in_ef if self.analysis is not None else 0

    @property
    def ef_text(self) -> str:
        """The loop's EF as the user reads it (SequenceAnalysis.ef_text), or why it has none."""
        if self.analysis is None or not np.isfinite(self.analysis.ef_percent):
            return f"no EF ({self.note})"
        return self.analysis.ef_text


def analyse_loop(loop: EchoLoop, labels: np.ndarray, spacing_rc: Optional[tuple[float, float]],
                 labels_path: Path, seconds_per_frame: float) -> LoopResult:
    """The analysis of `labels`; a prediction that cannot be measured (no LV in a frame, too few frames for a
    beat) is reported in the result's note, not an error: the labels and the overlay still show what happened."""
    try:
        analysis, note = analyse_label_sequence(labels, spacing_rc, loop.name), ""
    except InputError as error:
        analysis, note = None, error.problem
    if analysis is not None:  # what the sequence's own note says (flagged beats, islands), beside the EF
        no_beat = "" if analysis.beats else "no complete beat (an ED maximum then an ES minimum) in the LV volume curve"
        note = "; ".join(part for part in (no_beat, analysis.note) if part)
    return LoopResult(loop, labels_path, spacing_rc, seconds_per_frame, analysis, note)


def write_analysis_reports(results: Sequence[LoopResult], output: Path) -> None:
    """sequence_frames.csv, sequence_summary.csv and the volume curves of every loop that could be analysed."""
    analyses = [result.analysis for result in results if result.analysis is not None]
    if analyses:
        write_sequence_reports(analyses, output)
