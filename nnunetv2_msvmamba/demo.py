"""`msvmamba_demo`: the whole product on synthetic echocardiograms, from one command.

Every step is the real command a user would type, run in a subprocess with its output streamed to the
console and kept in a log: generate synthetic patients in the CAMUS 2023 layout, convert them with
`msvmamba_convert_camus`, plan with `nnUNetv2_plan_and_preprocess`, train MSV-Mamba and stock nnU-Net on the
same short schedule with `nnUNetv2_train`, predict the test patients with `nnUNetv2_predict`, and compare both
with `msvmamba_evaluate`. A re-run reuses the steps that finished with the same settings.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from nnunetv2.configuration import default_num_processes

from dataset_conversion.synthetic_camus import MIN_IMAGE_SIDE
from nnunetv2_msvmamba.training.ext_trainer_path import ENV_VAR as EXT_TRAINER_VAR, ext_trainer_value
from nnunetv2_msvmamba.training.trainers import DemoSchedule

DEFAULT_OUTPUT = Path("demo_output")
DEFAULT_PATIENTS = 30
MIN_PATIENTS = 6  # 10 % validation and 20 % testing, rounded, give at least one patient each
DEFAULT_SIZE = (64, 64)
DEFAULT_DATASET_ID = 601
CONFIGURATION = "2d"
FOLD = "0"
PLANS = "nnUNetPlans"
STATE_FILE = "demo_state.json"
NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
REFERENCE_STRUCTURE = "LV_endo"
ALL_CASES = "all"  # the subset of msvmamba_evaluate's tables that holds every case
BIN = Path(sys.executable).parent


class DemoError(Exception):
    """A problem that ends the demo: printed as one line `error: <what>: <problem>`."""

    def __init__(self, what: object, problem: str):
        self.what, self.problem = what, problem
        super().__init__(f"{what}: {problem}")


@dataclass(frozen=True)
class DemoModel:
    """One of the compared models: its name in the evaluation, its trainer and its prediction folder."""
    name: str
    trainer: str
    folder_name: str


# The first model is msvmamba_evaluate's reference: differences read "MSV-Mamba minus nnU-Net".
MODELS = (DemoModel("nnU-Net", "nnUNetTrainer_Demo", "nnunet"),
          DemoModel("MSV-Mamba", "nnUNetTrainerMSVMamba_Demo", "msvmamba"))


@dataclass
class Step:
    """One command of the demo. It is reused when the state file records it with the same settings and its
    outputs exist; `stale` are removed before it runs again."""
    key: str
    title: str
    command: list[str]
    settings: dict
    outputs: list[Path]
    env: dict = field(default_factory=dict)
    stale: list[Path] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        encoded = json.dumps({"command": self.command, "settings": self.settings}, sort_keys=True, default=str)
        return hashlib.sha256(encoded.encode()).hexdigest()


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
                   predictions=output / "predictions", evaluation=output / "evaluation", logs=output / "logs",
                   own_nnunet_folders=not use_nnunet_env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msvmamba_demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The whole product in one command, on synthetic echocardiograms (no registration-gated data "
                    "needed):\n"
                    "  1. msvmamba_make_synthetic_camus  synthetic patients in the CAMUS 2023 layout\n"
                    "  2. msvmamba_convert_camus         -> nnU-Net raw dataset Dataset<ID>_CAMUS\n"
                    "  3. nnUNetv2_plan_and_preprocess   -c 2d\n"
                    "  4. nnUNetv2_train                 MSV-Mamba and stock nnU-Net on the same short schedule\n"
                    "  5. nnUNetv2_predict               the test patients (imagesTs) with both\n"
                    "  6. msvmamba_evaluate              both against labelsTs: table, summary.md, boxplot.png\n"
                    "Each step's output is shown and kept in OUT/logs/. Running it again reuses every step that "
                    "finished with the same settings (--fresh redoes all).",
        epilog="Folders: everything goes under OUT: synthetic_camus/, nnUNet_raw/, nnUNet_preprocessed/, "
               "nnUNet_results/, predictions/, evaluation/, logs/. Your own nnUNet_raw/nnUNet_preprocessed/"
               "nnUNet_results environment variables are ignored, so the demo never touches your nnU-Net data, "
               "unless you pass --use-nnunet-env. The defaults finish in about 10-20 minutes on 2 CPU cores. With "
               "a GPU, scale up, e.g.: msvmamba_demo --device cuda --patients 200 --size 256 224 --epochs 100 "
               "--iterations 250")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, metavar="OUT",
                        help="output folder (default: ./%(default)s)")
    parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS, metavar="N",
                        help="synthetic patients; 70%% train, 10%% validate, 20%% test (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=list(DEFAULT_SIZE), metavar=("H", "W"),
                        help="image rows and columns (default: %(default)s; training time grows with H x W)")
    parser.add_argument("--epochs", type=int, default=DemoSchedule.epochs, metavar="E",
                        help="training epochs of both models (default: %(default)s)")
    parser.add_argument("--iterations", type=int, default=DemoSchedule.iterations_per_epoch, metavar="I",
                        help="training iterations per epoch (default: %(default)s)")
    parser.add_argument("--device", choices=("cpu", "cuda", "mps"), default="cpu",
                        help="device for training and prediction (default: %(default)s)")
    parser.add_argument("-d", "--dataset-id", type=int, default=DEFAULT_DATASET_ID, metavar="ID",
                        help="nnU-Net dataset id of the synthetic dataset (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic patients (default: %(default)s)")
    parser.add_argument("-np", "--num-processes", type=int, default=min(default_num_processes, os.cpu_count() or 1),
                        metavar="N", help="worker processes of the data steps (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="redo every step instead of reusing finished ones")
    parser.add_argument("--use-nnunet-env", action="store_true",
                        help="use the nnUNet_raw, nnUNet_preprocessed and nnUNet_results folders of your environment "
                             "instead of OUT/nnUNet_*; a dataset with the same id that the demo did not write there "
                             "is never replaced")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    for option, value in (("--patients", args.patients), ("--epochs", args.epochs),
                          ("--iterations", args.iterations), ("-np", args.num_processes)):
        if value < 1:
            raise DemoError(option, f"must be at least 1, got {value}")
    if args.patients < MIN_PATIENTS:
        raise DemoError("--patients", f"needs at least {MIN_PATIENTS} patients, so that validation and testing get "
                                      f"one each, got {args.patients}")
    if min(args.size) < MIN_IMAGE_SIDE:
        raise DemoError("--size", f"rows and columns must be at least {MIN_IMAGE_SIDE} pixels, got {tuple(args.size)}")
    if not 1 <= args.dataset_id <= 999:
        raise DemoError("--dataset-id", f"must be between 1 and 999, got {args.dataset_id}")
    if args.device != "cpu":
        import torch  # only to check the device; the steps run in their own processes
        available = torch.cuda.is_available() if args.device == "cuda" else torch.backends.mps.is_available()
        if not available:
            raise DemoError("--device", f"{args.device} is not available on this machine (PyTorch {torch.__version__})")


def dataset_folder_name(dataset_id: int) -> str:
    return f"Dataset{dataset_id:03d}_CAMUS"


def tool(name: str) -> str:
    """The installed command beside this Python (the venv's), else the one on PATH."""
    beside = BIN / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DemoError(name, "command not found; install this package (pip install .) in this environment")
    return found


def trainer_output(paths: DemoPaths, dataset: str, model: DemoModel) -> Path:
    return paths.results / dataset / f"{model.trainer}__{PLANS}__{CONFIGURATION}"


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
    steps.append(Step(
        "evaluate", "Evaluate both against the ground truth (msvmamba_evaluate)",
        [tool("msvmamba_evaluate"), "--gt", str(raw_dataset / "labelsTs"),
         *[f"--pred={model.name}={paths.predictions / model.folder_name}" for model in MODELS],
         "-o", str(paths.evaluation), "-np", processes],
        schedule, [paths.evaluation / "summary.json", paths.evaluation / "summary.md",
                   paths.evaluation / "boxplot.png"]))
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


class DemoState:
    """OUT/demo_state.json: the fingerprint of every finished step. Its presence marks OUT as a demo folder."""

    def __init__(self, output: Path):
        self.path = output / STATE_FILE
        self.finished: dict[str, str] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    @staticmethod
    def claim(output: Path) -> "DemoState":
        """The state of OUT, refusing a non-empty folder that is not a demo output (so -o . never clobbers)."""
        if output.exists() and not output.is_dir():
            raise DemoError(output, "exists and is not a folder")
        if output.is_dir() and any(output.iterdir()) and not (output / STATE_FILE).is_file():
            raise DemoError(output, f"is not empty and is not a demo output folder (no {STATE_FILE}); "
                                    f"choose another folder with -o")
        output.mkdir(parents=True, exist_ok=True)
        state = DemoState(output)
        state.save()
        return state

    def is_finished(self, step: Step) -> bool:
        return self.finished.get(step.key) == step.fingerprint and all(path.exists() for path in step.outputs)

    def record(self, step: Step) -> None:
        self.finished[step.key] = step.fingerprint
        self.save()

    def forget_all(self) -> None:
        self.finished = {}
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.finished, indent=2) + "\n")


def check_dataset_is_ours(paths: DemoPaths, dataset_id: int, state: DemoState) -> None:
    """In the user's own nnU-Net folders, never replace a dataset that this demo folder did not write."""
    raw_dataset = paths.raw / dataset_folder_name(dataset_id)
    if not paths.own_nnunet_folders and raw_dataset.exists() and "convert" not in state.finished:
        raise DemoError(raw_dataset, "exists and was not written by this demo; choose a free id with -d")


def banner(number: int, total: int, title: str) -> None:
    line = "=" * 100
    print(f"\n{line}\n[{number}/{total}] {title}\n{line}", flush=True)


def stream(command: Sequence[str], env: dict[str, str], log_path: Path) -> int:
    """Runs `command`, copying its output (progress bars included, bytes as they come) to the console and to
    `log_path`; returns its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        log.write(f"$ {shlex.join(command)}\n".encode())
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            while chunk := process.stdout.read1(65536):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                log.write(chunk)
        finally:
            if process.poll() is None:  # interrupted: Ctrl-C reached the child too; give it a moment
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.stdout.close()
    return process.wait()


def remove_stale(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_steps(steps: Sequence[Step], state: DemoState, base_env: dict[str, str], logs: Path) -> None:
    """Runs the steps in order, reusing finished ones until the first that has to run; every later one runs
    too, since its inputs may have changed."""
    rerun_from_here = False
    for number, step in enumerate(steps, start=1):
        banner(number, len(steps), step.title)
        log_path = logs / f"{number:02d}_{step.key}.log"
        if not rerun_from_here and state.is_finished(step):
            print(f"reused: finished earlier with the same settings (log: {log_path}; --fresh redoes it)", flush=True)
            continue
        rerun_from_here = True
        state.finished.pop(step.key, None)
        state.save()
        remove_stale(step.stale)
        print(f"$ {shlex.join(step.command)}\n", flush=True)
        started = time.monotonic()
        status = stream(step.command, {**base_env, **step.env}, log_path)
        if status != 0:
            raise DemoError(f"step {number} ({step.title})",
                            f"{Path(step.command[0]).name} exited with status {status}; its output is in {log_path}")
        missing = [str(path) for path in step.outputs if not path.exists()]
        if missing:
            raise DemoError(f"step {number} ({step.title})",
                            f"finished but did not write {', '.join(missing)}; its output is in {log_path}")
        state.record(step)
        print(f"\ndone in {format_duration(time.monotonic() - started)}", flush=True)


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def overall_dice(summary: dict, structure: str) -> dict[str, float]:
    """Mean Dice over all test cases of `structure`, per model, from msvmamba_evaluate's summary.json."""
    return {model: summary["results"][structure][ALL_CASES][model]["dice"]["mean"] for model in summary["models"]}


def overall_rows(summary_markdown: str) -> str:
    """summary.md without its preamble and per-subset breakdowns: each structure's heading, table header and
    its rows over all cases."""
    kept = []
    for line in summary_markdown.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("## "):
            kept += ["", line[3:]]
        elif line.startswith("|") and (cells[0] in ("subset", ALL_CASES) or set(cells[0]) <= set("-:")):
            kept.append(line)
    return "\n".join(kept).strip() + "\n"


def report(paths: DemoPaths, dataset_id: int, elapsed: float) -> None:
    """The comparison table and where everything is."""
    summary = json.loads((paths.evaluation / "summary.json").read_text())
    summary_md = paths.evaluation / "summary.md"
    banner_line = "=" * 100
    print(f"\n{banner_line}\nMSV-Mamba vs stock nnU-Net on the {summary['n_cases']} synthetic test images "
          f"(mean ± std over images; the breakdowns by view, phase and image quality are in {summary_md})"
          f"\n{banner_line}\n")
    print(overall_rows(summary_md.read_text()))
    dice = overall_dice(summary, REFERENCE_STRUCTURE)
    print(f"{REFERENCE_STRUCTURE} Dice: " + ", ".join(f"{model} {value * 100:.2f} %" for model, value in dice.items()))
    dataset = dataset_folder_name(dataset_id)
    print(f"\nOutputs (in {paths.output}):")
    rows = [("comparison table", summary_md), ("box plot", paths.evaluation / "boxplot.png"),
            ("metrics per case", paths.evaluation / "metrics_per_case.csv"),
            *[(f"{model.name} predictions", paths.predictions / model.folder_name) for model in reversed(MODELS)],
            *[(f"{model.name} model", trainer_output(paths, dataset, model) / f"fold_{FOLD}")
              for model in reversed(MODELS)],
            ("nnU-Net dataset", paths.raw / dataset), ("synthetic CAMUS", paths.synthetic),
            ("logs of every step", paths.logs)]
    for what, path in rows:
        print(f"  {what + ':':<24}{path}")
    print("\nTo use the same folders with nnU-Net's own commands:\n"
          f"  export nnUNet_raw={shlex.quote(str(paths.raw))} nnUNet_preprocessed={shlex.quote(str(paths.preprocessed))}"
          f" nnUNet_results={shlex.quote(str(paths.results))}\n"
          '  eval "$(msvmamba_env)"')
    print(f"\nmsvmamba_demo finished in {format_duration(elapsed)}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """msvmamba_demo [-o OUT] [--patients N] [--size H W] [--epochs E] [--iterations I] [--device D] [--fresh]."""
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    try:
        check_arguments(args)
        paths = DemoPaths.create(args.output, args.use_nnunet_env)
        state = DemoState.claim(paths.output)
        check_dataset_is_ours(paths, args.dataset_id, state)
        if args.fresh:
            state.forget_all()
        print(f"msvmamba_demo: output in {paths.output}"
              + ("" if paths.own_nnunet_folders else f" (nnU-Net folders from the environment: {paths.raw}, "
                                                     f"{paths.preprocessed}, {paths.results})"), flush=True)
        run_steps(build_steps(args, paths), state, subprocess_env(paths, args.num_processes), paths.logs)
        report(paths, args.dataset_id, time.monotonic() - started)
    except DemoError as error:
        print(f"error: {error.what}: {error.problem}", file=sys.stderr)
        return 1 if str(error.what).startswith("step ") else 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to go on (finished steps are reused)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
