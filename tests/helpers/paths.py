"""Where the tests and the repository are, for the tests that run files of the checkout rather than the installed
package (benchmarks, README's commands, test-only modules in a subprocess)."""
from __future__ import annotations

import os
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPOSITORY = TESTS.parent


def pythonpath_with_tests() -> str:
    """PYTHONPATH for a subprocess that imports test-only modules (`python -m helpers.held_converter`, the held
    trainers): tests/ first, then whatever PYTHONPATH this process has."""
    return os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
