"""The job's directory and modules never reach the uploader: a stray uploader.py, modules shadowing its
dependencies, a working directory removed under the job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import (
    Pushgateway,
    job_env,
    metric_name,
)

pytestmark = pytest.mark.e2e


STRAY_UPLOADER = """
open(__file__ + ".ran", "w").close()
"""

SCRIPT_JOB = """
import runai.reporter
reporter = runai.reporter.Reporter()
reporter.reportMetric("x", 15)
print(reporter.finish(timeout=10), flush=True)
"""


def _job_reports_x(scripts: Path, workdir: Path, environ: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    """SCRIPT_JOB, run from *scripts* in the working directory *workdir*: its report reaches the gateway."""
    (scripts / "train.py").write_text(SCRIPT_JOB)
    done = subprocess.run(
        [sys.executable, str(scripts / "train.py")],
        cwd=str(workdir),
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", done.stderr
    assert gateway.value(pod, metric_name("x")) == 15


def test_a_stray_uploader_py_in_the_working_directory_does_not_run(
    env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path
) -> None:
    """Issue 10, point 15: `python -m uploader` ran the job directory's uploader.py instead."""
    workdir, scripts = tmp_path / "workdir", tmp_path / "scripts"
    workdir.mkdir()
    scripts.mkdir()
    (workdir / "uploader.py").write_text(STRAY_UPLOADER)
    _job_reports_x(scripts, workdir, job_env(**env), gateway, pod)
    assert not (workdir / "uploader.py.ran").exists()


def test_the_working_directory_cannot_shadow_the_uploaders_modules(
    env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path
) -> None:
    """An empty PYTHONPATH entry (a trailing ':') puts the working directory on sys.path as an absolute path:
    a stray module there (here one named like a dependency of the uploader) must not run in the uploader."""
    workdir, scripts = tmp_path / "workdir", tmp_path / "scripts"
    workdir.mkdir()
    scripts.mkdir()
    for module in ("uploader.py", "prometheus_client.py", "watchdog.py"):
        (workdir / module).write_text(STRAY_UPLOADER)
    job_environ = job_env(**env)
    job_environ["PYTHONPATH"] += os.pathsep  # "REPO:" as sloppy job scripts write it
    _job_reports_x(scripts, workdir, job_environ, gateway, pod)
    assert not list(workdir.glob("*.ran")), "a stray module ran in the uploader"


TRAIN = """
import sys
import runai.reporter
assert "uploader" not in sys.modules, sys.modules["uploader"]
reporter = runai.reporter.Reporter()
reporter.reportMetric("with_stray_module", 5.0)
print("REPORTED", reporter.settings.pod_dir, flush=True)
print("FINISHED", reporter.finish(timeout=3), flush=True)
"""


def test_a_stray_uploader_py_next_to_the_script_does_not_break_import(tmp_path, env: dict[str, str], pod: str) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "uploader.py").write_text("STRAY = True  # the user's own module, nothing to do with runai\n")
    (job_dir / "train.py").write_text(TRAIN)
    # Run as a user runs a script: its directory first on sys.path; runai found through PYTHONPATH.
    done = subprocess.run(
        [sys.executable, "train.py"], cwd=job_dir, env=job_env(), text=True, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "REPORTED" in done.stdout
    from runai.reporter.spool import decode, spool_file_names

    pod_dir = os.path.join(env["reporterSpoolDir"], pod)
    (name,) = spool_file_names(pod_dir)
    with open(os.path.join(pod_dir, name), "rb") as f:
        values = [r.value for r in map(decode, f.read().splitlines()) if r.name == "with_stray_module"]
    assert values == [5.0]


REMOVED_CWD_JOB = """
import os, sys, tempfile
gone = tempfile.mkdtemp()
os.chdir(gone)
os.rmdir(gone)  # a launcher's scratch directory, cleaned up under the job
import runai.reporter
reporter = runai.reporter.Reporter()
reporter.reportMetric("x", 7)
print(reporter.finish(timeout=20), flush=True)
"""


def test_a_job_whose_working_directory_was_removed_still_delivers(
    gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    env = job_env(podUUID=pod, reporterGatewayURL=gateway.address, reporterSpoolDir=spool_dir)
    done = subprocess.run(
        [sys.executable, "-c", REMOVED_CWD_JOB],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stdout + done.stderr
    assert gateway.value(pod, metric_name("x")) == 7
