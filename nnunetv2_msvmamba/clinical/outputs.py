"""Report files that appear together or not at all: they are written into a staging folder (common.atomic's
atomic_folder, so an interrupted run's leftovers are cleaned up by the next one and disk errors are one line)
inside the output folder, and moved into place only once every one of them has been written. Other files in
the output folder are left alone; report files of an earlier run are replaced."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from nnunetv2_msvmamba.common.atomic import atomic_folder, check_writable
from nnunetv2_msvmamba.common.errors import InputError

STAGING_NAME = ".msvmamba_clinical-staging"


@contextmanager
def staged_files(output: Path) -> Iterator[Path]:
    """Yields an empty staging folder; on success its files move into `output`, on any failure nothing does."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(output, "exists and is not a folder; the reports go there")
    check_writable(output)
    output.mkdir(parents=True, exist_ok=True)
    staged = output / STAGING_NAME
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
