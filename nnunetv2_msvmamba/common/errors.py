"""The one kind of error a user sees: a bad input, named by its file (or folder, or option)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable


class InputError(Exception):
    """A bad input: the message names the file (or folder) and what is wrong with it."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # so that it crosses process boundaries (parallel_map's workers) intact
        return type(self), (self.path, self.problem)


def one_line(error: InputError) -> str:
    """The line a command prints for a bad input."""
    return f"error: {error.path}: {error.problem}"


def exit_status_of(run: Callable[[], object]) -> int:
    """Runs a command's work: 0 when it succeeds; a bad input prints one line on stderr and gives 2."""
    try:
        run()
    except InputError as error:
        print(one_line(error), file=sys.stderr)
        return 2
    return 0
