"""A folder that really cannot be written, for the tests of every command's output checks: permissions for an
ordinary user; as root, who writes regardless of permissions, the immutable attribute (chattr +i) as well."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def make_read_only(folder: Path, request: pytest.FixtureRequest) -> None:
    """Makes `folder` read-only until the test ends; skips the test where that is impossible (root without
    chattr), and proves that it worked."""
    folder.chmod(0o555)
    request.addfinalizer(lambda: folder.chmod(0o755))
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        request.addfinalizer(lambda: subprocess.run(["chattr", "-i", str(folder)]))
    with pytest.raises(OSError):
        (folder / "probe").mkdir()
