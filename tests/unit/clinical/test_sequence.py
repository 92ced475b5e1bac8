"""Label sequences: ED/ES detection on beating shapes (several beats, noise, extrema at the ends), per-beat EF,
reading sequences with frames on the last axis, and the report files."""
from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from helpers.clinical_fixtures import (badly_segmented_ed_frame, beating_sequence, half_ellipse, with_island,
                                       write_sequence)
from helpers.tables import read_rows
from nnunetv2_msvmamba.clinical.sequence import (MIN_FRAMES_PER_BEAT, analyse_label_sequence, detect_beats,
                                                 list_sequences, read_label_sequence, rhythm_period,
                                                 write_sequence_reports)
from nnunetv2_msvmamba.common.errors import InputError

PERIOD, FIRST_ED, N_FRAMES = 29.0, 4.0, 100
ES_SCALE = 0.8


def true_frames(first: float, period: float, n_frames: int) -> list[float]:
    return [first + k * period for k in range(-1, n_frames) if 0 <= first + k * period <= n_frames - 1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beating_cavity_with_noise_gives_its_ed_es_frames_and_ef(seed):
    """1 % independent jitter of each axis per frame (about 1.7 % volume noise, 1.2 EF points per beat)."""
    labels, scale = beating_sequence(N_FRAMES, PERIOD, FIRST_ED, es_scale=ES_SCALE, noise=0.01, seed=seed)
    analysis = analyse_label_sequence(labels, (0.4, 0.4), "beating")
    expected_ed = true_frames(FIRST_ED, PERIOD, N_FRAMES)
    expected_es = true_frames(FIRST_ED + PERIOD / 2, PERIOD, N_FRAMES)
    found_ed = [f for f, p in enumerate(analysis.phases) if p == "ED"]
    found_es = [f for f, p in enumerate(analysis.phases) if p == "ES"]
    assert len(found_ed) == len(expected_ed) and len(found_es) == len(expected_es)
    assert all(abs(f - e) <= 1 for f, e in zip(found_ed, expected_ed)), (found_ed, expected_ed)
    assert all(abs(f - e) <= 1 for f, e in zip(found_es, expected_es)), (found_es, expected_es)
    # Each ED followed by an ES is a beat: 3 full beats in 100 frames with ED at 4, 33, 62, 91; the last
    # frame, part way down the 4th systole, is no ES.
    assert [(b.ed_frame, b.es_frame) for b in analysis.beats] == list(zip(found_ed, found_es))[:3]
    expected_ef = 100 * (1 - ES_SCALE ** 3)  # every dimension shrinks by ES_SCALE
    assert all(abs(b.ef_percent - expected_ef) < 5.0 for b in analysis.beats)
    assert abs(analysis.ef_percent - expected_ef) < 3.0
    assert analysis.ef_percent == pytest.approx(np.mean([b.ef_percent for b in analysis.beats]))
    assert analysis.beats[0].edv == pytest.approx(analysis.lv_volume[analysis.beats[0].ed_frame])
    assert analysis.volume_unit == "mL" and analysis.lv_area.shape == (N_FRAMES,)


def test_half_sequence_from_ed_to_es_has_its_extremes_at_the_first_and_last_frames():
    labels, _ = beating_sequence(12, 22.0, 0.0, es_scale=0.75, noise=0.0, atrium=True)
    analysis = analyse_label_sequence(labels, None, "half")
    assert analysis.phases[0] == "ED" and analysis.phases[-1] == "ES"
    assert set(analysis.phases[1:-1]) == {""}
    assert [(b.ed_frame, b.es_frame) for b in analysis.beats] == [(0, 11)]
    assert analysis.volume_unit == "pixels3"
    # The reverse (ES -> ED) has an ES first and no beat (no ED before it).
    reverse = analyse_label_sequence(labels[::-1], None, "reverse")
    assert reverse.phases[0] == "ES" and reverse.phases[-1] == "ED" and reverse.beats == []
    assert math.isnan(reverse.ef_percent)


def test_single_frame_outliers_and_small_wiggles_are_not_beats():
    # ED at 0, 30; ES at 15, 45; the video stops at frame 54, part way up to the next ED (no ED there)
    volumes = 100 - 40 * 0.5 * (1 - np.cos(2 * np.pi * np.arange(55) / 30))
    volumes[22] = 40.0                      # one badly segmented frame
    volumes[5:9] += [0, 3, -3, 0]           # a wiggle far below the stroke
    phases, beats = detect_beats(volumes)
    assert [f for f, p in enumerate(phases) if p == "ED"] == [0, 30]
    assert [f for f, p in enumerate(phases) if p == "ES"] == [15, 45]
    assert len(beats) == 2 and beats[0].ef_percent == pytest.approx(40.0)


def test_a_flat_curve_has_no_beat():
    phases, beats = detect_beats(np.full(40, 80.0) + np.random.default_rng(0).normal(0, 0.5, 40))
    assert beats == [] and set(phases) == {""}


def test_a_frame_without_lv_is_an_input_error_naming_the_sequence_and_frame():
    labels, _ = beating_sequence(10, 20.0, 0.0, noise=0.0)
    labels[6] = 0
    with pytest.raises(InputError, match=r"sequence clip: frame 6 \(0-based\): no LV cavity"):
        analyse_label_sequence(labels, None, "clip")


@pytest.mark.parametrize("writer", ["sitk", "nibabel"])
def test_sequences_are_read_with_frames_on_the_last_axis(tmp_path, writer):
    """CAMUS half sequences are (x, y, t) images; whoever wrote them, we get (frames, rows, columns) and the
    (row, column) spacing back."""
    labels, _ = beating_sequence(5, 10.0, 0.0, shape=(70, 50), length=40.0, half_width=15.0, noise=0.0)
    path = tmp_path / f"seq_{writer}.nii.gz"
    if writer == "sitk":
        image = sitk.GetImageFromArray(labels)
        image.SetSpacing((0.2, 0.3, 1.0))  # x (columns), y (rows), t
        sitk.WriteImage(image, str(path))
    else:
        nib.save(nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), np.diag([0.2, 0.3, 1.0, 1.0])),
                 str(path))
    read, spacing = read_label_sequence(path)
    np.testing.assert_array_equal(read, labels)
    assert spacing == pytest.approx((0.3, 0.2))


def test_spacing_option_applies_to_files_without_spacing_and_must_match_the_others(tmp_path):
    labels, _ = beating_sequence(3, 10.0, 0.0, shape=(40, 30), length=20.0, half_width=8.0, noise=0.0)
    plain, physical = tmp_path / "plain.nii.gz", tmp_path / "physical.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(labels), str(plain))
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((0.3, 0.3, 1.0))
    sitk.WriteImage(image, str(physical))
    assert read_label_sequence(plain)[1] is None
    assert read_label_sequence(plain, 0.5)[1] == (0.5, 0.5)
    assert read_label_sequence(physical, 0.3)[1] == pytest.approx((0.3, 0.3))
    with pytest.raises(InputError, match="does not match --spacing 0.5"):
        read_label_sequence(physical, 0.5)
    sitk.WriteImage(sitk.GetImageFromArray(labels[0]), str(tmp_path / "frame.nii.gz"))
    with pytest.raises(InputError, match="expected a 3D image"):
        read_label_sequence(tmp_path / "frame.nii.gz")
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="unreadable: corrupt or truncated gzip stream"):
        read_label_sequence(tmp_path / "broken.nii.gz")


def test_sequence_reports(tmp_path):
    labels, _ = beating_sequence(40, 20.0, 2.0, noise=0.0)
    analyses = [analyse_label_sequence(labels, (0.3, 0.3), "one"),
                analyse_label_sequence(labels[:12], None, "two")]
    output = tmp_path / "out"
    (output).mkdir()
    (output / "keep.txt").write_text("other files stay")
    write_sequence_reports(analyses, output)
    assert sorted(p.name for p in output.iterdir()) == ["keep.txt", "one_volume_curve.png", "sequence_frames.csv",
                                                        "sequence_summary.csv", "two_volume_curve.png"]
    with open(output / "sequence_frames.csv") as f:
        frames = list(csv.DictReader(f))
    assert list(frames[0])[:5] == ["sequence", "frame", "lv_area", "lv_volume", "phase"]
    assert len(frames) == 52 and frames[2]["phase"] == "ED" and frames[0]["frame"] == "0"
    assert float(frames[2]["lv_volume"]) == pytest.approx(analyses[0].lv_volume[2])
    with open(output / "sequence_summary.csv") as f:
        summary = {row["sequence"]: row for row in csv.DictReader(f)}
    assert int(summary["one"]["beats"]) == len(analyses[0].beats) == 2
    assert float(summary["one"]["ef_percent"]) == pytest.approx(analyses[0].ef_percent)
    assert summary["two"]["volume_unit"] == "pixels3" and summary["one"]["volume_unit"] == "mL"
    assert (output / "one_volume_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_sequence_reports_are_all_or_nothing(tmp_path, monkeypatch):
    from nnunetv2_msvmamba.clinical import sequence
    labels, _ = beating_sequence(12, 20.0, 0.0, noise=0.0)
    analysis = analyse_label_sequence(labels, None, "one")

    def broken_plot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(sequence, "write_volume_curve", broken_plot)
    with pytest.raises(InputError, match="disk full") as error:  # an OS error is a one-line error, as everywhere
        write_sequence_reports([analysis], tmp_path / "out")
    assert error.value.path == tmp_path / "out"
    assert list((tmp_path / "out").iterdir()) == []


def test_atrium_border_is_used_when_the_sequence_has_one():
    with_atrium = half_ellipse((90, 70), (80.0, 35.0), 50.3, 16.2, 0.4)
    without = np.where(with_atrium == 3, 0, with_atrium)
    volumes = [analyse_label_sequence(np.stack([labels] * 2), None, "x").lv_volume[0] for labels in (with_atrium,
                                                                                                   without)]
    assert volumes[0] == pytest.approx(volumes[1], rel=0.03)


def test_an_island_in_a_frame_changes_no_volume_and_the_frame_says_so(tmp_path):
    labels, _ = beating_sequence(30, 15.0, 2.0, noise=0.0)
    clean = analyse_label_sequence(labels, (0.4, 0.4), "loop")
    labels[7] = with_island(labels[7], 1, (1, 1), 3)  # far beyond the apex
    analysis = analyse_label_sequence(labels, (0.4, 0.4), "loop")
    np.testing.assert_array_equal(analysis.lv_volume, clean.lv_volume)
    np.testing.assert_array_equal(analysis.lv_area, clean.lv_area)
    assert analysis.frame_notes[7].startswith("1 island(s) of LV cavity (label 1) removed (9 pixels, ")
    assert [note for frame, note in enumerate(analysis.frame_notes) if frame != 7] == [""] * 29
    assert analysis.note == "islands left out of the measurement in frame(s) 7 (see sequence_frames.csv)"
    write_sequence_reports([analysis], tmp_path / "out")
    frames = read_rows(tmp_path / "out" / "sequence_frames.csv")
    assert frames[7]["note"] == analysis.frame_notes[7] and frames[6]["note"] == ""
    assert read_rows(tmp_path / "out" / "sequence_summary.csv")[0]["note"] == analysis.note


def test_a_beat_whose_esv_is_larger_than_its_edv_is_kept_and_flagged():
    analysis = analyse_label_sequence(badly_segmented_ed_frame(), None, "loop")
    first, second = analysis.beats
    assert (first.ed_frame, first.es_frame) == (5, 15) and first.esv > first.edv and first.ef_percent < 0
    assert first.implausible and not second.implausible
    assert analysis.implausible_beats == [first]
    assert analysis.note == (f"beat ED 5 -> ES 15: ESV > EDV (EF {first.ef_percent:.1f} %), physiologically "
                             f"implausible (ED and ES swapped, or a failed segmentation)")


def test_a_metaimage_sequence_with_nan_voxels_is_refused(tmp_path):
    """SimpleITK reads NaN voxels of a MetaImage as NaN; the check after reading names them."""
    labels, _ = beating_sequence(6, 10.0, 0.0, shape=(40, 30), length=20.0, half_width=8.0, noise=0.0)
    labels = labels.astype(np.float32)
    labels[2, 0, 0] = np.inf
    path = write_sequence(tmp_path / "loop.mha", labels, dtype=np.float32)
    with pytest.raises(InputError, match=r"contains 1 NaN or infinite voxel value\(s\)"):
        read_label_sequence(path)


def test_nii_beside_nii_gz_in_a_sequence_folder_is_refused(tmp_path):
    labels, _ = beating_sequence(3, 10.0, 0.0, shape=(40, 30), length=20.0, half_width=8.0, noise=0.0)
    for name in ("a.nii.gz", "b.nii.gz", "b.nii"):
        write_sequence(tmp_path / name, labels)
    with pytest.raises(InputError, match="same name") as error:
        list_sequences(tmp_path)
    assert error.value.path == tmp_path / "b.nii.gz" and str(tmp_path / "b.nii") in error.value.problem
    (tmp_path / "b.nii").unlink()
    assert list_sequences(tmp_path) == [tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"]


@pytest.mark.parametrize("period, n_frames", [(3, 7), (4, 9), (4, 12)])
def test_a_loop_with_too_few_frames_per_beat_reports_no_ef_and_says_why(period, n_frames):
    """Sampled at 3 or 4 frames per beat, the smoothed curve's turning points are not the heart's: beats were found
    from ED to a frame that is another ED (EF 0.0) or across several beats (EF 26 for a true 46), with nothing
    said. Such a beat is left out of the EF and named in the note. (A beat that looks resolved at such a
    rate is left out by the loop's rhythm instead, from 10 frames on: the tests below.)"""
    labels, _ = beating_sequence(n_frames, period, 0.0, noise=0.0)
    analysis = analyse_label_sequence(labels, (0.3, 0.3), "coarse")
    assert analysis.beats and all(beat.unresolved for beat in analysis.beats)
    assert math.isnan(analysis.ef_percent)
    for beat in analysis.beats:
        assert (f"beat {beat.describe()}: the volume swings beyond its ED and ES volumes in between (too few frames "
                f"per beat, or badly segmented frames): left out of the EF") in analysis.note


@pytest.mark.parametrize("period", [5, 6, 8, 16])
def test_a_loop_with_enough_frames_per_beat_has_every_beat_in_its_ef(period):
    labels, _ = beating_sequence(3 * period, period, 0.0, noise=0.01)
    analysis = analyse_label_sequence(labels, (0.3, 0.3), "fine")
    assert analysis.frames_per_beat == pytest.approx(period, rel=0.05) and not analysis.too_few_frames_per_beat
    assert analysis.beats and not any(beat.unresolved for beat in analysis.beats)
    assert analysis.beats_in_ef == analysis.beats
    assert analysis.ef_percent == pytest.approx(np.mean([beat.ef_percent for beat in analysis.beats]))
    assert "left out of the EF" not in analysis.note


def test_one_bad_frame_inside_a_systole_leaves_the_beat_in_the_ef():
    volumes = 100 - 40 * 0.5 * (1 - np.cos(2 * np.pi * np.arange(55) / 30))
    volumes[7] = 40.0  # one badly segmented frame between ED 0 and ES 15, below the ES volume
    _, beats = detect_beats(volumes)
    assert [(beat.ed_frame, beat.es_frame) for beat in beats][0] == (0, 15) and not beats[0].unresolved


@pytest.mark.parametrize("period", [2.5, 3, 3.5, 4, 4.5, 5, 6, 8, 16, 40])
@pytest.mark.parametrize("seed", range(3))
def test_the_rhythm_of_a_volume_curve_is_its_frames_per_beat(period, seed):
    rng = np.random.default_rng(seed)
    n_frames = max(int(rng.choice([2.5, 3, 4]) * period) + 1, 10)  # shorter is not judged
    volumes = 100 - 40 * 0.5 * (1 - np.cos(2 * np.pi * (np.arange(n_frames) - rng.uniform(0, period)) / period))
    volumes *= 1 + 0.017 * rng.standard_normal(n_frames)
    assert rhythm_period(volumes) == pytest.approx(period, rel=0.06)


def test_a_curve_too_short_or_flat_for_a_rhythm_is_not_judged():
    assert rhythm_period(100 - 5 * np.arange(9.0)) == math.inf  # a half sequence of 9 frames: its length, not a beat
    assert rhythm_period(np.full(40, 80.0)) == math.inf


@pytest.mark.parametrize("period", [2.5, 3, 3.5, 4, 4.5])
@pytest.mark.parametrize("seed", range(4))
def test_a_loop_below_five_frames_per_beat_has_no_ef_whatever_beats_were_found(period, seed):
    """Before: at 2.5-4.5 frames per beat (1 % noise, any phase), EFs 8-70 points below the loop's own, most of
    them with no note: the curve's turning points are not the heart's, and a beat can look well resolved."""
    first_ed = np.random.default_rng(seed).uniform(0, period)
    labels, _ = beating_sequence(int(4 * period) + 1, period, first_ed, noise=0.01, seed=seed)
    analysis = analyse_label_sequence(labels, (0.3, 0.3), "coarse")
    assert analysis.frames_per_beat < MIN_FRAMES_PER_BEAT and analysis.too_few_frames_per_beat
    assert math.isnan(analysis.ef_percent) and analysis.beats_in_ef == []
    assert analysis.note.startswith(f"the LV volume curve repeats every {analysis.frames_per_beat:.1f} frames: too "
                                    f"few frames per beat to find ED and ES (about 5 needed), or a segmentation "
                                    f"that flickers from frame to frame; every beat left out of the EF")
    assert analysis.ef_text == ("no EF: too few frames per beat" if analysis.beats else "no EF: no beat found")


@pytest.mark.parametrize("n_frames", [10, 14, 20, 30])
def test_a_half_sequence_keeps_its_ef_however_few_its_frames(n_frames):
    """CAMUS's half sequences run from ED to ES: half a beat, whose rhythm reads as about its own length."""
    labels, _ = beating_sequence(n_frames, 2.0 * (n_frames - 1), 0.0, noise=0.01)
    analysis = analyse_label_sequence(labels, (0.3, 0.3), "half")
    assert not analysis.too_few_frames_per_beat
    [beat] = analysis.beats_in_ef
    assert beat.ed_frame <= 2 and beat.es_frame >= n_frames - 3  # the flat ends differ by the noise only
    assert abs(analysis.ef_percent - 100 * (1 - ES_SCALE ** 3)) < 5.0
