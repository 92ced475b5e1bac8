"""Build step: ships the missing-trainer hint (see _missing_trainer_hint) as a top-level module and a .pth
file that loads it. It must not import `nnunetv2_msvmamba` itself: a package imported at interpreter start
would shadow a source checkout on sys.path."""
import shutil
from pathlib import Path

from setuptools.command.build_py import build_py

HINT_MODULE = "_nnunetv2_msvmamba_hint"
PTH_NAME = "nnunetv2_msvmamba_hint.pth"
PTH_LINE = f"import {HINT_MODULE}; {HINT_MODULE}.install()\n"


class BuildPyWithHint(build_py):
    def run(self):
        super().run()
        build_lib = Path(self.build_lib)
        shutil.copyfile(Path(__file__).with_name("_missing_trainer_hint.py"), build_lib / f"{HINT_MODULE}.py")
        (build_lib / PTH_NAME).write_text(PTH_LINE)

    def get_outputs(self, include_bytecode=1):
        build_lib = Path(self.build_lib)
        return [*super().get_outputs(include_bytecode), str(build_lib / f"{HINT_MODULE}.py"),
                str(build_lib / PTH_NAME)]
