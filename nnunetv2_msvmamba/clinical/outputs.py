"""Report files that appear together or not at all: they are all written into a hidden staging folder inside
the output folder and moved into place only once every one of them has been written. Other files already in
the output folder are left alone; report files of an earlier run are replaced."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from nnunetv2_msvmamba.common.errors import InputError


@contextmanager
def staged_files(output: Path) -> Iterator[Path]:
    """Yields an empty staging folder; on success its files move into `output`, on any failure nothing does."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise InputError(output, "exists and is not a folder")
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".clinical-partial-", dir=output))
    try:
        yield staging
        for path in sorted(staging.iterdir()):
            os.replace(path, output / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
