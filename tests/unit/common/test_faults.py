"""Faults around the converters' work rather than in their input: an output folder that cannot be written, a
run killed or interrupted in the middle, an error while the progress bar is drawn. The shared helpers
(nnunetv2_msvmamba.common) handle them, so every command that uses them behaves the same way."""
from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dataset_conversion import camus
from helpers.camus_fixtures import patients_2023, write_2023_release
from helpers.handshake import HANG_BOUND_SECONDS, Handshake
from helpers.paths import pythonpath_with_tests
from helpers.read_only import make_read_only
from nnunetv2_msvmamba.common import atomic
from nnunetv2_msvmamba.common.atomic import atomic_folder, stale_temporaries, write_json_atomically
from nnunetv2_msvmamba.common.errors import InputError, exit_status_of
from nnunetv2_msvmamba.common.parallel import parallel_map

DATASET = "Dataset601_CAMUS"


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "CAMUS_public"
    write_2023_release(root, patients_2023())
    return root


def error_lines(stderr: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", stderr) if line.startswith("error")]


def everything_in(*folders: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for folder in folders for p in folder.rglob("*"))


# -------------------------------------------------------------------- output folders that cannot be written

@pytest.mark.parametrize("variable", ["nnUNet_raw", "nnUNet_preprocessed"])
def test_read_only_output_folder_is_one_line_exit_2_and_nothing_written(variable, release, nnunet_folders,
                                                                         request, capsys):
    folder = Path(os.environ[variable])
    make_read_only(folder, request)
    assert camus.main([str(release), "-np", "1"]) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and re.fullmatch(
        rf"error: {re.escape(str(folder))}: cannot write here: (permission denied|operation not permitted.*)",
        errors[0]), errors
    assert everything_in(nnunet_folders.raw, nnunet_folders.preprocessed) == []


@pytest.mark.parametrize("variable", ["nnUNet_raw", "nnUNet_preprocessed"])
def test_output_folder_that_is_a_file_is_one_line(variable, release, tmp_path, monkeypatch, nnunet_folders, capsys):
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("")
    monkeypatch.setenv(variable, str(a_file))
    assert camus.main([str(release), "-np", "1"]) == 2
    assert capsys.readouterr().err == f"error: {a_file}: is a file, not a folder; ${variable} must name a folder\n"


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(release, nnunet_folders, monkeypatch, capsys):
    def full_disk(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() reports it: no file named

    monkeypatch.setattr(camus, "write_nifti_2d", full_disk)
    assert camus.main([str(release), "-np", "1"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: {nnunet_folders.raw / DATASET}: no space left on the device"]
    assert everything_in(nnunet_folders.raw, nnunet_folders.preprocessed) == []


def test_operating_system_errors_of_any_command_are_one_line(tmp_path, capsys):
    def work():
        (tmp_path / "a_file").write_text("")
        (tmp_path / "a_file" / "reports").mkdir()

    assert exit_status_of(work) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'a_file' / 'reports'}: a file where a folder is needed\n"


# --------------------------------------------------------------------------- leftovers of a killed run

@dataclass
class HeldConversion:
    """A real conversion in its own process group (as a command started from a shell) that converts its first
    patient and then holds every process at the handshake (tests/helpers/held_converter.py) until the test lets it go
    on: whatever the machine's load, it is still at work when the test stops it."""
    process: subprocess.Popen
    handshake: Handshake
    num_processes: int
    raw: Path

    def wait_until_in_the_middle(self) -> Path:
        """The partial dataset folder, once the first patient's cases are written into it and every process of the
        conversion waits at the handshake (a process that waits has finished whatever it was given before)."""
        self.handshake.wait_until_waiting(self.process, count=self.num_processes)
        partial, = self.raw.glob(f".{DATASET}.partial-*")
        assert any(partial.glob("images*/*")), everything_in(partial)
        return partial

    def signal_every_process(self, signal_number: int) -> None:
        os.killpg(self.process.pid, signal_number)

    def output_once_ended(self) -> tuple[str, str]:
        """stdout and stderr once every process that holds them (main and workers) has ended."""
        return self.process.communicate(timeout=HANG_BOUND_SECONDS)


@pytest.fixture
def start_held_conversion(release, nnunet_folders, tmp_path):
    """Starts HeldConversions of the release; any still running when the test ends is killed with its workers."""
    conversions: list[HeldConversion] = []

    def start(num_processes: int) -> HeldConversion:
        handshake = Handshake(tmp_path / "handshake")
        env = nnunet_folders.env(PYTHONPATH=pythonpath_with_tests(), **handshake.env())
        process = subprocess.Popen([sys.executable, "-m", "helpers.held_converter", str(release),
                                    "-np", str(num_processes)],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        conversions.append(HeldConversion(process, handshake, num_processes, nnunet_folders.raw))
        return conversions[-1]

    yield start
    for conversion in conversions:
        if conversion.process.poll() is None:  # a test that failed before it stopped the conversion
            conversion.signal_every_process(signal.SIGKILL)
            conversion.process.communicate()


def test_next_run_removes_what_a_killed_run_left(start_held_conversion, release, nnunet_folders, capsys):
    conversion = start_held_conversion(1)
    partial = conversion.wait_until_in_the_middle()
    conversion.signal_every_process(signal.SIGKILL)
    conversion.output_once_ended()
    assert partial.is_dir()  # a killed process cleans nothing up: this is what the next run finds

    assert camus.main([str(release), "-np", "1"]) == 0
    assert not partial.exists()
    assert sorted(p.name for p in nnunet_folders.raw.iterdir()) == [DATASET]
    assert f"removed 1 leftover(s) of an interrupted earlier run: {partial.name}" in capsys.readouterr().err


def dead_process_id() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_only_the_targets_own_leftovers_of_dead_processes_are_removed(tmp_path):
    target = tmp_path / "Dataset601_CAMUS"
    host, dead, alive = atomic._host(), dead_process_id(), os.getpid()
    removable = [f".Dataset601_CAMUS.partial-{host}-{dead}-ab_cd123", ".Dataset601_CAMUS.partial-x1y2z3w4",
                 f".Dataset601_CAMUS.old-{host}-{dead}-zzzzzzzz"]
    kept = [f".Dataset601_CAMUS.partial-{host}-{alive}-ab_cd123",      # a run still at work
            f".Dataset601_CAMUS.partial-otherhost-{dead}-ab_cd123",    # another machine's: cannot tell
            f".Dataset6011_CAMUS.partial-{host}-{dead}-ab_cd123",      # another dataset's
            f".Dataset601_CAMUS2.partial-{host}-{dead}-ab_cd123",
            f"Dataset601_CAMUS.partial-{host}-{dead}-ab_cd123",        # not hidden: not ours
            ".Dataset601_CAMUS.partial-my notes", ".Dataset601_CAMUS.partial-",
            ".Dataset601_CAMUS.backup", "Dataset601_Other"]
    for name in removable + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "something").write_text("x")
    (tmp_path / f".Dataset601_CAMUS.partial-{host}-{dead}-file1234").write_text("a file is removed too")
    removable.append(f".Dataset601_CAMUS.partial-{host}-{dead}-file1234")
    assert sorted(p.name for p in stale_temporaries(target)) == sorted(removable)

    with atomic_folder(target, overwrite=False) as staging:
        (staging / "dataset.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + [target.name])


def test_a_replaced_dataset_killed_between_the_two_renames_is_put_back(tmp_path):
    target, dead = tmp_path / "Dataset601_CAMUS", dead_process_id()
    retired = tmp_path / f".Dataset601_CAMUS.old-{atomic._host()}-{dead}-abcdefgh"
    (retired / target.name).mkdir(parents=True)
    (retired / target.name / "dataset.json").write_text("the previous dataset")
    atomic.remove_stale_temporaries(target)
    assert (target / "dataset.json").read_text() == "the previous dataset"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_json_leftover_of_a_killed_write_is_removed(tmp_path):
    path = tmp_path / "splits_final.json"
    leftover = tmp_path / f".splits_final.json.partial-{atomic._host()}-{dead_process_id()}-abcdefgh"
    leftover.write_text("[{\"tra")
    write_json_atomically([1], path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["splits_final.json"]


# ------------------------------------------------------------------------- progress bar and Ctrl-C

def failing_on_third(item: int) -> int:
    if item == 3:
        raise InputError(f"/data/case{item}", "broken")
    return item


@pytest.mark.parametrize("num_processes", [1, 2])
def test_error_line_stands_after_the_closed_progress_bar(num_processes, capsys):
    assert exit_status_of(lambda: parallel_map(failing_on_third, list(range(6)), num_processes, "cases")) == 2
    err = capsys.readouterr().err
    before, line, after = err.rpartition("error: /data/case3: broken")
    assert after == "\n" and before.endswith("\n"), repr(err)  # not glued to the bar, and no bar redrawn after
    assert "cases:" in before and "\r" not in after


@pytest.mark.parametrize("num_processes", ["1", "2"])
def test_failed_case_in_a_conversion_is_its_own_line(num_processes, release, nnunet_folders, capsys):
    (release / "database_nifti" / "patient0003" / "patient0003_4CH_ED.nii.gz").write_bytes(b"not an image")
    assert camus.main([str(release), "-np", num_processes]) == 2
    err = capsys.readouterr().err
    assert re.search(r"\n(error: .*patient0003_4CH_ED\.nii\.gz: [^\r\n]*)\n\Z", err), repr(err)


def test_ctrl_c_in_the_middle_is_one_line_exit_130_and_nothing_written(release, nnunet_folders, monkeypatch,
                                                                         capsys):
    calls = []

    def interrupted_on_second_patient(task):
        calls.append(task)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return camus.PatientResult(task.patient)

    monkeypatch.setattr(camus, "convert_patient", interrupted_on_second_patient)
    assert camus.main([str(release), "-np", "1"]) == 130
    err = capsys.readouterr().err
    assert err.endswith("\ninterrupted: nothing was written\n") and "Traceback" not in err
    assert everything_in(nnunet_folders.raw, nnunet_folders.preprocessed) == []


@pytest.mark.parametrize("num_processes", [1, 2])
def test_ctrl_c_from_the_terminal_stops_every_process_without_a_traceback(num_processes, start_held_conversion,
                                                                          nnunet_folders):
    conversion = start_held_conversion(num_processes)
    conversion.wait_until_in_the_middle()
    conversion.signal_every_process(signal.SIGINT)  # what Ctrl-C does: every process of the foreground group
    # Only now may the held processes go on: the interrupt is already pending in the main process, which cannot
    # collect the held patients' results without handling it first. (Its workers ignore SIGINT; they finish the
    # patients they hold, and the main process waits for them before it removes the partial dataset.)
    conversion.handshake.let_go()
    out, err = conversion.output_once_ended()
    assert conversion.process.returncode == 130, err
    assert err.endswith("\ninterrupted: nothing was written\n") and "Traceback" not in err, err
    assert everything_in(nnunet_folders.raw, nnunet_folders.preprocessed) == []
