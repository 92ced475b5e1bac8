"""Finding an installed console command: the one beside the running Python first (a virtual environment's
commands are there even when it is not activated), else the one on PATH."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


class CommandNotFound(LookupError):
    """No command of that name beside this Python or on PATH."""

    def __init__(self, name: str):
        self.name = name
        self.problem = "command not found; install this package (pip install .) in this environment"
        super().__init__(f"{name}: {self.problem}")


def command_path(name: str) -> str:
    """The path of the console command `name`: beside this Python if it is there, else on PATH."""
    beside = BIN / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise CommandNotFound(name)
    return found
