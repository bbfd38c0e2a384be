"""End to end against a real Pushgateway: the 0.4.1 wire format, a job that exits or is killed, a dead pod recovered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from harness import Pushgateway, job_env, metric_name, parameter_name, uploader_pids, wait_for
from runai.reporter import Reporter
from tests._helpers import recover, start_job

pytestmark = pytest.mark.e2e


SEED_SCOPED = """
import runai.reporter

with runai.reporter.Reporter() as reporter:
    reporter.reportMetric('batch_size', 100)
    reporter.reportParameter('loss_method', 'categorical_crossentropy')
"""

SEED_NON_SCOPED = """
import runai.reporter

runai.reporter.reportMetric('batch_size', 100)
runai.reporter.reportParameter('loss_method', 'categorical_crossentropy')
runai.reporter.finish()
"""


def run_job(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=job_env(**env),
        text=True,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_seed_values(gateway: Pushgateway, pod: str) -> None:
    series = gateway.series(pod)
    labels, value = series[metric_name("batch_size")]
    assert value == 100
    assert labels == {
        "job": "reporter_pod_info",
        "podUUID": pod,
        "instance": "",
        "metric_name": "batch_size",
        "push_gateway_type": "metric",
    }
    labels, value = series[parameter_name("loss_method")]
    assert value == 1
    assert labels == {
        "job": "reporter_pod_info",
        "podUUID": pod,
        "instance": "",
        "param_name": "loss_method",
        "param_value": "categorical_crossentropy",
        "push_gateway_type": "parameter",
    }


def test_help_and_type_are_those_of_041(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("typed", 1)
        reporter.reportParameter("typed_param", "x")
    (group,) = [g for g in gateway.groups() if g["labels"].get("podUUID") == pod]
    for name in (metric_name("typed"), parameter_name("typed_param")):
        assert group[name]["type"] == "GAUGE"
        assert group[name].get("help", "") == ""  # 0.4.1 pushed documentation=""


@pytest.mark.parametrize("code", [SEED_SCOPED, SEED_NON_SCOPED], ids=["scoped", "non-scoped"])
def test_seed_examples_deliver_in_the_041_wire_format(
    env: dict[str, str], gateway: Pushgateway, pod: str, code: str
) -> None:
    done = run_job(code, env)
    assert done.returncode == 0, done.stderr
    # No surprise output: the start line only, one (the non-scoped API makes one Reporter), as issue 21 asks.
    assert done.stdout == "" and done.stderr == (
        f"runai.reporter: pod {pod}, spool {env['reporterSpoolDir']}/{pod}: "
        f"reporting to the gateway http://{gateway.address} "
        "(reporterQuiet=1 hides this)\n"
    )
    assert_seed_values(gateway, pod)  # already there when the job returned


def test_exit_without_finish_still_delivers(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    done = run_job(
        """
        import runai.reporter
        for i in range(5000):
            runai.reporter.reportMetric('loss', i / 10)
        runai.reporter.reportParameter('note', 'no finish() call')
    """,
        env,
    )
    assert done.returncode == 0, done.stderr
    assert gateway.value(pod, metric_name("loss")) == 499.9
    assert gateway.series(pod)[parameter_name("note")][0]["param_value"] == "no finish() call"


def test_sigkill_mid_stream_uploader_delivers_last_value(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    job = start_job(
        """
import signal, runai.reporter
for i in range(20000):
    runai.reporter.reportMetric('step', i)
print('reported', flush=True)
signal.pause()
""",
        job_env(**env),
    )
    try:
        assert job.stdout is not None
        assert job.stdout.readline().strip() == "reported"
        job.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        job.wait(10)
        wait_for(lambda: gateway.value(pod, metric_name("step")) == 19999, 10, "the last value on the gateway")
        assert time.monotonic() - killed_at < 10
    finally:
        job.kill()
        job.communicate()


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --pid needs root")
def test_pod_death_with_gateway_down_then_recover(
    env: dict[str, str], own_gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    env = {**env, "reporterGatewayURL": own_gateway.address}  # not started: the gateway is down
    code = """
import signal, runai.reporter
for i in range(3000):
    runai.reporter.reportMetric('loss', i)
    runai.reporter.reportMetric('accuracy', i / 3000)
runai.reporter.reportParameter('optimizer', 'sgd')
runai.reporter.reportParameter('optimizer', 'adam')
print('reported', flush=True)
signal.pause()
"""
    # A container dying: every process of its pid namespace, uploader included, is killed.
    job = start_job(code, job_env(**env), wrapper=("unshare", "--pid", "--fork", "--kill-child", "--mount-proc"))
    try:
        assert job.stdout is not None
        assert job.stdout.readline().strip() == "reported"
        wait_for(lambda: uploader_pids(spool_dir), 10, "the uploader to start inside the pod")
        job.send_signal(signal.SIGKILL)
        job.wait(10)
        wait_for(lambda: not uploader_pids(spool_dir), 10, "the whole pod to die")
    finally:
        job.kill()
        job.communicate()

    own_gateway.start()
    first = recover(env)
    assert first.returncode == 0, first.stderr
    assert "delivered 6002 reports" in first.stdout
    series = own_gateway.series(pod)
    assert series[metric_name("loss")][1] == 2999
    assert series[metric_name("accuracy")][1] == pytest.approx(2999 / 3000)
    assert series[parameter_name("optimizer")][0]["param_value"] == "adam"

    own_gateway.delete_group(pod)
    second = recover(env)
    assert second.returncode == 0, second.stderr
    assert "nothing to send" in second.stdout
    assert own_gateway.series(pod) == {}  # it sent nothing


def test_job_output_is_not_held_by_the_uploader(env: dict[str, str], own_gateway: Pushgateway, spool_dir: str) -> None:
    # The gateway is down, so the uploader outlives the job; a caller capturing
    # the job's output must still see EOF when the job exits.
    started = time.monotonic()
    done = run_job(
        """
        import runai.reporter
        runai.reporter.reportMetric('a', 1)
        print('finished', runai.reporter.finish(timeout=0.5))
    """,
        {**env, "reporterGatewayURL": own_gateway.address, "reporterRetryTimeout": "1"},
        timeout=20,
    )
    assert time.monotonic() - started < 15
    assert done.stdout == "finished False\n"
    assert uploader_pids(spool_dir) or True  # it may or may not have given up yet; the fixture waits for it


def test_parameter_values_round_trip_exactly(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    tricky = 'quote " backslash \\ newline \n tab \t unicode ✓ 日本 emoji 🚀 end'
    with Reporter() as reporter:
        reporter.reportParameter("tricky", tricky)
    assert gateway.series(pod)[parameter_name("tricky")][0]["param_value"] == tricky
