"""`msvmamba_env`: prints the shell line that lets the stock nnU-Net commands find this package's trainers. The
installed package already adds them at every interpreter start (see nnunetv2_msvmamba._startup); this is for
users who prefer an explicit environment, or run nnU-Net from a Python that does not process site-packages."""
from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path
from typing import Optional, Sequence

from nnunetv2_msvmamba._startup import ENV_VAR, with_folder


def trainer_folder() -> Path:
    """The folder of shim modules that nnU-Net's `nnUNet_extTrainer` search imports."""
    return Path(__file__).resolve().parent / "ext_trainers"


def ext_trainer_value(current: Optional[str]) -> str:
    """`current` with the trainer folder appended (unchanged when it is already there)."""
    return with_folder(current, str(trainer_folder()))


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Print `export nnUNet_extTrainer=...` (keeping an existing value) for `eval "$(msvmamba_env)"`."""
    parser = argparse.ArgumentParser(
        prog="msvmamba_env",
        description="Print the shell line that makes nnUNetv2_train / nnUNetv2_predict find the MSV-Mamba "
                    "trainers (nnU-Net's nnUNet_extTrainer). Installing the package already makes them findable "
                    "in every Python of its environment; this is for an explicit environment. Use: "
                    "eval \"$(msvmamba_env)\", or add its output to your ~/.bashrc. An existing nnUNet_extTrainer "
                    "value is kept.")
    parser.add_argument("--shell", choices=("sh", "fish"), default="sh",
                        help="syntax of the printed line (default: sh, for bash/zsh)")
    args = parser.parse_args(argv)
    value = ext_trainer_value(os.environ.get(ENV_VAR))
    if args.shell == "fish":
        print(f"set -gx {ENV_VAR} {shlex.quote(value)}")
    else:
        print(f"export {ENV_VAR}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
