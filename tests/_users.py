"""Other uids (``setpriv``) and clean virtual environments: for the tests of the local-file surface."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from runai.reporter.spool import encode_end, encode_header, encode_metric

VICTIM, ATTACKER = 54321, 54322  # uids with no account: setpriv needs none

SETPRIV = shutil.which("setpriv")

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="a second uid needs root and setpriv (util-linux)"
)


_NO_NETWORK = re.compile(
    r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
    r"ProxyError|ConnectTimeout|Could not fetch URL|No matching distribution found"
)


def _venv(path: str, base_python: str, *requirements: str) -> str:
    """A clean virtual environment at *path* holding *requirements*: its python (skips if pip has no network)."""
    subprocess.run([base_python, "-m", "venv", path], check=True, timeout=60)
    python = os.path.join(path, "bin", "python")
    pip = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        text=True,
        capture_output=True,
        timeout=120,
    )
    if pip.returncode != 0 and _NO_NETWORK.search(pip.stdout + pip.stderr):
        pytest.skip(
            f"pip cannot reach a package index to install {' '.join(requirements)}: "
            f"{(pip.stdout + pip.stderr).strip().splitlines()[-1]}"
        )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return python


def _forged_spool(pod: str, name: str, value: float) -> bytes:
    """A whole, valid spool file for *pod* holding one metric."""
    return encode_header("f" * 32, pod, 1) + encode_metric(1, 1, name, value) + encode_end(2, 2)


def _as_attacker(*argv: str) -> None:
    """Run the command *argv* as ATTACKER (gid ATTACKER too, no other groups)."""
    assert SETPRIV is not None
    subprocess.run(
        [SETPRIV, f"--reuid={ATTACKER}", f"--regid={ATTACKER}", "--clear-groups", *argv],
        check=True,
        timeout=30,
        capture_output=True,
    )


def _everything_under(path: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), path) for d, dirs, files in os.walk(path) for n in dirs + files)
