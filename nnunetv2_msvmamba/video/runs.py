"""Large runs of msvmamba_predict_video, split and resumed the nnU-Net way, and the loops' EF against the
dataset's own.

* `-num_parts N -part_id K`: this process takes loops[K::N] of the sorted inputs, as nnUNetv2_predict splits its
  cases; any number of processes or machines write into the same output folder.
* Each finished loop leaves a record, `<loop>_loop.json` (written last, atomically, after its labels, overlay and
  volume curve): its rows of the summaries and the files it wrote. `--continue` skips a loop whose record is there
  and whose files are all present.
* The summaries (`video_summary.csv`, `sequence_summary.csv`, `sequence_frames.csv`, and the EF agreement when a
  reference is known) are rebuilt from all the records in the folder at the end of every part, so the last part to
  finish leaves the summary of every loop.
* Reference EF: EchoNet-Dynamic's `FileList.csv` (`--file-list`), or the EF (`EF`, or the challenge release's `LVef`) of the CAMUS `Info_<view>.cfg`
  beside a half sequence."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from nnunetv2_msvmamba.clinical.agreement import agreement
from nnunetv2_msvmamba.clinical.sequence import FRAME_COLUMNS, SUMMARY_COLUMNS as SEQUENCE_COLUMNS
from nnunetv2_msvmamba.clinical.volumes import IMPLAUSIBLE
from nnunetv2_msvmamba.common.atomic import write_json_atomically
from nnunetv2_msvmamba.common.errors import InputError
from nnunetv2_msvmamba.common.tables import read_csv_table, write_csv
from .sources import camus_info

RECORD_SUFFIX = "_loop.json"
EF_AGREEMENT_JSON = "ef_agreement.json"
EF_BLAND_ALTMAN_PNG = "ef_bland_altman.png"
IMPLAUSIBLE_IN_BEAT = "a beat with ESV > EDV"  # beside the loops' EFs that have one, in the Bland-Altman plot


# ---------------------------------------------------------------------------------------------- splitting

def check_part(num_parts: int, part_id: int) -> None:
    if num_parts < 1:
        raise InputError("-num_parts", f"must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise InputError("-part_id", f"must be from 0 to {num_parts - 1} with -num_parts {num_parts}, got {part_id}")


def part_of(loops: Sequence[Path], num_parts: int, part_id: int) -> list[Path]:
    """This part's loops: loops[part_id::num_parts], nnUNetv2_predict's meaning of -num_parts/-part_id."""
    check_part(num_parts, part_id)
    return list(loops)[part_id::num_parts]


# ---------------------------------------------------------------------------------------------- loop records

def record_path(output: Path, name: str) -> Path:
    return output / f"{name}{RECORD_SUFFIX}"


def write_loop_record(output: Path, name: str, order: int, files: Sequence[Path], video_row: dict,
                      sequence_row: Optional[dict], frame_rows: Sequence[dict],
                      destination: Optional[Path] = None) -> None:
    """The record that makes a loop complete, naming the loop's `files` in `output`; written after them, into
    `destination` (a staging folder whose files move into `output` together) or `output`. `order`: the loop's
    place among all the inputs of the run, so that rebuilt summaries list the loops as one run would."""
    write_json_atomically({"sequence": name, "order": order,
                           "files": [Path(path).relative_to(output).as_posix() for path in files],
                           "video_summary": video_row, "sequence_summary": sequence_row,
                           "sequence_frames": list(frame_rows)}, record_path(destination or output, name))


def read_record(path: Path) -> Optional[dict]:
    """A loop record, or None where it is missing or unreadable (a loop to redo, not an error)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and {"sequence", "order", "files"} <= set(record) else None


def loop_is_complete(output: Path, name: str) -> bool:
    """True when the loop's record is there and every file it names exists: `--continue` skips it."""
    record = read_record(record_path(output, name))
    return record is not None and all((output / file).is_file() for file in record["files"])


def finished_records(output: Path) -> list[dict]:
    """The records of every complete loop in `output`, in run order."""
    records = []
    for path in output.glob(f"*{RECORD_SUFFIX}"):
        record = read_record(path)
        if record is not None and loop_is_complete(output, record["sequence"]):
            records.append(record)
    return sorted(records, key=lambda record: (record["order"], record["sequence"]))


def rebuild_summaries(output: Path, video_columns: Sequence[str], destination: Optional[Path] = None) -> list[dict]:
    """video_summary.csv, sequence_summary.csv and sequence_frames.csv of every complete loop in `output`, and the
    EF agreement where loops have a reference EF, written to `destination` (default: `output`); returns the
    records used."""
    records = finished_records(output)
    output = destination or output
    write_csv([record["video_summary"] for record in records], video_columns, output / "video_summary.csv")
    sequences = [record["sequence_summary"] for record in records if record["sequence_summary"] is not None]
    frames = [row for record in records for row in record["sequence_frames"]]
    if sequences:
        write_csv(sequences, SEQUENCE_COLUMNS, output / "sequence_summary.csv")
        write_csv(frames, FRAME_COLUMNS, output / "sequence_frames.csv")
    write_ef_agreement(records, output)
    return records


def frame_count(path: Path) -> int:
    """The number of frames a loop's header announces (for the progress bar's total before the loop is read), 0
    where it cannot tell."""
    import cv2
    import SimpleITK as sitk
    try:
        if path.name.lower().endswith(".avi"):
            capture = cv2.VideoCapture(str(path))
            try:
                return max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            finally:
                capture.release()
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = reader.GetSize()
        return size[2] if len(size) > 2 else 1
    except (RuntimeError, cv2.error):
        return 0


# ---------------------------------------------------------------------------------------------- reference EF

def file_list_ef(path: Path) -> dict[str, float]:
    """EF per video name (no extension) from EchoNet-Dynamic's FileList.csv."""
    if not path.is_file():
        raise InputError(path, "not found")
    columns, rows = read_csv_table(path)
    missing = [column for column in ("FileName", "EF") if column not in columns]
    if missing:
        raise InputError(path, f"no {' and no '.join(missing)} column: not EchoNet-Dynamic's FileList.csv")
    efs = {}
    for line, row in enumerate(rows, start=2):
        try:
            ef = float(row["EF"])
        except ValueError:
            raise InputError(path, f"line {line}: EF {row['EF']!r} is not a number") from None
        if not math.isfinite(ef) or not 0 <= ef <= 100:
            raise InputError(path, f"line {line}: EF {row['EF']!r} is not a percentage from 0 to 100")
        name = row["FileName"]
        efs[name[:-4] if name.lower().endswith(".avi") else name] = ef
    return efs


# The 2023 release's Info files say EF, the challenge release's LVef (as the CAMUS converter reads them).
CAMUS_EF_KEYS = ("EF", "LVef")


def camus_info_ef(loop: Path) -> Optional[float]:
    """The EF of the CAMUS Info_<view>.cfg beside `patientNNNN_<view>_half_sequence.nii.gz`, if there is one."""
    info, entries = camus_info(loop)
    key = next((key for key in CAMUS_EF_KEYS if key in entries), None)
    if key is None:
        return None
    try:
        ef = float(entries[key])
    except ValueError:
        raise InputError(info, f"{key} {entries[key]!r} is not a number") from None
    return ef if math.isfinite(ef) else None


def reference_efs(loops: Sequence[Path], names: Sequence[str], file_list: Optional[Path]) -> dict[str, float]:
    """The reference EF of each loop: from `file_list` (every loop must be in it), else from CAMUS's Info files
    where they are."""
    if file_list is not None:
        efs = file_list_ef(file_list)
        for loop, name in zip(loops, names):
            if name not in efs:
                raise InputError(file_list, f"no row for {loop.name} (FileName {name})")
        return {name: efs[name] for name in names}
    found = {name: camus_info_ef(loop) for loop, name in zip(loops, names)}
    return {name: ef for name, ef in found.items() if ef is not None}


def write_ef_agreement(records: Sequence[dict], output: Path) -> Optional[dict]:
    """ef_agreement.json (r, bias, limits of agreement, MAE over the loops with both EFs, and each pair) and
    ef_bland_altman.png, when any loop has a reference EF."""
    summaries = [record["video_summary"] for record in records
                 if record["video_summary"].get("reference_ef_percent") not in (None, "")]
    if not summaries:
        return None
    # records written before the column existed have no implausible_beats: their EF was not flagged
    pairs = [(row["sequence"], float(row["ef_percent"] or "nan"), float(row["reference_ef_percent"]),
              int(row.get("implausible_beats") or 0)) for row in summaries]
    measured = np.array([pair[1] for pair in pairs])
    reference = np.array([pair[2] for pair in pairs])
    stats = agreement(measured, reference)
    document = {"metric": "EF (%), mean over the beats of each loop, against the dataset's own", **stats,
                "implausible": f"loops whose EF includes a beat with {IMPLAUSIBLE}; in the statistics as measured",
                "loops_with_implausible_beats": [name for name, _, _, implausible in pairs if implausible],
                "loops_without_ef": [name for name, ef, _, _ in pairs if not math.isfinite(ef)],
                "pairs": [{"sequence": name, "ef_percent": ef if math.isfinite(ef) else None,
                           "reference_ef_percent": ref, "implausible_beats": implausible}
                          for name, ef, ref, implausible in pairs]}
    write_json_atomically(document, output / EF_AGREEMENT_JSON)
    both = np.isfinite(measured)
    implausible = np.array([pair[3] > 0 for pair in pairs])
    from nnunetv2_msvmamba.clinical.plot import agreement_grid
    comparison = {"model": "predicted", "reference": "dataset", "pairs": {"ef": (measured[both], reference[both])},
                  "stats": {"ef": stats}, "flagged": {"ef": implausible[both]}, "flag_label": IMPLAUSIBLE_IN_BEAT}
    agreement_grid([comparison], [("ef", "EF %")], output / EF_BLAND_ALTMAN_PNG, bland_altman=True)
    return document
