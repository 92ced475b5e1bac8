"""The layout of tests/ (CONTRIBUTING.md, "Where the tests are"): unit tests mirror the package, end-to-end tests are
under tests/e2e/ and marked e2e by that folder alone, and what tests share is imported from tests/helpers/."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from helpers.paths import REPOSITORY, TESTS

PACKAGE = REPOSITORY / "nnunetv2_msvmamba"
UNIT, END_TO_END, HELPERS = TESTS / "unit", TESTS / "e2e", TESTS / "helpers"
# unit-test folders of what is not nnunetv2_msvmamba (helpers: the tests' own shared code, tests/helpers/)
OUTSIDE_THE_PACKAGE = {"dataset_conversion", "benchmarks", "docs", "helpers"}


def python_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.py") if "__pycache__" not in path.parts)


def imported_modules(path: Path) -> list[str]:
    """Every module the file imports, by its full name as written."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.append(node.module)
    return modules


def collected_test_ids(marker: str, folder: Path) -> list[str]:
    """The ids pytest collects in `folder` with `-m marker`, collected as the suite is (this repository's
    pyproject.toml and tests/conftest.py), in a process of its own."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             "-m", marker, str(folder.relative_to(REPOSITORY))],
                            cwd=REPOSITORY, capture_output=True, text=True, timeout=600)
    assert result.returncode in (0, 5), result.stdout[-3000:] + result.stderr[-3000:]  # 5: every test deselected
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_no_test_file_lies_directly_in_tests():
    assert sorted(path.name for path in TESTS.glob("test_*.py")) == []


def test_unit_test_folders_mirror_the_package():
    subpackages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    folders = {path.name for path in UNIT.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert folders - subpackages - OUTSIDE_THE_PACKAGE == set(), "a tests/unit/ folder that mirrors nothing"


def test_test_files_are_only_in_unit_folders_and_e2e():
    misplaced = [path.relative_to(TESTS).as_posix() for path in TESTS.rglob("test_*.py")
                 if path.parent.parent != UNIT and path.parent != END_TO_END and path != UNIT / "test_layout.py"]
    assert misplaced == []


def test_shared_code_is_imported_from_helpers_never_from_conftest_or_a_test_file():
    offending = {path.relative_to(TESTS).as_posix(): module
                 for path in python_files(TESTS) for module in imported_modules(path)
                 if module.split(".")[0] == "conftest" or module.split(".")[-1].startswith("test_")}
    assert offending == {}


def test_no_test_file_marks_itself_e2e():
    """The folder decides: tests/conftest.py marks every test under tests/e2e/ and nothing else."""
    marking = [path.relative_to(TESTS).as_posix() for path in python_files(TESTS)
               if "mark.e2e" in path.read_text() and path != TESTS / "conftest.py" and path != Path(__file__)]
    assert marking == []


def test_every_end_to_end_test_and_no_unit_test_is_marked_e2e():
    assert collected_test_ids("not e2e", END_TO_END) == []
    assert collected_test_ids("e2e", UNIT) == []
    assert len(collected_test_ids("e2e", END_TO_END)) > 0


def test_the_suite_starts_the_longest_file_then_end_to_end_then_unit_tests():
    """README's test command keeps the collection order (`--no-loadscope-reorder`; pytest-xdist would otherwise start
    files with the most tests first, and the demo's four tests last), and the collection starts with the file marked
    `starts_first`, then every end-to-end test, then the unit tests."""
    test_command = subprocess.run(["bash", ".ci/test_command"], cwd=REPOSITORY, capture_output=True, text=True,
                                  check=True).stdout
    assert "--dist loadfile --no-loadscope-reorder" in test_command
    ids = collected_test_ids("e2e or not e2e", TESTS)
    files = [test_id.split("::")[0] for test_id in ids]
    first = [name for name in files if name.endswith("test_demo_full.py")]
    end_to_end = [name for name in files if name.startswith("tests/e2e/")]
    assert first and files[:len(first)] == first
    assert files[:len(end_to_end)] == end_to_end and len(end_to_end) < len(files)
