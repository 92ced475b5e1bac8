"""`msvmamba_demo`'s report of the whole-video step: each loop's EF as video_summary.csv gives it, flagged where a
beat in it has ESV > EDV."""
from __future__ import annotations

from nnunetv2_msvmamba.common.tables import write_csv
from nnunetv2_msvmamba.demo import report
from nnunetv2_msvmamba.demo.steps import DemoPaths


def test_the_video_report_flags_an_ef_with_a_beat_whose_esv_is_above_its_edv(tmp_path, capsys):
    paths = DemoPaths.create(tmp_path, use_nnunet_env=False)
    paths.video.mkdir()
    (tmp_path / "raw").mkdir()
    write_csv([{"patient": "patient0001", "EF": "55"}], ("patient", "EF"), tmp_path / "raw" / "cases.csv")
    common = {"frames": "20", "ed_frames": "0", "es_frames": "9", "note": ""}
    rows = [{"sequence": "patient0001_2CH", "ef_percent": "58.10", "implausible_beats": "0", "overlay": "a.mp4", **common},
            {"sequence": "patient0001_4CH", "ef_percent": "-57.00", "implausible_beats": "1", "overlay": "b.mp4",
             **common}]
    write_csv(rows, list(rows[0]), paths.video / "video_summary.csv")
    overlays = report.report_video(paths, tmp_path / "raw", "patient0001")
    output = capsys.readouterr().out
    assert overlays == [paths.video / "a.mp4", paths.video / "b.mp4"]
    assert "patient0001_2CH: 20 frames, ED frames 0, ES frames 9, EF 58.1 %\n" in output
    assert ("patient0001_4CH: 20 frames, ED frames 0, ES frames 9, EF -57.0 % (1 beat(s) with ESV > EDV: "
            "physiologically implausible)\n") in output
