"""Build step: ships the start-up hook (see _startup) as the top-level module `_nnunetv2_msvmamba_startup` and a
.pth file that runs it at interpreter start, so that `pip install` (regular or editable) is the whole set-up.

- Regular install (`pip install .`, a wheel): both files go into the wheel's root, i.e. site-packages beside the
  package, where the hook finds the trainer shims.
- Editable install (`pip install -e .`): setuptools does not install what build_py writes into its build folder,
  but it does install what is in the editable wheel's root, which its `install` command names as install_lib.
  Both files go there, and the .pth names the trainer shims of this source tree.

This module must not import `nnunetv2_msvmamba` itself: it is loaded from the source tree by setuptools."""
import shutil
from pathlib import Path

from setuptools.command.build_py import build_py

STARTUP_MODULE = "_nnunetv2_msvmamba_startup"
PTH_NAME = "nnunetv2_msvmamba_startup.pth"
SOURCE_TRAINER_FOLDER = Path(__file__).resolve().parent / "training" / "ext_trainers"


def pth_line(trainer_folder=None) -> str:
    """The .pth line that runs the hook: for the trainer shims beside it, or those in `trainer_folder`."""
    argument = "" if trainer_folder is None else repr(str(trainer_folder))
    return f"import {STARTUP_MODULE}; {STARTUP_MODULE}.install({argument})\n"


def write_startup_files(folder: Path, trainer_folder=None) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    module, pth = folder / f"{STARTUP_MODULE}.py", folder / PTH_NAME
    shutil.copyfile(Path(__file__).with_name("_startup.py"), module)
    pth.write_text(pth_line(trainer_folder))
    return [str(module), str(pth)]


class BuildPyWithStartupHook(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            editable_wheel_root = self.get_finalized_command("install").install_lib
            if editable_wheel_root:
                write_startup_files(Path(editable_wheel_root), SOURCE_TRAINER_FOLDER)
        else:
            write_startup_files(Path(self.build_lib))

    def get_outputs(self, include_bytecode=1):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs  # written into the editable wheel itself, not the build folder
        build_lib = Path(self.build_lib)
        return [*outputs, str(build_lib / f"{STARTUP_MODULE}.py"), str(build_lib / PTH_NAME)]

