"""`msvmamba_clinical`: LV volumes and ejection fraction from nnU-Net label folders (CAMUS or EchoNet-Dynamic
ED/ES cases) and their agreement with a reference, or the volume curve, ED/ES frames and per-beat EF of label
sequences."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from nnunetv2.configuration import default_num_processes

from nnunetv2_msvmamba.common.arguments import parse_predictions, positive_float, positive_int
from nnunetv2_msvmamba.common.errors import InputError, exit_status_of
from .cases import check_matches, measure_folder, name_some
from .reference_values import load_reference_values
from .report import (CASES_NAME, IMPLAUSIBLE, REFERENCE_NAME, ClinicalResults, agreement_table, means_table,
                     write_clinical_reports)
from .sequence import analyse_label_sequence, list_sequences, read_label_sequence, sequence_name, \
    write_sequence_reports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msvmamba_clinical",
        description="Cardiac function from segmentations. Label folders: EDV, ESV (mL) and EF of every patient "
                    "by Simpson's biplane method of discs (CAMUS cases <patient>_{2CH,4CH}_{ED,ES}) or the "
                    "single-plane method (EchoNet-Dynamic cases <FileName>_{ED,ES}), and their agreement "
                    "(Pearson r, bias, limits of agreement, MAE) with the ground truth and/or the dataset's own "
                    "values in cases.csv. Label sequences (--sequence): per-frame LV area and volume, ED/ES "
                    "frames detected from the volume curve, EF per beat.",
        epilog="Writes clinical_per_patient.csv, clinical_summary.json, clinical_summary.md, bland_altman.png and "
               "scatter.png (label folders), or sequence_frames.csv, sequence_summary.csv and one "
               "<sequence>_volume_curve.png per sequence (--sequence). Example: msvmamba_clinical "
               "--pred MSV-Mamba=pred_msvmamba --reference $nnUNet_raw/Dataset601_CAMUS/labelsTs "
               "--cases $nnUNet_raw/Dataset601_CAMUS/cases.csv -o clinical_camus")
    parser.add_argument("--pred", action="append", default=[], metavar="NAME=FOLDER",
                        help="a model's nnU-Net prediction folder under a display name; repeat for more models")
    parser.add_argument("--reference", type=Path, metavar="FOLDER",
                        help="ground-truth label folder (e.g. $nnUNet_raw/DatasetXXX/labelsTs), measured the same "
                             "way and compared with every model; shown as model 'reference'")
    parser.add_argument("--cases", type=Path, metavar="CSV",
                        help="the converter's cases.csv: the CAMUS EF (Info_*.cfg) or the EchoNet-Dynamic EF, EDV "
                             "and ESV (FileList.csv) as a further reference")
    parser.add_argument("--sequence", type=Path, metavar="PATH",
                        help="a label sequence (3D image, frames on the last axis as CAMUS *_half_sequence_gt."
                             "nii.gz) or a folder of them, instead of label folders")
    parser.add_argument("--spacing", type=positive_float, metavar="MM",
                        help="pixel spacing in mm for files without one (EchoNet-Dynamic); without it their "
                             "volumes are in pixels³. A file with a different spacing of its own is an error")
    parser.add_argument("-o", "--output", type=Path, default=Path("msvmamba_clinical"), metavar="OUT_DIR",
                        help="folder for the reports (default: %(default)s)")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=default_num_processes, metavar="N",
                        help="worker processes over patients (default: %(default)s, nnU-Net's default)")
    return parser


def run_folders(args: argparse.Namespace) -> None:
    if not args.pred and args.reference is None:
        raise InputError("--pred", "give at least one --pred NAME=FOLDER or --reference FOLDER (or --sequence)")
    if args.reference is not None and not args.reference.is_dir():
        raise InputError(args.reference, "reference label folder does not exist")
    if args.cases is not None and not args.cases.is_file():
        raise InputError(args.cases, "cases.csv does not exist")
    predictions = parse_predictions(args.pred)
    if REFERENCE_NAME in predictions or CASES_NAME in predictions:
        raise InputError(f"--pred {REFERENCE_NAME}", f"the model names '{REFERENCE_NAME}' and '{CASES_NAME}' are "
                                                     f"reserved")
    notes: list[str] = []
    measured = {name: measure_folder(folder, args.spacing, args.num_processes, notes, description=name)
                for name, folder in predictions.items()}
    reference = measure_folder(args.reference, args.spacing, args.num_processes, notes, description=REFERENCE_NAME) \
        if args.reference is not None else None
    if reference is not None:
        for name, volumes in measured.items():
            check_matches(reference, volumes, name, notes)
    folders = {**measured, **({REFERENCE_NAME: reference} if reference is not None else {})}
    kinds = {folder.kind for folder in folders.values()}
    if len(kinds) > 1:
        raise InputError("--pred", f"the folders hold different kinds of cases ({', '.join(sorted(kinds))})")
    patients_of = {name: (folder.patients if reference is None or name == REFERENCE_NAME else
                          {p: v for p, v in folder.patients.items() if p in reference.patients})
                   for name, folder in folders.items()}
    series = dict(patients_of)
    comparisons = [(name, REFERENCE_NAME) for name in measured] if reference is not None else []
    if args.cases is not None:
        dataset_values = load_reference_values(args.cases)
        measured_patients = {patient for patients in patients_of.values() for patient in patients}
        series[CASES_NAME] = {p: v for p, v in dataset_values.items() if p in measured_patients}
        if not series[CASES_NAME]:
            raise InputError(args.cases, "has no values for any of the measured patients")
        notes += [f"{args.cases}: patient {patient}: {note}" for patient, values in series[CASES_NAME].items()
                  for note in values.notes]
        comparisons += [(name, CASES_NAME) for name in patients_of]
    physical = all(v.physical for patients in patients_of.values() for v in patients.values())
    if not physical and args.cases is not None:
        notes.append("volumes are in pixels³ (no pixel spacing; pass --spacing MM): only the EF is compared with "
                     "cases.csv, whose EDV/ESV are in mL")
    sources = {**{name: str(folder) for name, folder in predictions.items()},
               **({REFERENCE_NAME: str(args.reference)} if reference is not None else {}),
               **({CASES_NAME: str(args.cases)} if args.cases is not None else {})}
    results = ClinicalResults(next(iter(kinds)), physical, series, sources, comparisons, notes)
    document = write_clinical_reports(results, args.output)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for name, patients in document["implausible"]["patients"].items():
        print(f"warning: {name}: {len(patients)} of {len(series[name])} patient(s) with {IMPLAUSIBLE}: "
              f"{name_some(patients)}; see the note column of clinical_per_patient.csv", file=sys.stderr)
    print(means_table(document))
    if document["agreement"]:
        print()
        print(agreement_table(document))
    print(f"wrote clinical_per_patient.csv, clinical_summary.json, clinical_summary.md"
          f"{', bland_altman.png and scatter.png' if document['agreement'] else ''} to {args.output}")


def run_sequences(args: argparse.Namespace) -> None:
    if args.pred or args.reference is not None or args.cases is not None:
        raise InputError("--sequence", "cannot be combined with --pred, --reference or --cases")
    analyses = {}
    for path in list_sequences(args.sequence):
        labels, spacing = read_label_sequence(path, args.spacing)
        if len(labels) < 2:
            raise InputError(path, f"has {len(labels)} frame; a sequence needs at least 2")
        analyses[path] = analyse_label_sequence(labels, spacing, sequence_name(path), source=path)
    write_sequence_reports(list(analyses.values()), args.output)
    for path, analysis in analyses.items():
        counted = analysis.beats_in_ef
        beats = ", ".join(f"{b.describe()}: EF {b.ef_percent:.1f}%" + (" (ESV > EDV!)" if b.implausible else "")
                          + ("" if b in counted else " (left out)") for b in analysis.beats)
        print(f"{analysis.name}: {len(analysis.lv_volume)} frames, {analysis.ef_text}"
              + (f"; {beats}" if beats else ""))
        if analysis.note:
            prefix = "warning" if analysis.implausible_beats else "note"
            print(f"{prefix}: {path}: {analysis.note}", file=sys.stderr)
    print(f"wrote sequence_frames.csv, sequence_summary.csv and {len(analyses)} volume curve(s) to {args.output}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad input, with a one-line error)."""
    args = build_parser().parse_args(argv)
    return exit_status_of(lambda: run_sequences(args) if args.sequence is not None else run_folders(args))


if __name__ == "__main__":
    sys.exit(main())
