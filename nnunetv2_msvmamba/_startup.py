"""Makes the stock nnU-Net commands find the MSV-Mamba trainers with no set-up step: run at interpreter start by
the `nnunetv2_msvmamba_startup.pth` that installing the package puts into site-packages (see _build), it adds
the package's folder of trainer shims to nnU-Net's `nnUNet_extTrainer` (setting it when unset, appending to a
value of the user's own, which keeps precedence).

It runs in every Python process of the environment, so it imports nothing but `os`, never imports
`nnunetv2_msvmamba` (a package imported at start would shadow a source checkout on sys.path) and never raises.
Installed as the top-level module `_nnunetv2_msvmamba_startup`; `msvmamba_env` shares its `with_folder`."""
import os

ENV_VAR = "nnUNet_extTrainer"


def installed_trainer_folder() -> str:
    """The trainer shims of a regular install: the package lies beside this module in site-packages."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "nnunetv2_msvmamba", "training", "ext_trainers")


def _same_folder(a: str, b: str) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def with_folder(current, folder: str) -> str:
    """`current` (an os.pathsep-separated search path, or None) with `folder` appended, unless it is there."""
    entries = [entry for entry in (current or "").split(os.pathsep) if entry]
    if any(_same_folder(entry, folder) for entry in entries):
        return os.pathsep.join(entries)
    return os.pathsep.join([*entries, folder])


def install(folder=None) -> None:
    """Adds `folder` (default: the installed package's trainer shims) to nnUNet_extTrainer in this process's
    environment, which the nnU-Net commands and every process they start inherit. Does nothing when the folder
    is gone (the package was moved or removed)."""
    try:
        folder = folder or installed_trainer_folder()
        if os.path.isdir(folder):
            os.environ[ENV_VAR] = with_folder(os.environ.get(ENV_VAR), folder)
    except Exception:  # a start-up hook must never stop Python from starting
        pass
