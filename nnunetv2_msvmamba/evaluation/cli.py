"""`msvmamba_evaluate`: paper-style echo metrics of one or more nnU-Net prediction folders against the
ground truth, and their side-by-side comparison."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from nnunetv2.configuration import default_num_processes

from nnunetv2_msvmamba.common.arguments import parse_predictions, positive_int
from nnunetv2_msvmamba.common.atomic import check_writable
from nnunetv2_msvmamba.common.errors import InputError, exit_status_of
from .case_metadata import load_case_metadata
from .evaluate import evaluate_folders
from .report import overall_tables, write_reports

DATASET_JSON = "dataset.json"
CASES_CSV = "cases.csv"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msvmamba_evaluate",
        description="Scores nnU-Net prediction folders against ground-truth labels with the echo metrics of the "
                    "MSV-Mamba paper (LV_endo, LV_epi, myocardium, LA; Dice, HD95 and mean surface distance in mm, "
                    "area/volume) and compares the models side by side, with Wilcoxon signed-rank p-values "
                    "against the first model.",
        epilog="Writes metrics_per_case.csv, summary.json, summary.md and boxplot.png to the output folder. "
               "Example: msvmamba_evaluate --gt $nnUNet_raw/Dataset501_CAMUS/labelsTs "
               "--pred nnUNet=pred_nnunet --pred MSV-Mamba=pred_msvmamba -o eval_camus")
    parser.add_argument("--gt", required=True, type=Path, metavar="LABELS_DIR",
                        help="ground-truth label folder, e.g. $nnUNet_raw/DatasetXXX/labelsTs")
    parser.add_argument("--pred", required=True, action="append", metavar="NAME=PRED_DIR",
                        help="a model's nnU-Net prediction folder under a display name; repeat for more models. "
                             "The first model is the reference of the paired differences. A bare PRED_DIR is "
                             "named after its folder")
    parser.add_argument("--dataset-json", type=Path, metavar="FILE",
                        help="the dataset's dataset.json (labels, file ending); default: the one beside LABELS_DIR "
                             "if there is one, otherwise the labels present in the ground truth are used")
    parser.add_argument("--cases", type=Path, metavar="FILE",
                        help="case descriptions (columns case, phase, view, image_quality) for the breakdowns; "
                             "default: cases.csv beside dataset.json if there is one")
    parser.add_argument("-o", "--output", type=Path, default=Path("msvmamba_evaluation"), metavar="OUT_DIR",
                        help="folder for the reports (default: %(default)s)")
    parser.add_argument("-np", "--num-processes", type=positive_int, default=default_num_processes, metavar="N",
                        help="worker processes over cases (default: %(default)s, nnU-Net's default)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="evaluate the cases a prediction folder has and list the ones it lacks, instead of "
                             "stopping with an error")
    return parser


def find_beside(explicit: Optional[Path], candidates: Sequence[Path], notes: list[str], what: str) -> Optional[Path]:
    """`explicit` if given (it must exist), otherwise the first candidate that exists (with a note)."""
    if explicit is not None:
        if not explicit.is_file():
            raise InputError(explicit, f"{what} does not exist")
        return explicit
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    if found is not None:
        notes.append(f"using {found} (found beside the ground truth)")
    return found


def run(args: argparse.Namespace) -> None:
    if not args.gt.is_dir():
        raise InputError(args.gt, "ground-truth label folder does not exist")
    if args.output.exists() and not args.output.is_dir():
        raise InputError(args.output, "exists and is not a folder; -o names the folder for the reports")
    check_writable(args.output)
    predictions = parse_predictions(args.pred)
    notes: list[str] = []
    dataset_json = find_beside(args.dataset_json, [args.gt.parent / DATASET_JSON], notes, DATASET_JSON)
    cases_csv = find_beside(args.cases, [folder / CASES_CSV for folder in
                                         ([dataset_json.parent] if dataset_json else []) + [args.gt.parent]],
                            notes, CASES_CSV)
    metadata = load_case_metadata(cases_csv, notes) if cases_csv is not None else {}
    evaluation = evaluate_folders(args.gt, predictions, dataset_json, metadata, args.num_processes,
                                  args.allow_missing, notes)
    document = write_reports(evaluation, args.output)
    for note in notes:
        print(f"note: {note}")
    print(overall_tables(document))
    print(f"wrote metrics_per_case.csv, summary.json, summary.md and boxplot.png to {args.output}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (2 for bad input, with a one-line error)."""
    args = build_parser().parse_args(argv)
    return exit_status_of(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
