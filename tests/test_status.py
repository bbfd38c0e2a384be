"""`runai-uploader status`: what the local spool says about each pod."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import Pushgateway, job_env, metric_name
from tests._helpers import uploader_cli, wait_for_give_up

CRASH = """
import os, signal, runai.reporter
for i in range(300):
    runai.reporter.reportMetric('loss', i)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.e2e
def test_status_shows_a_crashed_pod_until_it_is_recovered(
    env: dict[str, str], own_gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    env = {**env, "reporterGatewayURL": own_gateway.address, "reporterRetryTimeout": "0.5"}
    crash = subprocess.run([sys.executable, "-c", CRASH], env=job_env(**env), capture_output=True, timeout=60)
    assert crash.returncode == -9
    wait_for_give_up(f"{spool_dir}/{pod}", spool_dir)

    before = json.loads(uploader_cli(env, "status", "--json").stdout)
    assert before["spool_dir"] == spool_dir
    (status,) = before["pods"]
    assert status["pod_uuid"] == pod
    assert status["reports_pending"] == 300 and status["reports_delivered"] == 0
    assert status["writers_alive"] == 0 and status["uploader_pid"] is None
    assert status["last_delivered"] is None and "without reaching the gateway" in status["last_error"]
    assert f"--pod-uuid={pod}" in status["recover_command"]
    (spool,) = status["spool_files"]
    assert spool["reports_pending"] == 300 and not spool["finished"] and not spool["writer_alive"]

    table = uploader_cli(env, "status").stdout
    assert f"pod {pod}: 0 reports delivered, 300 pending" in table and "runai-uploader recover" in table
    assert "    last error: " in table and "without reaching the gateway" in table

    own_gateway.start()
    assert uploader_cli(env, "recover").returncode == 0
    assert own_gateway.value(pod, metric_name("loss")) == 299
    (after,) = json.loads(uploader_cli(env, "status", "--json").stdout)["pods"]
    assert after["reports_pending"] == 0 and after["reports_delivered"] == 300
    assert after["last_delivered"] is not None and after["recover_command"] is None
    # The error is still the pod's last (its log keeps it), but the table says it is of the past.
    assert "    last error (nothing is pending now): " in uploader_cli(env, "status").stdout


@pytest.mark.e2e
def test_status_of_an_empty_spool(env: dict[str, str]) -> None:
    done = uploader_cli(env, "status")
    assert done.returncode == 0 and "no pods with spool files" in done.stdout
    assert json.loads(uploader_cli(env, "status", "--json").stdout)["pods"] == []


def test_pod_status_is_typed_and_its_json_keeps_the_documented_keys(spool_dir: str, pod: str) -> None:
    from runai.reporter.spool import SpoolWriter
    from uploader.views.status import FileStatus, PodStatus, pod_status

    writer = SpoolWriter(f"{spool_dir}/{pod}", pod)
    writer.write_metric("loss", 1.0)
    writer.close()
    status = pod_status(spool_dir, pod)
    assert isinstance(status, PodStatus) and all(isinstance(f, FileStatus) for f in status.spool_files)
    assert (status.reports_pending, status.reports_delivered, status.spool_files[0].finished) == (1, 0, True)
    as_json = status.to_json()
    assert list(as_json) == [
        "pod_uuid",
        "pod_dir",
        "refused",
        "uploader_pid",
        "writers_alive",
        "reports_delivered",
        "reports_pending",
        "bytes_delivered",
        "bytes_pending",
        "last_delivered",
        "last_error",
        "recover_command",
        "spool_files",
        "clock_skew",
        "receivers",
        "same_ms",
    ]
    assert list(as_json["spool_files"][0]) == [
        "path",
        "writer_pid",
        "writer_alive",
        "finished",
        "size",
        "reports_delivered",
        "reports_pending",
        "bytes_delivered",
        "bytes_pending",
        "last_delivered",
        "error",
        "same_ms",
    ]
    assert json.loads(json.dumps(as_json)) == as_json
