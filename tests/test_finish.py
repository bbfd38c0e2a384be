"""finish() and the job's exit: what is delivered, how long finish() waits, and what it says when it cannot."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

import runai.reporter
from harness import (
    Pushgateway,
    free_port,
    job_env,
    metric_name,
    parameter_name,
    wait_for,
)
from runai.reporter import Reporter
from tests._helpers import _finish_job, _warnings, spool_records, wait_for_give_up

pytestmark = pytest.mark.e2e


def test_in_process_scoped_use_is_delivered_on_exit(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    with Reporter() as reporter:
        for step in range(1000):
            reporter.reportMetric("step", step)
        reporter.reportParameter("optimizer", "adam")
    assert reporter.finish() is True
    assert gateway.value(pod, metric_name("step")) == 999
    assert gateway.series(pod)[parameter_name("optimizer")][0]["param_value"] == "adam"


def test_gateway_down_then_up(env: dict[str, str], own_gateway: Pushgateway, pod: str) -> None:
    with Reporter(gateway_url=own_gateway.address) as reporter:
        for i in range(100):
            reporter.reportMetric("loss", i)
        uploader_log = os.path.join(reporter.settings.pod_dir, "uploader.log")
        wait_for(
            lambda: os.path.exists(uploader_log) and "unreachable" in open(uploader_log).read(),
            10,
            "the uploader to meet the dead gateway",
        )
        own_gateway.start()
        assert reporter.finish(timeout=30) is True
    assert own_gateway.value(pod, metric_name("loss")) == 99


def test_finish_timeout_with_gateway_down(
    env: dict[str, str], own_gateway: Pushgateway, spool_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    reporter = Reporter(gateway_url=own_gateway.address, retry_timeout=2)
    for i in range(500):
        reporter.reportMetric("loss", i)
    started = time.monotonic()
    assert reporter.finish(timeout=3) is False
    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "500 of 500 reports not yet delivered" in warnings[0]
    assert f"runai-uploader recover --spool-dir={spool_dir}" in warnings[0]
    # The uploader gives up by itself (retry_timeout=2) and leaves the spool whole.
    wait_for_give_up(reporter.settings.pod_dir, spool_dir)
    with open(reporter._writer.path, "rb") as f:
        assert len(f.read().splitlines()) == 502  # header, 500 reports, end marker
    log = open(os.path.join(reporter.settings.pod_dir, "uploader.log")).read()
    assert "giving up" in log and "runai-uploader recover" in log


def test_non_scoped_report_after_finish_starts_a_new_reporter(
    env: dict[str, str], gateway: Pushgateway, pod: str
) -> None:
    runai.reporter.reportMetric("a", 1)
    first = runai.reporter._global
    assert runai.reporter.finish() is True
    assert runai.reporter.finish() is True  # nothing left: still True
    runai.reporter.reportMetric("a", 2)
    assert runai.reporter._global is not first
    assert runai.reporter.finish() is True
    assert gateway.value(pod, metric_name("a")) == 2


SIGTERM_JOB = """
import logging, os, signal, sys, time
import runai.reporter
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
scoped = sys.argv[1] == "reporter"
api = runai.reporter.Reporter() if scoped else runai.reporter

def on_sigterm(signum, frame):  # as a job under Kubernetes preemption would
    started = time.monotonic()
    ok = api.finish(timeout=2)
    os.write(1, f"handler {ok} {time.monotonic() - started:.2f}\\n".encode())
    os._exit(0)

signal.signal(signal.SIGTERM, on_sigterm)
api.reportMetric("x", 1)
api.finish(timeout=60)
os.write(1, b"the first finish() returned\\n")
"""


@pytest.mark.parametrize("api", ["reporter", "module"])
def test_finish_in_a_sigterm_handler_does_not_wait_for_the_running_one(
    env: dict[str, str], pod: str, spool_dir: str, api: str
) -> None:
    """Issue 10, point 2: the handler's finish() deadlocked on _finish_lock (Reporter), or
    answered True at once with nothing delivered (the module-level finish())."""
    down = f"127.0.0.1:{free_port()}"  # nothing listens: finish() keeps waiting
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_JOB, api],
        env=job_env(**{**env, "reporterGatewayURL": down, "reporterRetryTimeout": "1"}),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        pod_dir = os.path.join(spool_dir, pod)
        # The end record is written by the first finish(), which then waits for the uploader.
        wait_for(
            lambda: os.path.isdir(pod_dir) and any(r.kind == "end" for r in spool_records(pod_dir)),
            20,
            "the job's finish() to close its spool",
        )
        proc.send_signal(signal.SIGTERM)
        out, err = _finish_job(proc, 15, "finish(timeout=2) in a SIGTERM handler")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.startswith("handler "), (out, err)
    _, ok, seconds = out.split()
    assert ok == "False"  # nothing reached the gateway
    assert 1.9 <= float(seconds) < 3.5, f"the handler's finish(timeout=2) took {seconds} s"
    assert any("timed out" in w for w in _warnings(err)), err
