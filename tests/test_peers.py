"""benchmarks/peers.py end to end with a tiny N, when the peers (W&B, MLflow) are installed; skipped otherwise.

The peers live in a venv of their own (benchmarks/requirements-peers.txt): $RUNAI_PEERS_PYTHON, or a
.venv-peers beside the venv running the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from harness import REPO

pytestmark = pytest.mark.e2e

N = 40


def peers_python() -> str:
    beside = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(sys.executable))), ".venv-peers", "bin", "python"
    )
    for candidate in (os.environ.get("RUNAI_PEERS_PYTHON"), beside, sys.executable):
        if (
            candidate
            and os.path.exists(candidate)
            and subprocess.run([candidate, "-c", "import wandb, mlflow"], capture_output=True, timeout=120).returncode
            == 0
        ):
            return candidate
    pytest.skip("wandb and mlflow are not installed (benchmarks/requirements-peers.txt)")


def _peers(python: str, n: int, figures: Any, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """benchmarks/peers.py, one run of *n* reports with *python*, its figures in the JSON file *figures*."""
    argv = [sys.executable, os.path.join(REPO, "benchmarks", "peers.py"), "--python", python, "-n", str(n)]
    return subprocess.run(
        [*argv, "--runs", "1", "--json", str(figures)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=cwd,
    )


def test_peers_prints_the_table_with_each_logger_measured(tmp_path) -> None:
    python = peers_python()
    figures = tmp_path / "peers.json"
    out = _peers(python, N, figures).stdout
    results = json.loads(figures.read_text())["results"]
    assert set(results) == {"os.write", "runai", "wandb", "mlflow", "mlflow-async"}
    for name, result in results.items():
        assert not result.get("missing"), name
        assert result["us"] > 0 and result["flush_s"] >= 0, (name, result)
        assert len(result["kept"]) == 1 and 0 <= result["kept"][0] <= N, (name, result)
    # Measured, and what the design promises: on disk when the call returns, through a SIGKILL.
    assert results["runai"]["kept"] == [N]
    assert results["os.write"]["kept"] == [N]
    assert results["mlflow"]["kept"] == [N]  # the synchronous file store appends each value before returning
    assert "| this reporter, reportMetric |" in out
    assert f"of {N:,} reports after SIGKILL" in out


def test_a_missing_interpreter_is_refused_naming_the_fix(tmp_path) -> None:
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "peers.py"), "--python", "no-such-venv/bin/python"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode != 0
    assert str(tmp_path / "no-such-venv" / "bin" / "python") in out.stderr
    assert "benchmarks/requirements-peers.txt" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.e2e
def test_a_relative_python_is_found_from_the_callers_directory(tmp_path) -> None:
    # The documented `benchmarks/peers.py --python .venv-peers/bin/python`: each child runs in a directory of
    # its own, where the relative path would not be found.
    venv_parent = os.path.dirname(os.path.dirname(os.path.dirname(sys.executable)))
    relative = os.path.relpath(sys.executable, venv_parent)
    figures = tmp_path / "peers.json"
    _peers(relative, 5, figures, cwd=venv_parent)
    results = json.loads(figures.read_text())["results"]
    assert results["os.write"]["kept"] == [5]
    assert results["runai"]["kept"] == [5]
