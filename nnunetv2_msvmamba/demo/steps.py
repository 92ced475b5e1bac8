"""The demo's pipeline: where everything goes and the commands, in order, each the real command a user would
type with the settings its result depends on."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from dataset_conversion.synthetic_camus import DEFAULT_SPLIT, assign_subgroups, patient_name
from nnunetv2_msvmamba.common.commands import CommandNotFound, command_path
from nnunetv2_msvmamba.training.ext_trainer_path import ENV_VAR as EXT_TRAINER_VAR, ext_trainer_value
from nnunetv2_msvmamba.training.trainers import DemoSchedule
from .runner import DemoError, DemoState, Step

CONFIGURATION = "2d"
FOLD = "0"
PLANS = "nnUNetPlans"
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
VIDEO_VIEWS = ("2CH", "4CH")  # the two half sequences of the first test patient go through msvmamba_predict_video


@dataclass(frozen=True)
class DemoModel:
    """One of the compared models: its name in the evaluation, its trainer and its prediction folder."""
    name: str
    trainer: str
    folder_name: str


# The first model is msvmamba_evaluate's reference: differences read "MSV-Mamba minus nnU-Net".
MODELS = (DemoModel("nnU-Net", "nnUNetTrainer_Demo", "nnunet"),
          DemoModel("MSV-Mamba", "nnUNetTrainerMSVMamba_Demo", "msvmamba"))
PRODUCT = MODELS[1]


@dataclass(frozen=True)
class DemoPaths:
    """Where everything goes."""
    output: Path
    synthetic: Path
    raw: Path
    preprocessed: Path
    results: Path
    predictions: Path
    evaluation: Path
    clinical: Path
    video: Path
    logs: Path
    own_nnunet_folders: bool

    @classmethod
    def create(cls, output: Path, use_nnunet_env: bool) -> "DemoPaths":
        output = output.resolve()
        folders = {name: output / name for name in NNUNET_FOLDERS}
        if use_nnunet_env:
            missing = [name for name in NNUNET_FOLDERS if not os.environ.get(name)]
            if missing:
                raise DemoError("--use-nnunet-env", f"environment variable(s) {', '.join(missing)} not set")
            folders = {name: Path(os.environ[name]).resolve() for name in NNUNET_FOLDERS}
        return cls(output=output, synthetic=output / "synthetic_camus", raw=folders["nnUNet_raw"],
                   preprocessed=folders["nnUNet_preprocessed"], results=folders["nnUNet_results"],
                   predictions=output / "predictions", evaluation=output / "evaluation",
                   clinical=output / "clinical", video=output / "video", logs=output / "logs",
                   own_nnunet_folders=not use_nnunet_env)


def dataset_folder_name(dataset_id: int) -> str:
    return f"Dataset{dataset_id:03d}_CAMUS"


def trainer_output(paths: DemoPaths, dataset: str, model: DemoModel) -> Path:
    return paths.results / dataset / f"{model.trainer}__{PLANS}__{CONFIGURATION}"


def tool(name: str) -> str:
    try:
        return command_path(name)
    except CommandNotFound as error:
        raise DemoError(name, error.problem) from None


def first_test_patient(patients: int, seed: int) -> str:
    """The synthetic generator's own draw of the testing subgroup, so the step is known before it runs."""
    names = [patient_name(index) for index in range(1, patients + 1)]
    return assign_subgroups(names, DEFAULT_SPLIT, seed)["testing"][0]


def video_inputs(paths: DemoPaths, patients: int, seed: int) -> list[Path]:
    patient = first_test_patient(patients, seed)
    return [paths.synthetic / "database_nifti" / patient / f"{patient}_{view}_half_sequence.nii.gz"
            for view in VIDEO_VIEWS]


def build_steps(args: argparse.Namespace, paths: DemoPaths) -> list[Step]:
    """The demo's commands in order, each with the settings its result depends on (upstream ones included)."""
    dataset = dataset_folder_name(args.dataset_id)
    dataset_id = str(args.dataset_id)
    processes = str(args.num_processes)
    data = {"patients": args.patients, "size": list(args.size), "seed": args.seed, "dataset_id": args.dataset_id}
    schedule = {**data, "epochs": args.epochs, "iterations": args.iterations}
    raw_dataset = paths.raw / dataset
    steps = [
        Step("generate", f"Generate {args.patients} synthetic patients ({args.size[0]} x {args.size[1]} pixels, "
                         f"CAMUS 2023 layout)",
             [tool("msvmamba_make_synthetic_camus"), str(paths.synthetic), "--patients", str(args.patients),
              "--size", *map(str, args.size), "--seed", str(args.seed), "-np", processes, "--overwrite"],
             data, [paths.synthetic / "synthetic_camus.json"]),
        Step("convert", f"Convert them to the nnU-Net dataset {dataset}",
             [tool("msvmamba_convert_camus"), str(paths.synthetic), "-d", dataset_id, "-np", processes,
              "--overwrite"],
             data, [raw_dataset / "dataset.json", paths.preprocessed / dataset / "splits_final.json"]),
        Step("plan", "Plan and preprocess with nnU-Net (2d configuration)",
             [tool("nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", CONFIGURATION, "-np", processes,
              "-npfp", processes],
             data, [paths.preprocessed / dataset / f"{PLANS}.json"]),
    ]
    for model in reversed(MODELS):  # the product first
        output = trainer_output(paths, dataset, model)
        steps.append(Step(
            f"train_{model.folder_name}",
            f"Train {model.name} ({model.trainer}: {args.epochs} epochs x {args.iterations} iterations, "
            f"{args.device})",
            [tool("nnUNetv2_train"), dataset_id, CONFIGURATION, FOLD, "-tr", model.trainer, "-device", args.device],
            schedule, [output / f"fold_{FOLD}" / "checkpoint_final.pth"],
            env={DemoSchedule.epochs_variable: str(args.epochs),
                 DemoSchedule.iterations_variable: str(args.iterations)},
            stale=[output]))
    for model in reversed(MODELS):
        predictions = paths.predictions / model.folder_name
        steps.append(Step(
            f"predict_{model.folder_name}", f"Predict the test patients with {model.name}",
            [tool("nnUNetv2_predict"), "-i", str(raw_dataset / "imagesTs"), "-o", str(predictions),
             "-d", dataset_id, "-c", CONFIGURATION, "-tr", model.trainer, "-f", FOLD, "-device", args.device,
             "-npp", processes, "-nps", processes],
            schedule, [predictions / "plans.json"], stale=[predictions]))
    model_predictions = [f"--pred={model.name}={paths.predictions / model.folder_name}" for model in MODELS]
    steps.append(Step(
        "evaluate", "Evaluate both against the ground truth (msvmamba_evaluate)",
        [tool("msvmamba_evaluate"), "--gt", str(raw_dataset / "labelsTs"), *model_predictions,
         "-o", str(paths.evaluation), "-np", processes],
        schedule, [paths.evaluation / "summary.json", paths.evaluation / "summary.md",
                   paths.evaluation / "boxplot.png"]))
    inputs = video_inputs(paths, args.patients, args.seed)
    steps.append(Step(
        "video", f"Whole-video inference on {first_test_patient(args.patients, args.seed)}'s two half sequences "
                 f"with {PRODUCT.name} (msvmamba_predict_video)",
        [tool("msvmamba_predict_video"), "-i", *map(str, inputs), "-o", str(paths.video),
         "-m", str(trainer_output(paths, dataset, PRODUCT)), "-f", FOLD, "-device", args.device,
         "--disable_tta"],  # a loop has many frames: one pass each, not nnU-Net's four mirrored ones
        schedule, [paths.video / "video_summary.csv"], stale=[paths.video]))
    steps.append(Step(
        "clinical", "Volumes and ejection fraction of the test patients vs the ground truth and the Info EF "
                    "(msvmamba_clinical)",
        [tool("msvmamba_clinical"), *model_predictions, "--reference", str(raw_dataset / "labelsTs"),
         "--cases", str(raw_dataset / "cases.csv"), "-o", str(paths.clinical)],
        schedule, [paths.clinical / "clinical_per_patient.csv", paths.clinical / "clinical_summary.json",
                   paths.clinical / "clinical_summary.md"], stale=[paths.clinical],
        may_fail=True))  # a barely trained model's masks may be too poor to measure: the report says so
    return steps


def subprocess_env(paths: DemoPaths, processes: int) -> dict[str, str]:
    """This environment with the demo's nnU-Net folders, the trainer folder appended to nnUNet_extTrainer, and
    unbuffered output so that progress shows as it happens."""
    env = dict(os.environ)
    env.update(nnUNet_raw=str(paths.raw), nnUNet_preprocessed=str(paths.preprocessed),
               nnUNet_results=str(paths.results), PYTHONUNBUFFERED="1")
    env[EXT_TRAINER_VAR] = ext_trainer_value(os.environ.get(EXT_TRAINER_VAR))
    # nnU-Net's default process counts are sized for servers; keep the final validation's export in bounds
    env.setdefault("nnUNet_def_n_proc", str(processes))
    return env


def check_dataset_is_ours(paths: DemoPaths, dataset_id: int, state: DemoState) -> None:
    """In the user's own nnU-Net folders, never replace a dataset that this demo folder did not write."""
    raw_dataset = paths.raw / dataset_folder_name(dataset_id)
    if not paths.own_nnunet_folders and raw_dataset.exists() and "convert" not in state.finished:
        raise DemoError(raw_dataset, "exists and was not written by this demo; choose a free id with -d")
