"""nnunetv2_msvmamba/video/runs.py: nnU-Net's -num_parts/-part_id split, loop records that make --continue and
rebuilt summaries possible, and the reference EF of EchoNet-Dynamic's FileList.csv and CAMUS's Info files with
its agreement over loops. (The command itself, run in parts, killed and continued: tests/e2e/test_video_parts.py.)"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpers.tables import read_rows
from nnunetv2_msvmamba.clinical import plot
from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.video import runs
from nnunetv2_msvmamba.video.sources import camus_frame_rate

VIDEO_COLUMNS = ("sequence", "ef_percent", "implausible_beats", "reference_ef_percent", "labels")


def test_parts_are_nnunet_slices_of_the_sorted_loops():
    loops = [Path(f"loop{index}.avi") for index in range(7)]
    parts = [runs.part_of(loops, 3, part) for part in range(3)]
    assert parts == [loops[0::3], loops[1::3], loops[2::3]]
    assert sorted(loop for part in parts for loop in part) == loops
    assert runs.part_of(loops, 1, 0) == loops


@pytest.mark.parametrize("num_parts, part_id, option, problem", [
    (2, 2, "-part_id", "must be from 0 to 1 with -num_parts 2, got 2"),
    (2, -1, "-part_id", "must be from 0 to 1 with -num_parts 2, got -1"),
    (0, 0, "-num_parts", "must be at least 1, got 0"),
])
def test_a_part_that_does_not_exist_is_refused(num_parts, part_id, option, problem):
    with pytest.raises(InputError) as raised:
        runs.part_of([Path("a.avi")], num_parts, part_id)
    assert str(raised.value) == f"{option}: {problem}"


def record(output: Path, name: str, order: int, ef: str, reference: str = "",
           implausible: str = "") -> None:
    labels = output / f"{name}.nii.gz"
    labels.write_text("labels")
    runs.write_loop_record(output, name, order, [labels],
                           {"sequence": name, "ef_percent": ef, "implausible_beats": implausible,
                            "reference_ef_percent": reference, "labels": labels.name},
                           {"sequence": name, "frames": 2, "ef_percent": float(ef) if ef else math.nan},
                           [{"sequence": name, "frame": frame, "lv_area": 1.5 * frame} for frame in range(2)])


def test_a_loop_is_complete_when_its_record_and_every_file_it_names_are_there(tmp_path):
    assert not runs.loop_is_complete(tmp_path, "a")
    record(tmp_path, "a", 0, "60.00")
    assert runs.loop_is_complete(tmp_path, "a")
    (tmp_path / "a.nii.gz").unlink()  # a file removed after the record: the loop is redone
    assert not runs.loop_is_complete(tmp_path, "a")
    record(tmp_path, "b", 1, "55.00")
    runs.record_path(tmp_path, "b").write_text('{"sequence": "b", "ord')  # cut short: redone, not an error
    assert not runs.loop_is_complete(tmp_path, "b")


def test_summaries_are_rebuilt_from_every_record_in_run_order(tmp_path):
    record(tmp_path, "zz_first", 0, "60.00")
    record(tmp_path, "aa_second", 1, "")  # no EF (no complete beat): listed, no sequence-summary EF
    records = runs.rebuild_summaries(tmp_path, VIDEO_COLUMNS)
    assert [r["sequence"] for r in records] == ["zz_first", "aa_second"]
    assert [row["sequence"] for row in read_rows(tmp_path / "video_summary.csv")] == ["zz_first", "aa_second"]
    frames = read_rows(tmp_path / "sequence_frames.csv")
    assert [(row["sequence"], row["frame"], row["lv_area"]) for row in frames] == [
        ("zz_first", "0", "0.0"), ("zz_first", "1", "1.5"), ("aa_second", "0", "0.0"), ("aa_second", "1", "1.5")]
    assert not (tmp_path / runs.EF_AGREEMENT_JSON).exists()  # no reference EF anywhere


def test_ef_agreement_over_loops_with_a_reference(tmp_path):
    for order, (ef, reference) in enumerate([("60", "58"), ("50", "53"), ("40", "40"), ("", "45")]):
        record(tmp_path, f"loop{order}", order, ef, reference)
    runs.rebuild_summaries(tmp_path, VIDEO_COLUMNS)
    document = json.loads((tmp_path / runs.EF_AGREEMENT_JSON).read_text())
    assert document["n"] == 3 and document["loops_without_ef"] == ["loop3"]
    assert document["bias"] == pytest.approx((2 - 3 + 0) / 3)
    assert document["mae"] == pytest.approx(5 / 3)
    assert document["loa_lower"] < document["bias"] < document["loa_upper"]
    assert -1 <= document["pearson_r"] <= 1
    assert (tmp_path / runs.EF_BLAND_ALTMAN_PNG).stat().st_size > 0
    assert document["loops_with_implausible_beats"] == []


def test_ef_agreement_flags_the_loops_whose_ef_has_a_beat_with_esv_above_edv(tmp_path, monkeypatch):
    """A barely trained model gave one loop an EF of -57.0 (ESV > EDV), and it was reported as a plain number."""
    plotted = {}
    draw = plot.agreement_grid
    monkeypatch.setattr(plot, "agreement_grid",
                        lambda comparisons, *args, **kwargs: plotted.update(comparison=comparisons[0])
                        or draw(comparisons, *args, **kwargs))
    for order, (ef, implausible) in enumerate([("60", "0"), ("-57", "1"), ("20", "1"), ("", "")]):
        record(tmp_path, f"loop{order}", order, ef, "50", implausible)
    record(tmp_path, "before_the_flag", 4, "55", "50")  # a record written before the column existed
    runs.rebuild_summaries(tmp_path, VIDEO_COLUMNS)
    document = json.loads((tmp_path / runs.EF_AGREEMENT_JSON).read_text())
    assert document["loops_with_implausible_beats"] == ["loop1", "loop2"]
    assert [pair["implausible_beats"] for pair in document["pairs"]] == [0, 1, 1, 0, 0]
    assert document["n"] == 4  # the model's EF as measured: its failures count against its agreement
    assert "ESV > EDV" in document["implausible"]
    drawn = plotted["comparison"]
    assert drawn["flagged"]["ef"].tolist() == [False, True, True, False]  # the loops with an EF, in order
    assert drawn["flag_label"] == "a beat with ESV > EDV"


def write_file_list(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("FileName,EF,ESV,EDV,Split\n" + "".join(f"{name},{ef},1,2,TEST\n" for name, ef in rows))
    return path


def test_file_list_gives_the_reference_ef_of_every_loop(tmp_path):
    file_list = write_file_list(tmp_path / "FileList.csv", [("0X1", "61.5"), ("0X2.avi", "40")])
    loops = [tmp_path / "0X1.avi", tmp_path / "0X2.avi"]
    assert runs.reference_efs(loops, ["0X1", "0X2"], file_list) == {"0X1": 61.5, "0X2": 40.0}


@pytest.mark.parametrize("content, problem", [
    (None, "not found"),
    ("FileName,ESV\n0X1,3\n", "no EF column: not EchoNet-Dynamic's FileList.csv"),
    ("FileName,EF\n0X1,abc\n", "line 2: EF 'abc' is not a number"),
    ("FileName,EF\n0X1,140\n", "line 2: EF '140' is not a percentage from 0 to 100"),
    ("FileName,EF\n0X9,50\n", "no row for 0X1.avi (FileName 0X1)"),
])
def test_a_file_list_that_cannot_give_every_loop_its_ef_is_refused(tmp_path, content, problem):
    file_list = tmp_path / "FileList.csv"
    if content is not None:
        file_list.write_text(content)
    with pytest.raises(InputError) as raised:
        runs.reference_efs([tmp_path / "0X1.avi"], ["0X1"], file_list)
    assert str(raised.value) == f"{file_list}: {problem}"


def test_camus_info_beside_a_half_sequence_gives_its_ef(tmp_path):
    loop = tmp_path / "patient0001_4CH_half_sequence.nii.gz"
    other = tmp_path / "patient0001_2CH_half_sequence.nii.gz"
    (tmp_path / "Info_4CH.cfg").write_text("ED: 1\nES: 12\nLVedv: 90.1\nLVesv: 40.2\nLVef: 55.4\n")
    assert runs.reference_efs([loop, other], ["a", "b"], None) == {"a": 55.4}  # no Info_2CH.cfg: no reference
    (tmp_path / "Info_2CH.cfg").write_text("LVef: n/a\n")
    with pytest.raises(InputError, match="Info_2CH.cfg: LVef 'n/a' is not a number"):
        runs.reference_efs([other], ["b"], None)


def test_the_2023_release_info_ef_is_read_as_the_converter_reads_it(tmp_path):
    """CAMUS 2023's Info files (the release that has half sequences) say EF, not the challenge release's LVef."""
    loop = tmp_path / "patient0003_2CH_half_sequence.nii.gz"
    (tmp_path / "Info_2CH.cfg").write_text("ED: 1\nES: 17\nNbFrame: 17\nSex: F\nAge: 46\nImageQuality: Medium\n"
                                           "EF: 49\nFrameRate: 44\n")
    assert runs.reference_efs([loop], ["patient0003_2CH_half_sequence"], None) == {"patient0003_2CH_half_sequence": 49.0}
    assert camus_frame_rate(loop) == 44.0
