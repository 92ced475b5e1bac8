"""The one kind of error a user sees: a bad input, named by its file (or folder, or option); and how a command
turns it, an operating-system error or a Ctrl-C into one line on stderr and an exit status."""
from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path
from typing import Callable, Optional

INTERRUPTED = "interrupted: nothing was written"
INTERRUPTED_STATUS = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C

# What the OS says, in words that tell a user what to do about it.
OS_PROBLEMS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted (a read-only or immutable folder?)",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EEXIST: "already exists and is not a folder",
    errno.ENOTDIR: "a file where a folder is needed",
    errno.EISDIR: "is a folder, not a file",
}


class InputError(Exception):
    """A bad input: the message names the file (or folder) and what is wrong with it."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # so that it crosses process boundaries (parallel_map's workers) intact
        return type(self), (self.path, self.problem)


def short_reason(error: BaseException) -> str:
    """The useful part of a library's exception message, on one line: its last non-blank line, without ITK's
    'sitk::ERROR:' prefix and object addresses."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = re.sub(r"^(sitk::ERROR|ITK ERROR):\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", lines[-1] if lines else "")
    return reason or type(error).__name__


def from_os_error(error: OSError, path: Optional[os.PathLike | str] = None) -> InputError:
    """An operating-system error as a bad input naming its file (`path` when the error names none)."""
    where = error.filename if error.filename is not None else path
    problem = OS_PROBLEMS.get(error.errno) or (error.strerror or short_reason(error)).lower()
    if error.filename2 is not None:
        problem = f"{problem} (with {error.filename2})"
    return InputError(where if where is not None else "(unnamed file)", problem)


def one_line(error: InputError) -> str:
    """The line a command prints for a bad input; always a single line, whatever the problem's text holds."""
    return " ".join(f"error: {error.path}: {error.problem}".split())


def exit_status_of(run: Callable[[], object], interrupted_message: str = INTERRUPTED) -> int:
    """Runs a command's work: 0 when it succeeds; a bad input or an operating-system error (a read-only or full
    disk, a file where a folder should be) prints one line on stderr and gives 2; Ctrl-C prints
    `interrupted_message` and gives 130."""
    try:
        run()
    except InputError as error:
        print(one_line(error), file=sys.stderr)
        return 2
    except OSError as error:
        print(one_line(from_os_error(error)), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_message, file=sys.stderr)
        return INTERRUPTED_STATUS
    return 0
