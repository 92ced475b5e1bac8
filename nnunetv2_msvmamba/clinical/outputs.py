"""Where msvmamba_clinical stages its report files, so that they appear together or not at all
(common.atomic.staged_files)."""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from nnunetv2_msvmamba.common.atomic import staged_files as staged_in

STAGING_NAME = ".msvmamba_clinical-staging"


def staged_files(output: Path) -> AbstractContextManager[Path]:
    """common.atomic.staged_files with msvmamba_clinical's staging folder."""
    return staged_in(output, STAGING_NAME)
