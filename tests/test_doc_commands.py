"""Every shell command README.md, CONTRIBUTING.md and docs/ show works as written.

Each command parses (`bash -n`) and names a real program: a repository script that exists, a Python module or
script of the repository that answers `--help` with every option the command uses, a `runai-uploader` command
likewise, an extra setup.py defines. The read-only commands (`runai-uploader status`, `history`) run against a
real spool. A program that needs a server or a cluster is allow-listed below, with the reason.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import stat
import subprocess
import sys

import pytest

from harness import REPO, job_env
from runai.reporter.spool import SpoolWriter
from tests._doc_commands import (
    Shown,
    every_command,
    extras,
    fences,
    has_placeholder,
    options,
    pages,
    python_blocks,
    simple_commands,
)

# Programs a command may name that this test does not run or look up, and why.
NOT_CHECKED = {
    "kubectl": "needs a Kubernetes cluster (deploy/kubernetes/ is validated offline by tests/test_deploy.py)",
    "curl": "asks a running server",
    "kustomize": "edits the kustomization an operator deploys (its rendering is tested by tests/test_deploy.py)",
    "prometheus": "a server: the tests start it through harness/",
    "prometheus-pushgateway": "a server: the tests start it through harness/",
    "victoria-metrics": "a server: the tests start it through harness/",
}
BUILTINS = {"export", "cd", "source", ".", "set", "unset"}
# Paths a command may name that are made by an earlier command on the same page (a venv), not in the repository.
MADE_BY_THE_READER = (".venv/", ".venv-peers/", ".venv-tf/")
REPO_DIRS = ("benchmarks/", "scripts/", "docs/", "deploy/", "tests/", "harness/", "runai/", "uploader/")
OUTPUTS = (".png", ".json", ".csv")
COMMANDS = every_command()
RUNNABLE = {"status", "history"}  # read the spool only: cheap, and they need no server
# Pages whose commands a test of their own runs, in order, on the spool their earlier commands wrote.
RUN_WHOLE = {"docs/quickstart.md": "tests/test_quickstart.py"}


def ids(command: Shown) -> str:
    return f"{command.page}:{command.line}"


def test_the_docs_show_commands_and_the_readme_two_set_up_commands() -> None:
    assert len(COMMANDS) >= 30, "the collector found too few commands: has the docs' markup changed?"
    readme = [c for c in COMMANDS if c.page == "README.md" and not c.synopsis]
    scripts = [argv[0] for c in readme for argv in simple_commands(c.text) if argv[0].startswith("./scripts/")]
    assert scripts == ["./scripts/demo.sh", "./scripts/test.sh"], scripts


@pytest.mark.parametrize("path", pages(), ids=lambda p: os.path.relpath(p, REPO))
def test_every_code_block_names_its_language(path: str) -> None:
    # A block without one (sh, console, text, python, promql, yaml ...) would hide a command from this test.
    unnamed = [line for line, language in fences(path) if not language]
    assert not unnamed, f"{os.path.relpath(path, REPO)}: lines {unnamed}: a ``` block names no language"


@pytest.mark.parametrize("path", pages(), ids=lambda p: os.path.relpath(p, REPO))
def test_every_python_block_compiles(path: str) -> None:
    for line, source in python_blocks(path):
        try:
            compile(source, f"{path}:{line}", "exec")
        except SyntaxError as exc:
            raise AssertionError(f"{os.path.relpath(path, REPO)}:{line + (exc.lineno or 0)}: {exc.msg}") from None


@pytest.mark.e2e
@pytest.mark.parametrize("command", [c for c in COMMANDS if not c.synopsis], ids=ids)
def test_every_command_parses_and_names_a_real_program(command: Shown) -> None:
    parsed = subprocess.run(["bash", "-n", "-c", command.text], capture_output=True, text=True, timeout=30)
    assert parsed.returncode == 0, f"{command}: bash -n: {parsed.stderr.strip()}"
    for argv in simple_commands(command.text):
        assert not any(word.startswith("[") for word in argv), (
            f"{command}: a usage synopsis: show it in a ```text block, or the command as one would run it"
        )
        problem = _problem(argv)
        assert problem is None, f"{command}: {problem}"


@pytest.mark.e2e
@pytest.mark.parametrize("command", COMMANDS, ids=ids)
def test_every_program_answers_help_with_the_options_shown(command: Shown) -> None:
    # A synopsis's `|` separates alternatives, not commands.
    for argv in [command.text.split()] if command.synopsis else simple_commands(command.text):
        target = _help_target(argv)
        if target is None:
            continue
        code, text = _help(target)
        assert code == 0, f"{command}: `{' '.join(target)} --help` exits {code}:\n{text[-2000:]}"
        unknown = sorted(options(argv) - options(text.split()))
        assert not unknown, f"{command}: `{' '.join(target)} --help` knows no {', '.join(unknown)}"


def _runnable(command: Shown) -> bool:
    argvs = simple_commands(command.text)
    return (
        command.page not in RUN_WHOLE
        and not command.synopsis
        and len(argvs) == 1
        and argvs[0][0] == "runai-uploader"
        and len(argvs[0]) > 1
        and argvs[0][1] in RUNNABLE
        and not has_placeholder(argvs[0])
    )


@pytest.mark.e2e
@pytest.mark.parametrize("command", [c for c in COMMANDS if _runnable(c)], ids=ids)
def test_the_read_only_commands_run_on_a_real_spool(command: Shown, tmp_path) -> None:
    spool, pod = tmp_path / "spool", "doc-pod"
    writer = SpoolWriter(str(spool / pod), pod)
    for step in range(5):
        writer.write_metric("loss", 1.0 / (step + 1))
    writer.write_parameter("optimizer", "adam")
    writer.close()
    shim = tmp_path / "bin" / "runai-uploader"  # the command the package installs, on this checkout
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uploader "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = job_env(
        podUUID=pod,
        reporterSpoolDir=str(spool),
        reporterGatewayURL="127.0.0.1:9",
        PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
        MPLBACKEND="Agg",
    )
    done = subprocess.run(
        ["bash", "-c", command.text], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}: exits {done.returncode}:\n{done.stdout[-1000:]}{done.stderr[-2000:]}"
    assert "doc-pod" in done.stdout or "loss" in done.stdout or list(tmp_path.glob("*.png")), (
        f"{command}: printed nothing of the spool and wrote no plot:\n{done.stdout[-1000:]}"
    )


def _problem(argv: list[str]) -> str | None:
    """What is wrong with one simple command's program or paths, statically; None where nothing is."""
    program = argv[0]
    if program in NOT_CHECKED or program in BUILTINS:
        return None
    missing = [word for word in argv[1:] if _missing_repo_path(word)]
    if missing:
        return f"no such file in the repository: {', '.join(missing)}"
    if _is_python(program):
        return _python_problem(argv)
    if os.path.basename(program) in ("pip", "pip3"):
        unknown = {extra for word in argv if word.startswith(".[") for extra in word[2:-1].split(",")} - extras()
        return f"setup.py defines no extra {', '.join(sorted(unknown))}" if unknown else None
    if program == "runai-uploader":
        return None  # its commands and options: test_every_program_answers_help_with_the_options_shown
    if program.startswith(MADE_BY_THE_READER):  # a venv's program: this test runs in such a venv
        name = os.path.basename(program)
        found = os.path.exists(os.path.join(os.path.dirname(sys.executable), name)) or shutil.which(name)
        return None if found else f"{name} is not installed beside {sys.executable}"
    if "/" in program:
        path = os.path.join(REPO, program)
        return None if os.access(path, os.X_OK) and os.path.isfile(path) else f"{program} is no executable script"
    if shutil.which(program):
        return None
    return f"{program} is not a repository script nor installed here; if it needs a server, add it to NOT_CHECKED"


def _missing_repo_path(word: str) -> bool:
    path = word.partition("=")[2] if word.startswith("--") else word
    if not path.startswith(REPO_DIRS) or has_placeholder([path]):
        return False
    if path.endswith(OUTPUTS):  # a file the command writes: its directory must exist
        return not os.path.isdir(os.path.join(REPO, os.path.dirname(path)))
    return not os.path.exists(os.path.join(REPO, path))


def _is_python(program: str) -> bool:
    return os.path.basename(program) in ("python", "python3")


def _python_problem(argv: list[str]) -> str | None:
    if "-m" in argv:
        module = argv[argv.index("-m") + 1]
        return None if importlib.util.find_spec(module) else f"no module {module}"
    if "-c" in argv:
        return None
    scripts = [word for word in argv[1:] if word.endswith(".py")]
    if not scripts:
        return "a python command with neither -m, -c nor a script"
    return None if os.path.isfile(os.path.join(REPO, scripts[0])) else f"no such script {scripts[0]}"


def _help_target(argv: list[str]) -> tuple[str, ...] | None:
    """The argv that answers --help for ARGV's program, where it is ours (or Python's)."""
    if argv[0] == "runai-uploader":
        sub = [word for word in argv[1:2] if not word.startswith("-")]
        return (sys.executable, "-m", "uploader", *sub)
    if not _is_python(argv[0]) or "-c" in argv:
        return None
    if "-m" in argv:
        return (sys.executable, "-m", argv[argv.index("-m") + 1])
    script = next(word for word in argv[1:] if word.endswith(".py"))
    return (sys.executable, os.path.join(REPO, script))


@functools.cache
def _help(target: tuple[str, ...]) -> tuple[int, str]:
    done = subprocess.run(
        [*target, "--help"], cwd=REPO, env=job_env(KERAS_BACKEND="torch"), capture_output=True, text=True, timeout=300
    )
    return done.returncode, done.stdout + done.stderr
