"""Outputs that appear whole or not at all: a folder built beside its target and renamed into place, a set of
report files moved into an existing output folder together, a JSON file written to a temporary name and renamed.

The temporary names say whose they are: `.<target>.partial-<host>-<pid>-<random>` (and `.old-` for a
replaced folder on its way out). A run that is killed (SIGKILL, power loss) cannot remove its own; the next
run for the same target removes those whose process is gone (or that an earlier version of this package
left, named `.<target>.partial-<random>`), and nothing else."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError, from_os_error

RANDOM_PART = r"[a-z0-9_]{8}"  # what tempfile adds to a prefix


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _temporary_prefix(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{_host()}-{os.getpid()}-"


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, but belongs to someone else
        return False
    return False


def stale_temporaries(target: Path) -> list[Path]:
    """The temporary files and folders an interrupted earlier run for `target` left beside it: named after
    `target` by this module, and made by a process of this machine that no longer runs (or by an earlier
    version of this package, whose names carry no process)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(partial|old)-(?:(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-)?"
                         rf"{RANDOM_PART}")
    if not target.parent.is_dir():
        return []
    stale = []
    for path in sorted(target.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if match is None or path.is_symlink():
            continue
        if match["pid"] is None or (match["host"] == _host() and _process_is_gone(int(match["pid"]))):
            stale.append(path)
    return stale


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Removes what `stale_temporaries` finds, saying so on stderr. A replaced folder on its way out whose
    replacement never arrived (a kill between the two renames) is put back first."""
    removed = []
    for path in stale_temporaries(target):
        previous = path / target.name
        if ".old-" in path.name and previous.is_dir() and not target.exists():
            os.replace(previous, target)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path)
    if removed:
        print(f"note: removed {len(removed)} leftover(s) of an interrupted earlier run: "
              f"{', '.join(p.name for p in removed)}", file=sys.stderr)
    return removed


def check_writable(folder: Path) -> None:
    """Fails with one line, before any work, when `folder` (or the folder it would be created in) is a file or
    cannot be written to."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(existing, "is a file, not a folder; the output goes there")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InputError(existing, f"cannot write here: {from_os_error(error).problem}") from None


@contextmanager
def atomic_folder(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yields an empty temporary folder beside `target`; on success it replaces `target` in one rename,
    on any failure it is removed, so no half-written output is ever left behind. Leftovers of an earlier run
    that was killed are removed first. An operating-system error (read-only or full disk) becomes a one-line
    InputError naming its file, or `target` when it names none."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise InputError(target, "already exists; pass --overwrite to replace it")
    check_writable(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)
        staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target, "partial"), dir=target.parent))
    except OSError as error:
        raise InputError(target.parent, f"cannot write here: {from_os_error(error).problem}") from None
    try:
        yield staging
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target, "old"), dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired)
        else:
            os.replace(staging, target)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise from_os_error(error, target) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_json_atomically(obj, path: Path) -> None:
    """Writes `obj` as indented JSON to `path` through a temporary file beside it and a rename; leftovers of a
    killed earlier write are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path, "partial"), dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_files(output: Path, staging_name: str) -> Iterator[Path]:
    """Report files that appear together or not at all: yields an empty staging folder `output/staging_name`
    (an atomic_folder, so an interrupted run's leftovers are cleaned up by the next one and disk errors are one
    line naming `output`); on success its files move into `output`, on any failure none does. Other files in
    `output` are left alone; report files of an earlier run are replaced."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(output, "exists and is not a folder; the reports go there")
    check_writable(output)
    output.mkdir(parents=True, exist_ok=True)
    staged = output / staging_name
    try:
        with atomic_folder(staged, overwrite=True) as staging:
            yield staging
    except InputError as error:  # a disk error names the staging folder; the user knows the output folder
        if error.path == staged:
            raise InputError(output, error.problem) from None
        raise
    for path in sorted(staged.iterdir()):
        os.replace(path, output / path.name)
    staged.rmdir()
