"""A broken or hostile gateway: refused, reset, failing, slow, trickling, or answering with a huge page."""

from __future__ import annotations

import os
import threading
import time

import pytest

from harness import FaultProxy, Pushgateway, metric_name, parameter_name, process_cpu_seconds, uploader_pids, wait_for
from runai.reporter import Reporter
from runai.reporter.spool import METRIC
from runai.reporter.spool import Metric as Record
from tests._helpers import cli_env, finished_spool, peak_rss_mib
from tests._raw_gateway import HUGE_ANSWER, RawGateway
from uploader.sinks.pushgateway import MAX_ANSWER_BYTES, Pusher

pytestmark = pytest.mark.e2e


def uploader_log(reporter: Reporter) -> str:
    path = os.path.join(reporter.settings.pod_dir, "uploader.log")
    return open(path).read() if os.path.exists(path) else ""


@pytest.mark.parametrize("fault", ["refuse", "reset", "500", "slow"])
def test_everything_arrives_once_the_gateway_fault_ends(
    env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str, proxy: FaultProxy, fault: str
) -> None:
    reporter = Reporter(gateway_url=proxy.address, push_timeout=1)
    reporter.reportMetric("warmup", 1)
    wait_for(lambda: gateway.value(pod, metric_name("warmup")) == 1, 10, "the first push")
    if fault == "refuse":
        proxy.refuse()
    else:
        proxy.fault = fault
    for i in range(2000):
        reporter.reportMetric("loss", i)
        reporter.reportParameter("phase", f"phase {i}")
    wait_for(lambda: "retrying with backoff" in uploader_log(reporter), 20, "the uploader to meet the fault")

    # While the gateway is broken the uploader backs off instead of spinning.
    (pid,) = uploader_pids(spool_dir)
    before, started = process_cpu_seconds(pid), time.monotonic()
    time.sleep(3)  # a measurement window, not synchronisation
    share = (process_cpu_seconds(pid) - before) / (time.monotonic() - started)
    assert share < 0.05, f"the uploader used {share:.1%} of a core while the gateway was down"
    if fault != "slow":  # a slow gateway applied the push; only its answer came too late
        assert gateway.value(pod, metric_name("loss")) is None
    assert "pending" not in uploader_log(reporter)  # (it has not given up)

    proxy.heal()
    assert reporter.finish(timeout=30) is True
    assert gateway.value(pod, metric_name("loss")) == 1999
    assert gateway.series(pod)[parameter_name("phase")][0]["param_value"] == "phase 1999"


def test_a_trickling_gateway_cannot_hold_a_push(pod: str) -> None:
    with RawGateway("trickle") as trickle:
        pusher = Pusher(trickle.url, pod, timeout=1)
        outcome: list[BaseException] = []

        def push() -> None:
            try:
                pusher.push([Record(1, time.time(), METRIC, "x", 1.0)])
            except BaseException as exc:  # recorded for the assertion below
                outcome.append(exc)

        thread = threading.Thread(target=push, daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(5)
        took = time.monotonic() - started
        alive = thread.is_alive()
    thread.join(10)
    pusher.close()
    assert not alive, "a push was still reading a trickled answer 5 s after it began, with a 1 s timeout"
    assert took < 2
    assert len(outcome) == 1 and isinstance(outcome[0], TimeoutError), outcome


def test_a_huge_error_page_does_not_grow_the_uploader(spool_dir: str, pod: str) -> None:
    finished_spool(spool_dir, pod, {"x": 1.0})
    with RawGateway("huge") as huge:
        done, peak = peak_rss_mib(cli_env(spool_dir, pod, huge.url), "recover", "--timeout", "2")
        assert huge.requests >= 1
    assert done.returncode == 1, done.stderr  # the gateway never took the push
    assert "Pushgateway answered 500" in done.stderr
    # Python, prometheus_client and the uploader take about 40 MiB; the page is 300 MiB.
    assert peak < 100, f"the uploader peaked at {peak:.0f} MiB reading a {HUGE_ANSWER >> 20} MiB error page"
    assert MAX_ANSWER_BYTES == 64 << 10
