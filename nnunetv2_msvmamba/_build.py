"""Build step: ships `nnunetv2_msvmamba_hint.pth` at the top of site-packages (see _missing_trainer_hint)."""
from pathlib import Path

from setuptools.command.build_py import build_py

PTH_NAME = "nnunetv2_msvmamba_hint.pth"
PTH_LINE = "import nnunetv2_msvmamba._missing_trainer_hint as _h; _h.install()\n"


class BuildPyWithHint(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / PTH_NAME
        target.write_text(PTH_LINE)

    def get_outputs(self, include_bytecode=1):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH_NAME)]
