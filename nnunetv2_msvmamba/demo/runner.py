"""The demo's step runner: each step a command in a subprocess, its output streamed to the console and kept in a
log, reused on a re-run when it finished earlier with the same settings."""
from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

STATE_FILE = "demo_state.json"
BAD_INPUT_STATUS = 2  # the commands' exit status for an input they cannot use (one line on stderr)


class DemoError(Exception):
    """A problem that ends the demo: printed as one line `error: <what>: <problem>`."""

    def __init__(self, what: object, problem: str):
        self.what, self.problem = what, problem
        super().__init__(f"{what}: {problem}")


@dataclass
class Step:
    """One command of the demo. It is reused when the state file records it with the same settings and its
    outputs exist; `stale` are removed before it runs again. A step that `may_fail` reports a bad-input exit
    (status 2: e.g. masks of a barely trained model too poor to measure) as a result and the demo goes on."""
    key: str
    title: str
    command: list[str]
    settings: dict
    outputs: list[Path]
    env: dict = field(default_factory=dict)
    stale: list[Path] = field(default_factory=list)
    may_fail: bool = False

    @property
    def fingerprint(self) -> str:
        encoded = json.dumps({"command": self.command, "settings": self.settings}, sort_keys=True, default=str)
        return hashlib.sha256(encoded.encode()).hexdigest()


class DemoState:
    """OUT/demo_state.json: the fingerprint of every finished step. Its presence marks OUT as a demo folder."""

    def __init__(self, output: Path):
        self.path = output / STATE_FILE
        self.finished: dict[str, str] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    @staticmethod
    def claim(output: Path) -> "DemoState":
        """The state of OUT, refusing a non-empty folder that is not a demo output (so -o . never clobbers)."""
        if output.exists() and not output.is_dir():
            raise DemoError(output, "exists and is not a folder")
        if output.is_dir() and any(output.iterdir()) and not (output / STATE_FILE).is_file():
            raise DemoError(output, f"is not empty and is not a demo output folder (no {STATE_FILE}); "
                                    f"choose another folder with -o")
        output.mkdir(parents=True, exist_ok=True)
        state = DemoState(output)
        state.save()
        return state

    def is_finished(self, step: Step) -> bool:
        return self.finished.get(step.key) == step.fingerprint and all(path.exists() for path in step.outputs)

    def record(self, step: Step) -> None:
        self.finished[step.key] = step.fingerprint
        self.save()

    def forget_all(self) -> None:
        self.finished = {}
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.finished, indent=2) + "\n")


def banner(number: int, total: int, title: str) -> None:
    line = "=" * 100
    print(f"\n{line}\n[{number}/{total}] {title}\n{line}", flush=True)


def stream(command: Sequence[str], env: dict[str, str], log_path: Path) -> int:
    """Runs `command`, copying its output (progress bars included, bytes as they come) to the console and to
    `log_path`; returns its exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        log.write(f"$ {shlex.join(command)}\n".encode())
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            while chunk := process.stdout.read1(65536):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                log.write(chunk)
        finally:
            if process.poll() is None:  # interrupted: Ctrl-C reached the child too; give it a moment
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            process.stdout.close()
    return process.wait()


def remove_stale(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def last_line(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def run_steps(steps: Sequence[Step], state: DemoState, base_env: dict[str, str], logs: Path) -> dict[str, str]:
    """Runs the steps in order, reusing finished ones until the first that has to run; every later one runs
    too, since its inputs may have changed. Returns the problems of the steps that may fail and did, by key
    (such a step is not recorded as finished, so a re-run tries it again)."""
    problems: dict[str, str] = {}
    rerun_from_here = False
    for number, step in enumerate(steps, start=1):
        banner(number, len(steps), step.title)
        log_path = logs / f"{number:02d}_{step.key}.log"
        if not rerun_from_here and state.is_finished(step):
            print(f"reused: finished earlier with the same settings (log: {log_path}; --fresh redoes it)", flush=True)
            continue
        rerun_from_here = True
        state.finished.pop(step.key, None)
        state.save()
        remove_stale(step.stale)
        print(f"$ {shlex.join(step.command)}\n", flush=True)
        started = time.monotonic()
        status = stream(step.command, {**base_env, **step.env}, log_path)
        if status == BAD_INPUT_STATUS and step.may_fail:
            problems[step.key] = last_line(log_path)
            print(f"\n{Path(step.command[0]).name} could not finish: {problems[step.key]}\n(the demo goes on; "
                  f"the report says so)", flush=True)
            continue
        if status != 0:
            raise DemoError(f"step {number} ({step.title})",
                            f"{Path(step.command[0]).name} exited with status {status}; its output is in {log_path}")
        missing = [str(path) for path in step.outputs if not path.exists()]
        if missing:
            raise DemoError(f"step {number} ({step.title})",
                            f"finished but did not write {', '.join(missing)}; its output is in {log_path}")
        state.record(step)
        print(f"\ndone in {format_duration(time.monotonic() - started)}", flush=True)
    return problems
