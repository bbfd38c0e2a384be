"""The remote-write sink wired in: real jobs (subprocesses with a Reporter), the real uploader, and real
receivers (Debian's Prometheus 2.42 with ``--web.enable-remote-write-receiver``, Debian's Pushgateway).

Each job spaces its reports 2 ms apart: reports of one series in the same millisecond keep the last (as
documented), and these tests want every report to stand as its own sample."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from typing import Any, Iterator

import pytest

from harness import FaultProxy, Prometheus, Pushgateway, job_env, metric_name, uploader_pids, wait_for
from runai.reporter.spool import GATEWAY, REMOTE_WRITE, is_spool_file, load_progress, open_spool
from tests._helpers import spool_records, uploader_cli
from tests._remote_write_jobs import JOB, covered, expected, job_settings, run_job, samples

pytestmark = pytest.mark.e2e


@pytest.fixture
def receiver(tmp_path: Any) -> Iterator[Prometheus]:
    """Prometheus taking remote writes, with an out-of-order window for backfilled history."""
    with Prometheus(str(tmp_path), remote_write=True, out_of_order_window="2h") as server:
        yield server


def test_a_job_s_1000_reports_reach_prometheus_each_at_its_own_time(
    receiver: Prometheus, spool_dir: str, pod: str
) -> None:
    env = job_settings(spool_dir, pod)
    code = JOB.replace("Reporter()", f"Reporter(remote_write_url={receiver.write_url!r})")
    done = subprocess.run(
        [sys.executable, "-c", code, "1000", "finish", "60"],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    want = expected(os.path.join(spool_dir, pod))
    assert len(want) == 1000 and len({ms for ms, _ in want}) == 1000
    got = samples(receiver, pod)
    assert got == want  # all 1,000, values in order, at the reports' own milliseconds
    assert [v for _, v in got] == [float(i) for i in range(1000)]
    # status judges each file by the sinks its checkpoint has progress for, plus those configured here.
    assert pod_counts(env) == (1000, 0)
    assert pod_counts({**env, "reporterGatewayURL": "gw.invalid:9091"}) == (0, 1000)


def pod_counts(env: dict[str, str]) -> tuple[int, int]:
    """(reports delivered, reports pending) of the one pod, by ``runai-uploader status --json``."""
    done = uploader_cli(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    [status] = json.loads(done.stdout)["pods"]
    return status["reports_delivered"], status["reports_pending"]


def test_recover_backfills_an_outage_with_the_original_times_and_then_sends_nothing(
    tmp_path: Any, spool_dir: str, pod: str
) -> None:
    receiver = Prometheus(str(tmp_path), remote_write=True, out_of_order_window="2h")  # down for now
    env = job_settings(spool_dir, pod, reporterRemoteWriteURL=receiver.write_url, reporterRetryTimeout="1")
    killed = run_job(env, 500, "kill")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # Its uploader gives up a second after the job is gone; nothing reached the receiver.
    wait_for(lambda: not uploader_pids(spool_dir), 30, "the job's uploader to give up")
    pod_dir = os.path.join(spool_dir, pod)
    want = expected(pod_dir)
    assert len(want) == 500 and not covered(pod_dir, REMOTE_WRITE)
    # Its pushes reached no receiver (connections refused): their marks were taken back, so that nothing
    # of them is taken for "perhaps stored" later.
    [spool] = [os.path.join(pod_dir, n) for n in os.listdir(pod_dir) if is_spool_file(n)]
    opened = open_spool(spool, resume=False)
    assert opened is not None
    with opened.tail as tail:
        entry = load_progress(spool, tail.spool_id, sinks=(REMOTE_WRITE,))[REMOTE_WRITE]
    assert entry.records == 0 and entry.sent_seq == 0
    with receiver:
        first = uploader_cli(env, "recover", "--timeout=30")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "500 reports delivered" in first.stdout, first.stdout
        assert samples(receiver, pod) == want  # every sample, at its report's own time
        assert covered(pod_dir, REMOTE_WRITE)
        second = uploader_cli(env, "recover", "--timeout=30")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "0 reports delivered" in second.stdout, second.stdout
        assert samples(receiver, pod) == want


def test_both_sinks_get_everything_the_gateway_its_last_value_the_tsdb_every_value(
    receiver: Prometheus, gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    env = job_settings(spool_dir, pod, reporterGatewayURL=gateway.address, reporterRemoteWriteURL=receiver.write_url)
    done = run_job(env, 1000, "finish")
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    assert gateway.value(pod, metric_name("loss")) == 999
    pod_dir = os.path.join(spool_dir, pod)
    assert samples(receiver, pod) == expected(pod_dir) and len(expected(pod_dir)) == 1000
    assert covered(pod_dir, GATEWAY) and covered(pod_dir, REMOTE_WRITE)


def _both_sinks_one_down(
    tmp_path: Any, gateway: Pushgateway, spool_dir: str, pod: str, **settings: str
) -> tuple[Prometheus, dict[str, str]]:
    """A remote-write receiver, down for now (not started), and the job settings naming it and the gateway."""
    receiver = Prometheus(str(tmp_path), remote_write=True, out_of_order_window="2h")
    env = job_settings(
        spool_dir,
        pod,
        reporterGatewayURL=gateway.address,
        reporterRemoteWriteURL=receiver.write_url,
        reporterRetryTimeout="60",
        **settings,
    )
    return receiver, env


def test_a_receiver_that_is_down_delays_neither_the_gateway_nor_its_checkpoints(
    tmp_path: Any, gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    receiver, env = _both_sinks_one_down(tmp_path, gateway, spool_dir, pod)
    done = run_job(env, 200, "finish", finish_timeout=3)
    # finish() waits for every configured sink: with one down it times out, honestly.
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    pod_dir = os.path.join(spool_dir, pod)
    assert gateway.value(pod, metric_name("loss")) == 199
    assert covered(pod_dir, GATEWAY) and not covered(pod_dir, REMOTE_WRITE)
    with receiver:  # the uploader is still retrying it: everything arrives once it is up
        want = expected(pod_dir)
        wait_for(lambda: samples(receiver, pod) == want, 30, "the receiver to get every report")
        wait_for(lambda: covered(pod_dir, REMOTE_WRITE), 10, "the remote-write checkpoints")
        wait_for(lambda: not uploader_pids(spool_dir), 30, "the uploader to exit")


def test_a_delivered_file_is_deleted_only_once_every_sink_has_it(
    tmp_path: Any, gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    receiver, env = _both_sinks_one_down(
        tmp_path, gateway, spool_dir, pod, reporterSpoolFileBytes="65536", reporterHistoryBytes="4096"
    )
    done = run_job(env, 20_000, "finish", finish_timeout=3, pause=0)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    pod_dir = os.path.join(spool_dir, pod)
    files = [n for n in os.listdir(pod_dir) if is_spool_file(n)]
    assert len(files) >= 4 and covered(pod_dir, GATEWAY)  # rotated, and all with the gateway
    assert gateway.value(pod, metric_name("loss")) == 19_999
    # Far over the history bound, but the remote-write sink has none of them: every file is kept.
    assert sorted(n for n in os.listdir(pod_dir) if is_spool_file(n)) == sorted(files)
    with receiver:
        wait_for(lambda: not uploader_pids(spool_dir), 60, "the uploader to deliver to the receiver and exit")
        left = [n for n in os.listdir(pod_dir) if is_spool_file(n)]
        assert len(left) < len(files)  # now delivered everywhere: trimmed to the bound
        assert not left or covered(pod_dir, REMOTE_WRITE)
        last = prometheus_last(receiver, pod)
        assert last == 19_999.0


def prometheus_last(prometheus: Prometheus, pod: str) -> float | None:
    found = samples(prometheus, pod)
    return found[-1][1] if found else None


def test_a_resend_after_a_crash_between_the_receiver_s_2xx_and_the_checkpoint_is_no_refusal(
    tmp_path: Any, spool_dir: str, pod: str
) -> None:
    # Without an out-of-order window, Prometheus answers a resend of stored samples "out of order sample" (400),
    # the very answer a sample too late to store gets: only the uploader's own record can tell them apart.
    with Prometheus(str(tmp_path), remote_write=True) as strict:
        proxy = FaultProxy(strict.address).start()
        proxy.refuse()  # its port kept: the job's uploader gets nowhere, and gives up
        env = job_settings(
            spool_dir, pod, reporterRemoteWriteURL=f"http://{proxy.address}/api/v1/write", reporterRetryTimeout="1"
        )
        try:
            killed = run_job(env, 500, "kill")
            assert killed.returncode == -signal.SIGKILL, killed.stderr
            wait_for(lambda: not uploader_pids(spool_dir), 30, "the job's uploader to give up")
            pod_dir = os.path.join(spool_dir, pod)
            want = expected(pod_dir)
            proxy.fault, proxy.slow_seconds = "slow", 120  # Prometheus stores the request; its 2xx is held
            proxy.start()
            crashing = subprocess.Popen(
                [sys.executable, "-m", "uploader", "recover", "--timeout=60"],
                env=job_env(**env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_for(lambda: proxy.pushes >= 1, 30, "Prometheus to store the first request")
            finally:
                crashing.kill()
                crashing.wait()
            stored = samples(strict, pod)  # one request or more (the job's uploader may have marked some)
            assert stored and set(stored) <= set(want) and not covered(pod_dir, REMOTE_WRITE)
            [spool] = [os.path.join(pod_dir, n) for n in os.listdir(pod_dir) if is_spool_file(n)]
            opened = open_spool(spool, resume=False)
            assert opened is not None
            with opened.tail as tail:
                marked = load_progress(spool, tail.spool_id, sinks=(REMOTE_WRITE,))[REMOTE_WRITE]
                assert tail.checkpoints((REMOTE_WRITE,)) == {REMOTE_WRITE: marked}  # one it resumes at
                assert marked.records == 0 and marked.sent_seq >= 500  # written before the push
            proxy.fault = None
            again = uploader_cli(env, "recover", "--timeout=30")
            assert again.returncode == 0, again.stdout + again.stderr
            assert "500 reports delivered" in again.stdout, again.stdout
            assert "0 names rejected by the remote-write receiver" in again.stdout, again.stdout
            assert samples(strict, pod) == want and covered(pod_dir, REMOTE_WRITE)
            assert load_progress(spool, marked.spool_id, sinks=(REMOTE_WRITE,))[REMOTE_WRITE].rejected == 0
        finally:
            proxy.stop()


# Pairs of reports 0.6 ms apart, many of them in one millisecond, while the uploader reads on every write.
PAIRS = """
import sys, time
from runai.reporter import Reporter
r = Reporter()
for i in range(int(sys.argv[1])):
    r.reportMetric('loss', 2.0 * i)
    until = time.perf_counter() + 0.0006
    while time.perf_counter() < until:
        pass
    r.reportMetric('loss', 2.0 * i + 1)
    time.sleep(0.002)
print(r.finish(timeout=60))
"""


def test_reports_of_one_millisecond_keep_the_last_even_when_the_uploader_reads_between_them(
    tmp_path: Any, spool_dir: str, pod: str
) -> None:
    # Without an out-of-order window Prometheus keeps the first sample of a millisecond sent in two requests
    # (the second is "duplicate sample for timestamp"): the uploader must read each millisecond whole.
    with Prometheus(str(tmp_path), remote_write=True) as strict:
        env = job_settings(spool_dir, pod, reporterRemoteWriteURL=strict.write_url, reporterPushInterval="0.001")
        done = subprocess.run(
            [sys.executable, "-c", PAIRS, "400"],
            env=env,
            text=True,
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
        last: dict[int, tuple[int, float]] = {}
        per_ms: Counter[int] = Counter()
        for record in spool_records(os.path.join(spool_dir, pod)):
            if getattr(record, "name", None) == "loss":
                ms = round(record.ts * 1e6) // 1000
                per_ms[ms] += 1
                last[ms] = max(last.get(ms, (-1, 0.0)), (record.seq, float(record.value)))
        assert sum(1 for n in per_ms.values() if n == 2) >= 50  # many pairs share a ms, or this proves nothing
        assert samples(strict, pod) == sorted((ms, value) for ms, (_, value) in last.items())
