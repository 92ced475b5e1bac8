"""A loop's analysis as video_summary.csv reports it: the note beside its EF says what the sequence analysis flagged."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from helpers.clinical_fixtures import badly_segmented_ed_frame, beating_sequence, with_island
from nnunetv2_msvmamba.video.analysis import analyse_loop
from nnunetv2_msvmamba.video.sources import EchoLoop


def loop_of(labels: np.ndarray) -> EchoLoop:
    return EchoLoop("loop", Path("loop.avi"), np.zeros(labels.shape, np.uint8), None, 50.0)


def analysed(labels: np.ndarray):
    return analyse_loop(loop_of(labels), labels, (0.3, 0.3), Path("out/loop.nii.gz"), 0.01)


def test_a_well_sampled_loop_has_its_ef_and_no_note():
    result = analysed(beating_sequence(32, 16, 0.0, noise=0.0)[0])
    assert np.isfinite(result.analysis.ef_percent) and result.note == ""


def test_beats_left_out_of_the_ef_are_named_beside_it():
    """Sampled at 4 frames per beat: before, EF 0.0 with an empty note."""
    result = analysed(beating_sequence(9, 4, 0.0, noise=0.0)[0])
    assert math.isnan(result.analysis.ef_percent)
    assert "left out of the EF" in result.note and result.note == result.analysis.note


def test_islands_left_out_of_the_volumes_are_named_beside_the_ef():
    labels = beating_sequence(32, 16, 0.0, noise=0.0)[0]
    labels[3] = with_island(labels[3], 1, (2, 2), 3)
    result = analysed(labels)
    assert np.isfinite(result.analysis.ef_percent) and "islands left out of the measurement in frame(s) 3" in result.note


def test_a_loop_without_a_beat_says_so_and_what_else_was_flagged():
    labels = np.repeat(beating_sequence(1, 16, 0.0, noise=0.0)[0], 6, axis=0)
    labels[2] = with_island(labels[2], 1, (2, 2), 3)
    result = analysed(labels)
    assert result.note.startswith("no complete beat (an ED maximum then an ES minimum) in the LV volume curve; ")
    assert "islands left out of the measurement in frame(s) 2" in result.note


def test_a_well_sampled_loop_reads_as_its_ef_over_its_beats():
    result = analysed(beating_sequence(32, 16, 0.0, noise=0.0)[0])
    assert result.implausible_beats == 0
    assert result.ef_text == f"EF {result.analysis.ef_percent:.1f} % (mean of {len(result.analysis.beats)} beat(s))"


def test_a_beat_with_esv_above_edv_is_flagged_where_the_ef_is_read():
    """An ED frame segmented at half its size: that beat's EF is negative, and the loop's EF (the mean over its
    beats) is shown with the flag, never as a plain number."""
    result = analysed(badly_segmented_ed_frame())
    assert result.implausible_beats == 1
    assert result.ef_text == (f"EF {result.analysis.ef_percent:.1f} % (mean of 2 beat(s), 1 with ESV > EDV: "
                              f"physiologically implausible)")


def test_a_loop_without_an_ef_reads_as_the_reason():
    result = analysed(beating_sequence(9, 4, 0.0, noise=0.0)[0])
    assert result.implausible_beats == 0 and result.ef_text == f"no EF ({result.note})"
