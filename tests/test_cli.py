"""The command line as a whole: its help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness import job_env

pytestmark = pytest.mark.e2e


def test_help_lists_the_subcommands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "uploader", "--help"], env=job_env(), capture_output=True, text=True, check=True
    )
    assert "run" in done.stdout and "recover" in done.stdout
