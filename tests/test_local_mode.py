"""The first hour (issue 21): local mode, the start line, early warning of failed delivery, the receivers a
spool header records, and ConfigError's public name. Against real parts: jobs in fresh interpreters, the real
uploader, a real Pushgateway (behind the fault proxy where it must fail)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from harness import FaultProxy, Pushgateway, free_port, job_env, metric_name, parameter_name, wait_for
from runai.reporter import Reporter
from runai.reporter.spool import LOG_NAME, SpoolWriter, receiver_kinds
from tests._helpers import closed_spool, spool_records, uploader_cli

_RECEIVER_VARIABLES = ("podUUID", "reporterGatewayURL", "reporterRemoteWriteURL", "reporterQuiet")
_RUN_ID = re.compile(r"local-\d{8}T\d{6}Z-[0-9a-f]{8}\Z")


def _local_env(spool_dir: str, **extra: str) -> dict[str, str]:
    """A job's environment with no receiver and no pod: local mode."""
    env = job_env(reporterSpoolDir=spool_dir, **extra)
    for name in _RECEIVER_VARIABLES:
        if name not in extra:
            env.pop(name, None)
    return env


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, text=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL
    )


_LOCAL_JOB = r"""
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
import runai.reporter
runai.reporter.reportMetric("loss", 0.5)  # the non-scoped API's reporter
runai.reporter.reportParameter("optimizer", "adam")
reporter = runai.reporter.Reporter()
for i in range(100):
    reporter.reportMetric("loss", 1.0 / (i + 1))
for finish in (reporter.finish, runai.reporter.finish):
    started = time.monotonic()
    print("FINISHED", finish(), time.monotonic() - started)
print("UPLOADER IMPORTED", "uploader" in sys.modules)
"""


@pytest.mark.e2e
def test_local_mode_keeps_everything_in_the_spool_and_recover_delivers_it_later(
    spool_dir: str, gateway: Pushgateway, tmp_path: Any
) -> None:
    job = _run(_LOCAL_JOB, _local_env(spool_dir))
    assert job.returncode == 0, job.stderr
    # One pod for the whole process: the non-scoped API and the Reporter share its run id.
    (pod,) = os.listdir(spool_dir)
    assert _RUN_ID.match(pod), pod
    pod_dir = os.path.join(spool_dir, pod)
    # finish() answers True at once, for each reporter, and says once each where the reports are.
    finished = [line.split() for line in job.stdout.splitlines() if line.startswith("FINISHED")]
    assert [(ok, float(took) < 1.0) for _, ok, took in finished] == [("True", True)] * 2, job.stdout
    kept = [line for line in job.stdout.splitlines() if "not delivered" in line]
    assert len(kept) == 2 and all(line.startswith("INFO runai.reporter") for line in kept), job.stdout
    assert "runai-uploader recover" in kept[0] and f"--pod-uuid={pod}" in kept[0]
    assert "WARNING" not in job.stdout and "UPLOADER IMPORTED False" in job.stdout
    # One start line per Reporter created (the non-scoped API made one), each saying "kept locally".
    starts = job.stderr.splitlines()
    assert len(starts) == 2 and all(f"pod {pod}, spool {pod_dir}: kept locally" in line for line in starts), starts
    # No uploader was started: the launcher opens uploader.log for every uploader's stderr.
    assert not os.path.exists(os.path.join(pod_dir, LOG_NAME))
    records = spool_records(pod_dir)
    assert sum(1 for r in records if r.name == "loss") == 101
    assert receiver_kinds(pod_dir) == frozenset()  # the headers say: no receiver

    # Later, as `wandb sync` does: recover sends it all to a real gateway, and history reads it.
    done = uploader_cli({}, "recover", f"--spool-dir={spool_dir}", f"--pod-uuid={pod}", f"--gateway={gateway.address}")
    assert done.returncode == 0, done.stderr
    assert gateway.value(pod, metric_name("loss")) == pytest.approx(0.01)
    labels, _ = gateway.series(pod)[parameter_name("optimizer")]
    assert labels["param_value"] == "adam"
    table = uploader_cli({}, "history", f"--spool-dir={spool_dir}", f"--pod-uuid={pod}")
    assert table.returncode == 0, table.stderr
    assert len([line for line in table.stdout.splitlines() if " loss " in line]) == 101
    plot = str(tmp_path / "loss.png")
    drawn = uploader_cli({}, "history", f"--spool-dir={spool_dir}", f"--pod-uuid={pod}", f"--plot={plot}")
    assert drawn.returncode == 0, drawn.stderr
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_each_process_gets_its_own_run_id(spool_dir: str) -> None:
    code = "import runai.reporter as r; r.reportMetric('a', 1); print(r.finish())"
    for _ in range(2):
        assert _run(code, _local_env(spool_dir, reporterQuiet="1")).stdout.strip() == "True"
    pods = os.listdir(spool_dir)
    assert len(pods) == 2 and all(_RUN_ID.match(pod) for pod in pods), pods


@pytest.mark.e2e
def test_a_pod_uuid_set_in_local_mode_is_used(spool_dir: str, pod: str) -> None:
    job = _run(
        "import runai.reporter as r; r.reportMetric('a', 1); print(r.finish())", _local_env(spool_dir, podUUID=pod)
    )
    assert job.stdout.strip() == "True", job.stderr
    assert os.listdir(spool_dir) == [pod]


# -- the start line ----------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_the_start_line_names_the_receivers_without_credentials(spool_dir: str, gateway: Pushgateway, pod: str) -> None:
    dead = free_port()
    remote_write = f"http://127.0.0.1:{dead}/api/v1/write?token=sekrit"
    env = _local_env(
        spool_dir,
        podUUID=pod,
        reporterGatewayURL=gateway.address,
        reporterRemoteWriteURL=remote_write,
        reporterRetryTimeout="1",
    )
    job = _run("import runai.reporter as r; r.Reporter().finish(timeout=0)", env)
    assert job.returncode == 0, job.stderr
    # (finish()'s timeout warning follows, through logging's last-resort handler: nothing configured logging)
    (line,) = [line for line in job.stderr.splitlines() if line.startswith("runai.reporter: ")]
    assert line == (
        f"runai.reporter: pod {pod}, spool {os.path.join(spool_dir, pod)}: reporting to the gateway "
        f"http://{gateway.address} and the remote-write receiver http://127.0.0.1:{dead}/api/v1/write "
        "(reporterQuiet=1 hides this)"
    )
    assert "sekrit" not in line


@pytest.mark.e2e
def test_a_token_in_the_remote_write_url_is_never_printed_nor_logged(spool_dir: str, pod: str) -> None:
    # finish()'s timeout warning, the command it suggests, and the uploader's log name the receiver: never its query.
    remote_write = f"http://127.0.0.1:{free_port()}/api/v1/write?api_key=SUPERSECRET"
    env = _local_env(spool_dir, podUUID=pod, reporterRemoteWriteURL=remote_write, reporterRetryTimeout="3")
    job = _run(
        "import logging, runai.reporter as r\nlogging.basicConfig()\nrep = r.Reporter()\n"
        "rep.reportMetric('loss', 1.0)\nimport time; time.sleep(1.5)\nrep.finish(timeout=1)",
        env,
    )
    assert job.returncode == 0, job.stderr
    assert "finish() timed out" in job.stderr and "127.0.0.1" in job.stderr
    with open(os.path.join(spool_dir, pod, LOG_NAME), encoding="utf-8") as f:
        log = f.read()
    assert "pushing to http://127.0.0.1" in log
    assert "SUPERSECRET" not in job.stderr + job.stdout + log


@pytest.mark.e2e
def test_the_start_line_is_silenced_by_reporter_quiet(
    spool_dir: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for value in ("1", "true", "YES"):
        job = _run(
            "import runai.reporter as r; r.reportMetric('a', 1); r.finish()", _local_env(spool_dir, reporterQuiet=value)
        )
        assert (job.returncode, job.stderr) == (0, "")
    job = _run("import runai.reporter as r; r.Reporter()", _local_env(spool_dir, reporterQuiet="maybe"))
    assert "runai.reporter.ConfigError: reporterQuiet='maybe' is not a yes/no value" in job.stderr
    monkeypatch.setenv("reporterSpoolDir", spool_dir)
    for name in _RECEIVER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    Reporter(quiet=True).finish()
    Reporter(quiet=False).finish()
    err = capfd.readouterr().err
    assert err.count("runai.reporter: pod local-") == 1, err


@pytest.mark.e2e
def test_a_config_error_traceback_names_the_public_class(spool_dir: str) -> None:
    job = _run("import runai.reporter; runai.reporter.Reporter(pod_uuid='a/b')", _local_env(spool_dir))
    assert job.returncode == 1
    last = job.stderr.strip().splitlines()[-1]
    assert last.startswith("runai.reporter.ConfigError: pod_uuid=") and "cannot be used" in last, job.stderr
    assert "_validate" not in last


# -- early warning: the uploader's failures in the job's own log ----------------------------------------------


@pytest.fixture
def relayed(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="runai.reporter"):
        yield caplog


def _told(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("runai.reporter") and r.levelno == level and text in r.getMessage()
    ]


def _report_until(reporter: Reporter, condition: Any, timeout: float, what: str) -> Any:
    """Report as a training loop does (every few ms to 0.1 s) until *condition* holds: the tick runs on reports."""

    def reported() -> Any:
        reporter.reportMetric("loss", 1.0)
        return condition()

    return wait_for(reported, timeout, what)


@pytest.mark.e2e
def test_a_refused_connection_is_one_warning_within_10_s_and_finish_names_the_cause(
    spool_dir: str, pod: str, relayed: pytest.LogCaptureFixture
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    reporter = Reporter(pod_uuid=pod, gateway_url=dead, spool_dir=spool_dir, retry_timeout=1, quiet=True)
    (warning,) = _report_until(
        reporter, lambda: _told(relayed, logging.WARNING, "delivery is failing"), 10, "the warning of a failed push"
    )
    assert time.monotonic() - started < 10
    assert f"the gateway http://{dead} is unreachable (connection refused)" in warning, warning
    assert reporter.finish(timeout=1) is False
    (timeout,) = _told(relayed, logging.WARNING, "finish() timed out")
    assert f"(the last failure: the gateway http://{dead} is unreachable (connection refused))" in timeout, timeout
    assert len(_told(relayed, logging.WARNING, "delivery is failing")) == 1  # one, however many pushes failed


@pytest.mark.e2e
def test_an_http_401_is_told_and_so_is_the_recovery(
    spool_dir: str, pod: str, gateway: Pushgateway, relayed: pytest.LogCaptureFixture
) -> None:
    proxy = FaultProxy(gateway.address).start()
    try:
        proxy.fault = "401"
        reporter = Reporter(pod_uuid=pod, gateway_url=proxy.address, spool_dir=spool_dir, quiet=True)
        (warning,) = _report_until(
            reporter,
            lambda: _told(relayed, logging.WARNING, "delivery is failing"),
            10,
            "the warning of a refused push",
        )
        assert f"the gateway http://{proxy.address} answered with an error (HTTP 401)" in warning, warning
        proxy.fault = None
        (info,) = _report_until(
            reporter, lambda: _told(relayed, logging.INFO, "delivery resumed"), 20, "the info line of delivery resumed"
        )
        assert info.startswith("delivery resumed: the gateway is reachable again after"), info
        assert reporter.finish(timeout=30) is True
        assert gateway.value(pod, metric_name("loss")) == 1.0
        assert len(_told(relayed, logging.WARNING, "delivery is failing")) == 1
    finally:
        proxy.stop()


# -- the receivers a spool header records (point 5, the spool part) ------------------------------------------


@pytest.mark.e2e
def test_headers_record_the_kinds_of_receiver_never_their_urls(env: dict[str, str], spool_dir: str, pod: str) -> None:
    with Reporter(quiet=True) as reporter:
        reporter.reportMetric("a", 1)
    assert receiver_kinds(reporter.settings.pod_dir) == frozenset({"gateway"})
    with open(reporter._writer.path, "rb") as f:
        header = f.readline()
    assert b'"receivers":["gateway"]' in header and env["reporterGatewayURL"].encode() not in header
    both = os.path.join(spool_dir, "both")
    writer = SpoolWriter(both, "both", receivers=("gateway", "remote_write"))
    writer.close()
    assert receiver_kinds(both) == frozenset({"gateway", "remote_write"})


def test_a_spool_written_before_headers_said_reads_as_unknown(spool_dir: str) -> None:
    old = os.path.join(spool_dir, "old")
    closed_spool(old, "old")  # a writer that says nothing of receivers, as every writer before this change
    assert receiver_kinds(old) is None
    SpoolWriter(old, "old", receivers=("gateway",)).close()
    assert receiver_kinds(old) is None  # one file unknown: the pod's kinds are unknown
    assert receiver_kinds(os.path.join(spool_dir, "missing")) is None
