"""README.md and the documentation stay true: README's set-up commands are what CI runs, every command of ours that
README, docs/*.md or CONTRIBUTING.md names exists, every command line in their code blocks is accepted by the
installed program's own argument parser, and every link between them points at an existing file and heading."""
from __future__ import annotations

import functools
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.nnunet import run_command
from helpers.paths import REPOSITORY
from nnunetv2_msvmamba.common.commands import BIN

README = (REPOSITORY / "README.md").read_text()
# The documentation pages besides README: one per task in docs/, and the contributor's guide.
DOC_PAGES = {path.relative_to(REPOSITORY).as_posix(): path.read_text()
             for path in [*sorted((REPOSITORY / "docs").glob("*.md")), REPOSITORY / "CONTRIBUTING.md"]}
OUR_COMMANDS = sorted(set(re.findall(r"\b(msvmamba_[a-z_]+)\b(?!\.py)", "\n".join([README, *DOC_PAGES.values()]))))


def setup_commands() -> list[str]:
    section = README.split("## Set-up commands", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ")]


def test_readme_has_exactly_two_setup_commands_demo_and_tests():
    demo, tests = setup_commands()
    assert demo == "bash .ci/setup && .venv/bin/msvmamba_demo"
    assert tests.startswith("bash .ci/setup && ") and " -m pytest " in tests


def ci_copy(tmp_path: Path, readme: str) -> Path:
    """A folder with the real .ci/run and .ci/test_command, a no-op .ci/setup and the given README.md."""
    (tmp_path / ".ci").mkdir()
    for script in ("run", "test_command"):
        shutil.copy2(REPOSITORY / ".ci" / script, tmp_path / ".ci" / script)
    (tmp_path / ".ci" / "setup").write_text("echo '[stub setup]'\n")
    (tmp_path / "README.md").write_text(readme)
    return tmp_path


def test_ci_test_command_prints_the_readme_test_command():
    printed = subprocess.run(["bash", ".ci/test_command"], cwd=REPOSITORY, capture_output=True, text=True, check=True)
    assert printed.stdout == setup_commands()[1] + "\n"


def test_ci_runs_the_command_that_ci_test_command_finds(tmp_path):
    """.ci/run, end to end with a stub set-up: it runs exactly the README line that .ci/test_command extracts."""
    readme = "# x\n\n    bash .ci/setup && echo ran-the-pytest-line\n    bash .ci/setup && echo not-this-pytest-line\n"
    result = subprocess.run(["bash", ".ci/run"], cwd=ci_copy(tmp_path, readme), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[stub setup]", "[ci] running README's test command: bash .ci/setup && echo ran-the-pytest-line",
        "[stub setup]", "ran-the-pytest-line"]


def test_ci_fails_when_the_readme_has_no_test_command(tmp_path):
    result = subprocess.run(["bash", ".ci/run"], cwd=ci_copy(tmp_path, "# no commands\n"), capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert "README.md has no test command line" in result.stderr


def test_readme_names_our_console_commands():
    assert {"msvmamba_env", "msvmamba_convert_camus", "msvmamba_convert_echonet", "msvmamba_evaluate",
            "msvmamba_make_synthetic_camus", "msvmamba_demo"} <= set(OUR_COMMANDS)


@pytest.mark.parametrize("command", OUR_COMMANDS)
def test_every_command_in_the_readme_and_docs_is_installed_and_has_help(command):
    assert (BIN / command).exists(), f"the documentation names {command}, which is not an installed console script"
    result = run_command([command, "--help"])
    assert result.stdout.startswith("usage:") and command in result.stdout


# ------------------------------------------------------------------------------- every command line parses

SKIPPED_PROGRAMS = {"export", "eval", "pip", "bash"}  # shell set-up; the set-up commands are checked above


def code_lines(text: str) -> list[str]:
    """The command lines of a Markdown page's code blocks (indented after a blank line, or ```bash), continuation
    lines joined."""
    lines, fenced, indented, previous = [], False, False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            lines.append(line.strip())
        else:
            indented = line.startswith("    ") and (indented or not previous.strip())
            if indented:
                lines.append(line.strip())
        previous = line
    joined, pending = [], ""
    for line in lines:
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
        else:
            joined.append(pending)
            pending = ""
    return [line for line in joined if line]


def invocations_in(text: str) -> list[list[str]]:
    """Each command of a page as [program, *arguments], environment assignments and .venv/bin/ dropped."""
    invocations, pending = [], ""
    for line in code_lines(text):
        pending = f"{pending}\n{line}" if pending else line
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quoted argument that goes on over the next lines (bash -c '...')
            continue
        pending = ""
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
            words = words[1:]
        if words and words[0] not in SKIPPED_PROGRAMS:
            invocation = [words[0].removeprefix(".venv/bin/"), *words[1:]]
            if invocation not in invocations:
                invocations.append(invocation)
    return invocations


def is_checked_in_docs(invocation: list[str]) -> bool:
    """In docs/ and CONTRIBUTING.md: our commands, nnU-Net's, and Python scripts (benchmarks and the like); not
    the shell and packaging lines around them (git, pip, bash, python -m ...)."""
    program = invocation[0]
    return (program.startswith(("msvmamba_", "nnUNetv2_"))
            or program in ("python", "python3") and len(invocation) > 1 and invocation[1].endswith(".py"))


INVOCATIONS = invocations_in(README)
DOC_INVOCATIONS = [(page, invocation) for page, text in DOC_PAGES.items() for invocation in invocations_in(text)
                   if is_checked_in_docs(invocation) and invocation not in INVOCATIONS]

# Runs command entry points (console scripts or `python script.py`) up to the end of their argument parsing: the
# invocations come as a JSON list on stdin, each is run in a child forked after the heavy imports they share
# (torch, nnU-Net), so that a hundred command lines cost one start-up; prints one JSON result per invocation.
PARSE_ONLY = r"""
import argparse, json, os, runpy, sys
from importlib.metadata import entry_points

class Parsed(Exception):
    pass

def stop_after(method):
    # only the outermost call stops: parse_args rejects unknown options after its inner parse_known_args
    def parse_then_stop(self, *args, **kwargs):
        outermost = not getattr(argparse, "_parsing", False)
        argparse._parsing = True
        try:
            result = method(self, *args, **kwargs)
        finally:
            argparse._parsing = not outermost
        if outermost:
            raise Parsed()
        return result
    return parse_then_stop

def parse(program, arguments):
    if program in ("python", "python3"):
        sys.argv = arguments
        sys.path.insert(0, os.path.dirname(os.path.abspath(arguments[0])))  # as `python script.py` does
        run = lambda: runpy.run_path(arguments[0], run_name="__main__")
    else:
        sys.argv = [program, *arguments]
        run = {ep.name: ep for ep in entry_points(group="console_scripts")}[program].load()
    try:
        run()
    except Parsed:
        return 0
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1
    print("the command finished without parsing arguments with argparse", file=sys.stderr)
    return 1

def parse_in_a_child(invocation):
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(reading)
        os.dup2(writing, 1)
        os.dup2(writing, 2)
        status = 1
        try:
            status = parse(invocation[0], invocation[1:])
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(writing)
    with os.fdopen(reading, errors="replace") as output:
        text = output.read()
    _, wait_status = os.waitpid(child, 0)
    return {"returncode": os.waitstatus_to_exitcode(wait_status), "output": text}

import torch, nnunetv2.run.run_training, nnunetv2.inference.predict_from_raw_data  # shared by most commands
argparse.ArgumentParser.parse_args = stop_after(argparse.ArgumentParser.parse_args)
argparse.ArgumentParser.parse_known_args = stop_after(argparse.ArgumentParser.parse_known_args)
results = [parse_in_a_child(invocation) for invocation in json.load(sys.stdin)]
sys.stdout.write(json.dumps(results))
"""


def parse_all(invocations: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Each invocation run by its program up to the end of its argument parsing: the exit status (0 when it
    parsed) and what it printed (as stderr)."""
    completed = subprocess.run([str(BIN / "python"), "-c", PARSE_ONLY], input=json.dumps(invocations), cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=3600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return [subprocess.CompletedProcess(invocation, result["returncode"], "", result["output"])
            for invocation, result in zip(invocations, json.loads(completed.stdout))]


def parses(invocation: list[str]) -> subprocess.CompletedProcess:
    return parse_all([invocation])[0]


@functools.lru_cache(maxsize=None)
def parsed_documentation() -> dict[str, subprocess.CompletedProcess]:
    """Every command line of README, docs/ and CONTRIBUTING.md, parsed in one run (see PARSE_ONLY)."""
    invocations = [*INVOCATIONS, *(invocation for _, invocation in DOC_INVOCATIONS)]
    return {json.dumps(invocation): result for invocation, result in zip(invocations, parse_all(invocations))}


def test_readme_has_command_lines_of_every_kind():
    programs = {invocation[0] for invocation in INVOCATIONS}
    assert {"nnUNetv2_train", "nnUNetv2_predict", "nnUNetv2_plan_and_preprocess", "msvmamba_convert_camus",
            "msvmamba_convert_echonet", "msvmamba_evaluate", "msvmamba_demo", "python"} <= programs


def test_the_parse_check_rejects_a_wrong_option_and_a_missing_argument():
    assert parses(["nnUNetv2_train", "601", "2d", "0", "--no-such-option"]).returncode != 0
    assert "required: root" in parses(["msvmamba_convert_camus"]).stderr


@pytest.mark.parametrize("invocation", INVOCATIONS, ids=[" ".join(i)[:70] for i in INVOCATIONS])
def test_every_readme_command_line_is_accepted_by_its_program(invocation):
    """Options and arguments as README writes them parse with the installed program's own parser (nnU-Net's
    commands included), so a renamed option or a wrong argument count cannot go unnoticed."""
    result = parsed_documentation()[json.dumps(invocation)]
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_docs_have_command_lines_of_every_kind_and_the_check_sees_them():
    pages_with_commands = {page for page, _ in DOC_INVOCATIONS}
    assert {"docs/datasets.md", "docs/training.md", "docs/evaluation.md", "docs/clinical.md", "docs/video.md",
            "docs/benchmarks.md", "CONTRIBUTING.md"} <= pages_with_commands
    programs = {invocation[0] for _, invocation in DOC_INVOCATIONS} | {invocation[0] for invocation in INVOCATIONS}
    assert set(OUR_COMMANDS) - {"msvmamba_env"} <= programs  # msvmamba_env: only inside eval "$(...)"
    assert {"msvmamba_convert_echonet", "msvmamba_make_synthetic_camus", "msvmamba_clinical", "msvmamba_predict_video",
            "nnUNetv2_move_plans_between_datasets", "nnUNetv2_preprocess", "python"} <= programs


def test_the_docs_check_skips_only_shell_and_packaging_lines():
    assert is_checked_in_docs([".venv/bin/msvmamba_demo".removeprefix(".venv/bin/")])
    assert is_checked_in_docs(["nnUNetv2_trian", "601"])  # a misspelt command is checked, and then fails
    assert is_checked_in_docs(["python", "benchmarks/bench_network.py", "--quick"])
    assert not is_checked_in_docs(["python", "-m", "build"]) and not is_checked_in_docs(["pip", "install", "."])


@pytest.mark.parametrize("page, invocation", DOC_INVOCATIONS,
                         ids=[f"{page}: {' '.join(i)}"[:90] for page, i in DOC_INVOCATIONS])
def test_every_docs_command_line_is_accepted_by_its_program(page, invocation):
    """As for README: each command line of docs/*.md and CONTRIBUTING.md parses with its program's own parser."""
    result = parsed_documentation()[json.dumps(invocation)]
    assert result.returncode == 0, f"{page}: {' '.join(invocation)}\n{result.stderr[-2000:]}"


# ------------------------------------------------------------------------------------------ links between pages

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    text = re.sub(r"(?ms)^```.*?^```", "", path.read_text())  # a '#' in a code block is no heading
    return {heading_anchor(match) for match in re.findall(r"(?m)^#{1,6} (.+)$", text)}


def local_links(page: str, text: str) -> list[tuple[str, Path, str]]:
    """(link as written, target file, anchor or '') of every link to a file of this repository."""
    links = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        path = (REPOSITORY / page).parent / file_part if file_part else REPOSITORY / page
        links.append((target, path, anchor))
    return links


ALL_PAGES = {"README.md": README, **DOC_PAGES}
LINKS = [(page, *link) for page, text in ALL_PAGES.items() for link in local_links(page, text)]


def test_readme_links_every_docs_page_and_the_reliability_page():
    linked = {path.resolve() for page, _, path, _ in LINKS if page == "README.md"}
    assert {path.resolve() for path in (REPOSITORY / "docs").glob("*.md")} <= linked
    assert (REPOSITORY / "docs" / "reliability.md").resolve() in linked


@pytest.mark.parametrize("page, link, path, anchor", LINKS, ids=[f"{page} -> {link}" for page, link, _, _ in LINKS])
def test_every_link_points_at_an_existing_file_and_heading(page, link, path, anchor):
    assert path.exists(), f"{page} links to {link}, which does not exist"
    if anchor and path.suffix == ".md":
        assert anchor in anchors_of(path), f"{page} links to {link}: {path.name} has no heading with that anchor"


def test_the_link_check_finds_a_missing_page_and_a_missing_heading():
    links = local_links("README.md", "[a](docs/no_such_page.md) [b](docs/training.md#no-such-heading) "
                                     "[c](https://example.org/x.md)")
    assert [(link, path.exists()) for link, path, _ in links] == [
        ("docs/no_such_page.md", False), ("docs/training.md#no-such-heading", True)]
    assert "no-such-heading" not in anchors_of(REPOSITORY / "docs" / "training.md")
    assert heading_anchor("CAMUS → nnU-Net") == "camus--nnu-net"
    assert heading_anchor("`torch.compile`") == "torchcompile"


def test_the_architecture_figure_script_draws_the_network_the_trainer_builds(tmp_path):
    """docs/architecture.png comes from docs/draw_architecture.py, which builds the network from a plan."""
    figure = tmp_path / "network.png"
    drawn = subprocess.run([str(BIN / "python"), str(REPOSITORY / "docs" / "draw_architecture.py"), "-o", str(figure)],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    assert figure.read_bytes().startswith(b"\x89PNG") and (REPOSITORY / "docs" / "architecture.png").is_file()
    assert "architecture.png" in DOC_PAGES["docs/architecture.md"]
