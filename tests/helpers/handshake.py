"""A handshake, through files, between a test and a process it stops (kills, interrupts): the process says when it
has reached the point where the test is to act, and waits there until the test lets it go on. However slow or
busy the machine, the process cannot finish before the test's signal, so no test hopes that a sleep was long
enough. The folder is named by an environment variable, so worker processes (of any start method) and programs
started by other programs (nnUNetv2_train) find it. The time bounds below only catch hangs; they decide nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

VARIABLE = "MSVMAMBA_TEST_HANDSHAKE"
HANG_BOUND_SECONDS = 1800.0  # far beyond any healthy wait, even a training epoch on a loaded machine
POLL_SECONDS = 0.01
WAITING_PREFIX = "waiting-"


def handle_ctrl_c_as_from_a_terminal() -> None:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt in this process, as in any Python program started from a terminal,
    even where the test run itself was started with SIGINT ignored (a background job of a shell without job
    control), which a child process inherits and Python then leaves as it is. For the processes a test interrupts."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


class Handshake:
    """One folder shared by the test and the processes under test. In the processes: `claim_first` (true for one
    caller only, across all processes) and `wait_here`. In the test: `env`, `wait_until_waiting`, `let_go`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_environment(cls) -> Optional["Handshake"]:
        """The handshake a test started this process with, or None (then it runs as usual)."""
        folder = os.environ.get(VARIABLE)
        return cls(Path(folder)) if folder else None

    def env(self) -> dict[str, str]:
        return {VARIABLE: str(self.folder)}

    # ------------------------------------------------------------------------- the process under test's side

    def claim_first(self) -> bool:
        """True for the first caller, in any process, and false for every later one (mkdir is atomic)."""
        try:
            (self.folder / "first").mkdir()
            return True
        except FileExistsError:
            return False

    def wait_here(self) -> None:
        """Says that this process has arrived, then blocks until the test lets it go on (which a test that kills
        it never does). A Ctrl-C reaches a waiting main process as KeyboardInterrupt, as it would in real work."""
        (self.folder / f"{WAITING_PREFIX}{os.getpid()}").touch()
        deadline = time.monotonic() + HANG_BOUND_SECONDS
        while not (self.folder / "go_on").exists():
            if time.monotonic() > deadline:  # the test died without stopping this process: do not linger forever
                raise RuntimeError(f"handshake {self.folder}: the test never let this process go on")
            time.sleep(POLL_SECONDS)

    # ------------------------------------------------------------------------------------ the test's side

    def waiting_processes(self) -> set[int]:
        return {int(p.name[len(WAITING_PREFIX):]) for p in self.folder.glob(f"{WAITING_PREFIX}*")}

    def wait_until_waiting(self, process: subprocess.Popen, count: int = 1) -> None:
        """Returns once `count` different processes wait in `wait_here`; fails if `process` ends first."""
        deadline = time.monotonic() + HANG_BOUND_SECONDS
        while len(self.waiting_processes()) < count:
            if process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"the process ended (exit status {process.returncode}) before {count} of its "
                                     f"processes reached the handshake\n--- stdout ---\n{out}\n--- stderr ---\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} processes reached the handshake in {HANG_BOUND_SECONDS} s: hung?")
            time.sleep(POLL_SECONDS)

    def let_go(self) -> None:
        """Lets every waiting process (and every later arrival) go on."""
        (self.folder / "go_on").touch()
