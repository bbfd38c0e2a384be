"""The training process starts its uploader: restarted when killed, backing off when it cannot start or crashes,
with a log it may not be able to open, on the argv it always had."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness import (
    Pushgateway,
    job_env,
    metric_name,
    uploader_pids,
    wait_for,
)
from runai.reporter import Reporter
from runai.reporter._launch import uploader_command
from runai.reporter.settings import load_settings
from tests._helpers import _finish_job, _warnings


@pytest.mark.e2e
def test_a_killed_uploader_is_replaced_while_the_job_reports(
    env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    """Issue 10, point 11: a dead uploader was replaced only by finish()."""
    reporter = Reporter()
    try:
        reporter.reportMetric("step", 0)
        wait_for(lambda: gateway.value(pod, metric_name("step")) == 0, 10, "the first push")
        (pid,) = uploader_pids(spool_dir)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: pid not in uploader_pids(spool_dir), 5, "the uploader to die")
        killed = time.monotonic()
        step = 0

        def report_and_check() -> bool:  # the job goes on reporting, a few times a second
            nonlocal step
            step += 1
            reporter.reportMetric("step", step)
            return (gateway.value(pod, metric_name("step")) or 0) > 0

        wait_for(report_and_check, 5, "a report made after the kill to reach the gateway")
        assert time.monotonic() - killed < 5
        assert [p for p in uploader_pids(spool_dir) if p != pid]
    finally:
        assert reporter.finish(timeout=20) is True
    assert gateway.value(pod, metric_name("step")) == step


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real interpreter with no packages at all: no prometheus_client, no watchdog."""
    venv = str(tmp_path_factory.mktemp("bare") / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = os.path.join(venv, "bin", "python")
    assert subprocess.run([python, "-c", "import prometheus_client"], capture_output=True).returncode != 0
    return python


STARTLESS_JOB = """
import logging, runai.reporter
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
reporter = runai.reporter.Reporter()
reporter.reportMetric("x", 1)
print(reporter.finish(timeout=8), flush=True)
"""


@pytest.mark.e2e
def test_an_uploader_that_cannot_start_says_why(
    env: dict[str, str], pod: str, spool_dir: str, bare_python: str
) -> None:
    """Issue 10, point 12: its error went to /dev/null, it was respawned every 0.5 s, and
    finish() said "the uploader keeps trying"."""
    proc = subprocess.Popen(
        [bare_python, "-c", STARTLESS_JOB],
        env=job_env(**env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    out, err = _finish_job(proc, 40, "finish(timeout=8) without an uploader")
    assert proc.returncode == 0, err
    assert out.strip() == "False"
    (warning,) = [w for w in _warnings(err) if "timed out" in w]
    assert "the uploader could not start" in warning
    assert "No module named 'prometheus_client'" in warning
    assert "keeps trying" not in warning
    with open(os.path.join(spool_dir, pod, "uploader.log")) as f:
        log = f.read()
    assert "ModuleNotFoundError: No module named 'prometheus_client'" in log
    starts = log.count("Traceback")
    # Backing off (1, 2, 4 s...) starts at most 5 in these 8 s; every 0.5 s would be 16.
    assert 2 <= starts <= 5, log


CRASHING_UPLOADER = """
import os, signal, sys
if "uploader" in sys.argv and "run" in sys.argv:  # only the uploader: a crashing C extension, or the OOM killer
    with open(os.environ["UPLOADER_STARTS"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    os.kill(os.getpid(), signal.SIGSEGV)
"""

REPORTING_JOB = """
import logging, time, runai.reporter
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
reporter = runai.reporter.Reporter()
end = time.monotonic() + 8
while time.monotonic() < end:  # a report every 10 ms: the report path probes the uploader once a second
    reporter.reportMetric("x", 1)
    time.sleep(0.01)
print(reporter.finish(timeout=1), flush=True)
"""


@pytest.mark.e2e
def test_an_uploader_killed_by_a_signal_at_start_is_restarted_with_backoff(env: dict[str, str], tmp_path) -> None:
    """An uploader that died by a signal was restarted about once a second for ever, and finish() said
    "the uploader keeps trying"."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASHING_UPLOADER)
    starts = tmp_path / "starts"
    job_environ = job_env(**env, UPLOADER_STARTS=str(starts))
    job_environ["PYTHONPATH"] = os.pathsep.join((str(site), job_environ["PYTHONPATH"]))
    proc = subprocess.Popen(
        [sys.executable, "-c", REPORTING_JOB],
        env=job_environ,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    out, err = _finish_job(proc, 40, "a job whose uploader always crashes")
    assert out.strip() == "False", err
    count = len(starts.read_text().split())
    # Backing off 1, 2, 4 s starts at most 5 in these 9 s; one a second would be 9 or more.
    assert 2 <= count <= 5, count
    (warning,) = [w for w in _warnings(err) if "timed out" in w]
    assert "killed by SIGSEGV" in warning and "keeps trying" not in warning, warning


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_a_bad_uploader_log_does_not_stop_a_reporters_delivery(
    gateway: Pushgateway, spool_dir: str, pod: str, kind: str
) -> None:
    """The Reporter starts the uploader with uploader.log as its stderr: a log it cannot open must cost only the
    log, not the start of the uploader."""
    from runai.reporter import Reporter

    pod_dir = os.path.join(spool_dir, pod)
    os.makedirs(pod_dir, mode=0o700)
    log = os.path.join(pod_dir, "uploader.log")
    if kind == "directory":
        os.mkdir(log)
    else:
        os.symlink(os.path.join(spool_dir, "elsewhere.log"), log)
    reporter = Reporter(pod_uuid=pod, gateway_url=gateway.address, spool_dir=spool_dir)
    reporter.reportMetric("x", 6.0)
    assert reporter.finish(timeout=20) is True
    assert gateway.value(pod, metric_name("x")) == 6.0
    assert not os.path.exists(os.path.join(spool_dir, "elsewhere.log"))


def test_the_uploaders_argv_keeps_its_order(tmp_path: object) -> None:
    # ps, /proc/PID/cmdline and scripts matching `uploader run --spool-dir=...` see the options in the order
    # they always had: the spool root first, then the pod, the gateway and the rest.
    settings = load_settings(
        pod_uuid="pod-1",
        gateway_url="127.0.0.1:9",
        spool_dir=str(tmp_path),
        push_interval=0.1,
        fsync="interval",
        fsync_interval=1e-05,
        history_bytes=5000,
        environ={},
    )
    argv = uploader_command(settings)
    assert argv[0] == sys.executable and argv[4:6] == ["uploader", "run"]
    assert argv[6:] == [
        f"--spool-dir={tmp_path}",
        "--pod-uuid=pod-1",
        "--gateway=http://127.0.0.1:9",
        "--push-interval=0.1",
        "--retry-timeout=600.0",
        "--push-timeout=10.0",
        "--fsync=interval",
        "--fsync-interval=1e-05",
        "--history-bytes=5000",
    ]
