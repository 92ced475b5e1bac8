"""What the demo prints at the end: the segmentation comparison (from msvmamba_evaluate's summary.json, rendered by
evaluation.report), the volume and ejection-fraction agreement (from msvmamba_clinical's clinical_summary.json,
rendered by clinical.report), the whole-video results, and where everything is."""
from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path
from typing import Optional

from nnunetv2_msvmamba.clinical.report import agreement_table, means_table
from nnunetv2_msvmamba.clinical.volumes import implausible_beats_flag
from nnunetv2_msvmamba.evaluation.report import overall_tables
from nnunetv2_msvmamba.evaluation.summary_statistics import ALL_CASES
from .runner import format_duration
from .steps import FOLD, MODELS, PRODUCT, DemoPaths, dataset_folder_name, first_test_patient, trainer_output

REFERENCE_STRUCTURE = "LV_endo"
BANNER = "=" * 100


def with_nan(value: object) -> object:
    """The reports' JSON writes undefined numbers as null: back to NaN, which their renderers expect."""
    if value is None:
        return math.nan
    if isinstance(value, dict):
        return {key: with_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_nan(item) for item in value]
    return value


def load_summary(path: Path) -> dict:
    return with_nan(json.loads(path.read_text(encoding="utf-8")))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def overall_dice(summary: dict, structure: str) -> dict[str, float]:
    """Mean Dice over all test cases of `structure`, per model, from msvmamba_evaluate's summary.json."""
    return {model: summary["results"][structure][ALL_CASES][model]["dice"]["mean"] for model in summary["models"]}


def heading(text: str) -> None:
    print(f"\n{BANNER}\n{text}\n{BANNER}\n")


def report_segmentation(paths: DemoPaths) -> None:
    summary = load_summary(paths.evaluation / "summary.json")
    heading(f"MSV-Mamba vs stock nnU-Net on the {summary['n_cases']} synthetic test images (mean ± std over images; "
            f"the breakdowns by view, phase and image quality are in {paths.evaluation / 'summary.md'})")
    print(overall_tables(summary) + "\n")
    dice = overall_dice(summary, REFERENCE_STRUCTURE)
    print(f"{REFERENCE_STRUCTURE} Dice: " + ", ".join(f"{model} {value * 100:.2f} %" for model, value in dice.items()))


def report_clinical(paths: DemoPaths, problem: Optional[str]) -> None:
    if problem is not None:
        heading("Volumes and ejection fraction of the test patients: not measured")
        print(f"msvmamba_clinical could not measure the predictions ({problem}). The models' masks are too poor to "
              f"measure a ventricle: train them longer (--epochs, --iterations).")
        return
    document = load_summary(paths.clinical / "clinical_summary.json")
    heading(f"Volumes and ejection fraction of the test patients ({document['method']}, {document['volume_unit']}): "
            f"each model against the ground truth and against the Info EF")
    print(means_table(document) + "\n")
    print(agreement_table(document))


def report_video(paths: DemoPaths, raw_dataset: Path, patient: str) -> list[Path]:
    """The whole-loop EF of the first test patient's half sequences next to the EF its Info file states."""
    stated = {row["EF"] for row in read_csv(raw_dataset / "cases.csv") if row.get("patient") == patient}
    heading(f"Whole-video inference ({PRODUCT.name}): {patient}'s half sequences, every frame"
            + (f"; its Info EF is {', '.join(sorted(stated))} %" if stated else ""))
    overlays = []
    for row in read_csv(paths.video / "video_summary.csv"):
        ef = f"EF {float(row['ef_percent']):.1f} %" if row["ef_percent"] else f"no EF: {row['note']}"
        if row.get("implausible_beats") not in (None, "", "0"):
            ef += f" ({implausible_beats_flag(int(row['implausible_beats']))})"
        print(f"  {row['sequence']}: {row['frames']} frames, ED frames {row['ed_frames'] or '-'}, ES frames "
              f"{row['es_frames'] or '-'}, {ef}")
        overlays.append(paths.video / row["overlay"])
    return overlays


def report(paths: DemoPaths, dataset_id: int, patients: int, seed: int, problems: dict[str, str],
           elapsed: float) -> None:
    """The comparison tables and where everything is; `problems` are those of the steps that may fail."""
    dataset = dataset_folder_name(dataset_id)
    report_segmentation(paths)
    overlays = report_video(paths, paths.raw / dataset, first_test_patient(patients, seed))
    report_clinical(paths, problems.get("clinical"))
    print(f"\nOutputs (in {paths.output}):")
    rows = [("comparison table", paths.evaluation / "summary.md"), ("box plot", paths.evaluation / "boxplot.png"),
            ("metrics per case", paths.evaluation / "metrics_per_case.csv"),
            ("EF and volumes table", paths.clinical / "clinical_summary.md"),
            ("EF per patient", paths.clinical / "clinical_per_patient.csv"),
            ("Bland-Altman plots", paths.clinical / "bland_altman.png"),
            ("scatter plots", paths.clinical / "scatter.png"),
            *[("overlay video", overlay) for overlay in overlays],
            ("volume curves (ED/ES)", paths.video / "*_volume_curve.png"),
            ("whole-video summary", paths.video / "video_summary.csv"),
            *[(f"{model.name} predictions", paths.predictions / model.folder_name) for model in reversed(MODELS)],
            *[(f"{model.name} model", trainer_output(paths, dataset, model) / f"fold_{FOLD}")
              for model in reversed(MODELS)],
            ("nnU-Net dataset", paths.raw / dataset), ("synthetic CAMUS", paths.synthetic),
            ("logs of every step", paths.logs)]
    for what, path in rows:
        print(f"  {what + ':':<24}{path}")
    print("\nTo use the same folders with nnU-Net's own commands:\n"
          f"  export nnUNet_raw={shlex.quote(str(paths.raw))} nnUNet_preprocessed={shlex.quote(str(paths.preprocessed))}"
          f" nnUNet_results={shlex.quote(str(paths.results))}")
    print(f"\nmsvmamba_demo finished in {format_duration(elapsed)}")
