"""Real jobs to a real VictoriaMetrics single node (Debian's ``victoria-metrics``), and ``runai-uploader status``'s
clock-skew warning against a real Prometheus receiver made to refuse present-day samples as too old.

Real jobs (subprocesses with a Reporter) and the real uploader, as in tests/test_remote_write_jobs.py."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from harness import Prometheus, VictoriaMetrics, wait_for
from runai.reporter.spool import METRIC, REMOTE_WRITE, Metric
from tests._helpers import uploader_cli
from tests._remote_write_jobs import covered, expected, job_settings, run_job
from uploader.sinks.remote_write import RemoteWriter
from uploader.views.status import clock_skew
from uploader.views.status import pod_status as pod_status_of

AHEAD_S = 3 * 3600  # a clock this far ahead moves the receiver's head past every present-day sample


def exported(vm: VictoriaMetrics, pod: str) -> list[tuple[int, float]]:
    vm.force_flush()  # else a new series shows in /api/v1/export about 10 s after the write
    found = vm.export(f'reporter_push_gateway_metric_loss{{podUUID="{pod}"}}')
    return found[0][1] if found else []


def status_json(env: dict[str, str]) -> dict[str, Any]:
    done = uploader_cli(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    [pod_status] = json.loads(done.stdout)["pods"]
    return pod_status  # type: ignore[no-any-return]


@pytest.mark.e2e
def test_a_job_s_1000_reports_reach_victoria_metrics_each_at_its_own_time(
    tmp_path: Any, spool_dir: str, pod: str
) -> None:
    with VictoriaMetrics(str(tmp_path)) as vm:
        env = job_settings(spool_dir, pod, reporterRemoteWriteURL=vm.write_url)
        done = run_job(env, 1000, "finish")
        assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
        pod_dir = os.path.join(spool_dir, pod)
        want = expected(pod_dir)
        assert len(want) == 1000 and len({ms for ms, _ in want}) == 1000
        assert [v for _, v in want] == [float(i) for i in range(1000)]
        # finish() said True: everything is in; wait only for it to be searchable.
        wait_for(lambda: len(exported(vm, pod)) >= 1000, 30, "VictoriaMetrics to show the 1,000 samples")
        assert exported(vm, pod) == want  # the same values at the same milliseconds, nothing more
        assert covered(pod_dir, REMOTE_WRITE)
        pod_status = status_json(env)
        assert (pod_status["reports_delivered"], pod_status["reports_pending"]) == (1000, 0)
        assert pod_status["clock_skew"] is None  # nothing was refused


@pytest.mark.e2e
def test_status_warns_of_clock_skew_when_recent_samples_are_refused_as_too_old(
    tmp_path: Any, spool_dir: str, pod: str
) -> None:
    with Prometheus(str(tmp_path), remote_write=True, out_of_order_window="30m") as receiver:
        # Another pod, its clock hours ahead, writes one sample through the sink: the receiver takes it.
        skewed = RemoteWriter(receiver.write_url, "pod-with-a-fast-clock")
        try:
            assert skewed.push([Metric(1, time.time() + AHEAD_S, METRIC, "loss", 1.0)]) == []
        finally:
            skewed.close()
        env = job_settings(spool_dir, pod, reporterRemoteWriteURL=receiver.write_url)
        done = run_job(env, 20, "finish", finish_timeout=30)
        assert done.returncode == 0, done.stderr
        # Every present-day sample was refused as too old (and counted, so the job is not stalled by it).
        assert receiver.samples(f'reporter_push_gateway_metric_loss{{podUUID="{pod}"}}[1h]', at=time.time() + 1) == []
        with open(os.path.join(spool_dir, pod, "uploader.log")) as f:
            assert "too old" in f.read()

        pod_status = status_json(env)
        warning = pod_status["clock_skew"]
        assert warning is not None and "synchronise the pods' clocks" in warning and "too old" in warning
        table = uploader_cli(env, "status")
        assert table.returncode == 0, table.stderr
        [line] = [line for line in table.stdout.splitlines() if line.startswith("    clock skew: ")]
        # The same warning, but for the report's age, which may have grown by a second between the two calls.
        assert line.split(" s old")[1] == warning.split(" s old")[1]
    # The same refusals for a spool whose newest report is hours old are the receiver's window, not a clock.
    pod_dir = os.path.join(spool_dir, pod)
    files = pod_status_of(spool_dir, pod).spool_files
    assert clock_skew(pod_dir, files) is not None
    assert clock_skew(pod_dir, files, now=time.time() + 2 * 3600) is None


def test_a_gateway_s_refusals_never_make_a_clock_skew_warning(spool_dir: str, pod: str) -> None:
    """Gateway-only output stays as it was: only the remote-write receiver's "too old" refusals count."""
    from runai.reporter.spool import LOG_FORMAT, SpoolWriter
    from uploader.views.status import pod_status

    writer = SpoolWriter(f"{spool_dir}/{pod}", pod)
    writer.write_metric("loss", 1.0)
    writer.close()
    assert "%(levelname)s" in LOG_FORMAT
    line = (
        "2026-01-01 00:00:00,000 ERROR pid=1 uploader.delivery.push: {who} rejected metric 'loss' (pushed as "
        "reporter_push_gateway_metric_loss); the other reports are not affected: {answer}\n"
    )
    log = os.path.join(spool_dir, pod, "uploader.log")
    with open(log, "w") as f:
        f.write(line.format(who="the gateway", answer="the gateway answered 400: sample too old, out of bounds"))
    assert pod_status(spool_dir, pod).clock_skew is None
    with open(log, "a") as f:
        f.write(
            line.format(who="the remote-write receiver", answer="the remote-write receiver answered 400: out of bounds")
        )
    assert pod_status(spool_dir, pod).clock_skew is not None
