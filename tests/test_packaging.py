"""Acceptance 1: `pip install .` into a fresh venv gives runai, uploader and runai-uploader."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness import REPO

pytestmark = pytest.mark.e2e


def test_pip_install_into_a_fresh_venv(tmp_path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    # Install from a copy of the tracked and new files, so the build leaves
    # nothing behind in the checkout and sees no local build debris.
    src = tmp_path / "src"
    src.mkdir()
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout
    subprocess.run(["xargs", "-0", "cp", "--parents", "-t", str(src)], input=files, cwd=REPO, check=True)
    done = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = subprocess.run(
        [
            python,
            "-c",
            "import runai.reporter, uploader.cli, prometheus_client, watchdog; "
            "import importlib.resources as r; "
            "print(runai.reporter.__version__, r.files('runai.reporter').joinpath('py.typed').is_file())",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(tmp_path),
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["1.0.0", "True"]
    script = subprocess.run(
        [str(venv / "bin" / "runai-uploader"), "--help"], capture_output=True, text=True, env=env, cwd=str(tmp_path)
    )
    assert script.returncode == 0 and "recover" in script.stdout
