"""Receivers that answer unusually, against the real uploader loop (issue 22, points 8 to 11).

Real receivers on 127.0.0.1 (a Pushgateway, VictoriaMetrics), with the fault proxy in front of them where
the answer must be one no real receiver gives on demand: a redirect, a 408, a 429 with ``Retry-After``, a
push that stalls on one value.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from typing import Iterator

import pytest

from harness import FaultProxy, Pushgateway, VictoriaMetrics, metric_name, parameter_name, wait_for
from runai.reporter import Reporter
from runai.reporter.spool import LOG_NAME, Metric, Parameter, SpoolWriter
from tests._helpers import spool_records
from uploader.delivery import DeliveryOptions
from uploader.delivery.schedule import MAX_RETRY_AFTER, Schedule
from uploader.delivery.service import EXIT_DELIVERED, EXIT_PENDING, Uploader
from uploader.sinks import Sink
from uploader.sinks.http import StatusError, retry_after
from uploader.sinks.pushgateway import Pusher
from uploader.sinks.remote_write import ReceiverError, RemoteWriter
from uploader.sinks.remote_write.receiver_answers import VM_MAX_LABEL_VALUE_BYTES

# Give up fast on a receiver that keeps failing; back off briefly, so that a wait measured is the receiver's.
ONCE = DeliveryOptions(follow=False, use_watchdog=False, retry_timeout=1.0, backoff=(0.02, 0.05))


@pytest.fixture
def victoria(tmp_path: os.PathLike[str]) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(str(tmp_path)) as server:
        yield server


def spool(pod_dir: str, pod: str, metrics: int = 20) -> SpoolWriter:
    """A closed spool of *metrics* values of one metric ``loss``, each its own sample."""
    writer = SpoolWriter(pod_dir, pod)
    for i in range(metrics):
        writer.write_metric("loss", float(i))
    writer.close()
    return writer


def deliver(pod_dir: str, sink: Sink, options: DeliveryOptions = ONCE) -> tuple[int, Uploader]:
    uploader = Uploader(pod_dir, sink, options)
    return uploader.run(), uploader


# -- point 8: a 3xx refuses the sender, a 408 is transient; neither drops nor splits ----------------------


@pytest.mark.e2e
@pytest.mark.parametrize("status", [301, 302, 307, 308, 408])
def test_a_redirect_or_408_from_remote_write_is_retried_never_refused_nor_split(
    victoria: VictoriaMetrics, tmp_path: os.PathLike[str], pod: str, status: int
) -> None:
    proxy = FaultProxy(victoria.address).start()
    try:
        proxy.fault, proxy.answer_status, proxy.answer_times = "answer", status, 1_000_000
        proxy.answer_headers = [("Location", f"http://{victoria.address}/elsewhere")] if status < 400 else []
        pod_dir = os.path.join(str(tmp_path), pod)
        spool(pod_dir, pod)
        records = [r for r in spool_records(pod_dir) if r.kind == "metric"]
        # One request, raised (to be retried), not split into 39 nor refused.
        with pytest.raises(ReceiverError) as caught:
            RemoteWriter(f"http://{proxy.address}/api/v1/write", pod).push(records)
        assert caught.value.status == status and len(proxy.push_times) == 1
        code, uploader = deliver(pod_dir, RemoteWriter(f"http://{proxy.address}/api/v1/write", pod))
        # Backed off, then kept on disk for recover, nothing refused.
        assert code == EXIT_PENDING and uploader.rejected == {} and uploader.delivered_records == 0
        assert str(status) in uploader.last_error
        tries = len(proxy.push_times)
        # Once the receiver takes them, the same 20 samples go.
        proxy.fault = None
        code, uploader = deliver(pod_dir, RemoteWriter(f"http://{proxy.address}/api/v1/write", pod))
        assert code == EXIT_DELIVERED and uploader.delivered_records == 20 and uploader.rejected == {}
        assert len(proxy.push_times) == tries + 1
    finally:
        proxy.stop()
    victoria.force_flush()
    selector = f'{metric_name("loss")}{{podUUID="{pod}"}}'
    # One sample per millisecond (the last): the 20 reports were written faster than that.
    want = sorted({round(r.ts * 1e6) // 1000: float(r.value) for r in records}.items())
    wait_for(lambda: [s for _, s in victoria.export(selector)] == [want], 20, "the samples in VictoriaMetrics")


def test_the_receivers_own_status_words_decide_retry_or_refusal() -> None:
    for status in (300, 302, 399, 401, 408, 429):
        assert ReceiverError(status, "").outage, status
    assert not ReceiverError(422, "").outage and not ReceiverError(400, "bad").outage


# -- point 9: Retry-After -----------------------------------------------------------------------------------


def _second_try_after(proxy: FaultProxy, pod_dir: str, pod: str, header: str) -> float:
    """Seconds between the push answered 429 with Retry-After *header* and the next, through the real loop."""
    proxy.fault, proxy.answer_status, proxy.answer_times = "answer", 429, 1
    proxy.answer_headers = [("Retry-After", header)]
    proxy.push_times.clear()
    code, _ = deliver(
        pod_dir,
        Pusher(f"http://{proxy.address}", pod, timeout=5),
        DeliveryOptions(follow=False, use_watchdog=False, retry_timeout=60, backoff=(0.05, 5.0)),
    )
    assert code == EXIT_DELIVERED
    first, second = proxy.push_times
    return second - first


@pytest.mark.e2e
def test_a_429_s_retry_after_is_honoured_in_seconds_and_as_an_http_date(
    gateway: Pushgateway, tmp_path: os.PathLike[str], pod: str
) -> None:
    proxy = FaultProxy(gateway.address).start()
    try:
        pod_dir = os.path.join(str(tmp_path), pod)
        spool(pod_dir, pod, metrics=1)
        # Before: retried after the backoff, 0.025-0.05 s here.
        assert _second_try_after(proxy, pod_dir, pod, "2") >= 1.9
        spool(pod_dir, pod, metrics=1)
        # An HTTP date has whole seconds: 3 s from now is 2 to 3 s away.
        date = email.utils.formatdate(time.time() + 3, usegmt=True)
        assert _second_try_after(proxy, pod_dir, pod, date) >= 1.9
        spool(pod_dir, pod, metrics=1)
        assert _second_try_after(proxy, pod_dir, pod, "soon") < 1.0  # not a wait: the backoff's own
    finally:
        proxy.stop()
    gateway.delete_group(pod)


def test_retry_after_is_read_in_seconds_or_as_a_date_and_bounded() -> None:
    now = 1_700_000_000.0
    assert retry_after("30", now) == 30.0 and retry_after(" 7 ", now) == 7.0
    assert retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == 90.0
    assert retry_after("Sun Nov  6 08:49:37 1994", now) == 0.0  # asctime's form, GMT, in the past
    for junk in (None, "", "-5", "1.5", "soon", "\u0663"):
        assert retry_after(junk, now) is None, junk
    # Within the retry timeout and MAX_RETRY_AFTER; never shorter than the backoff.
    assert Schedule(retry_timeout=10_000, backoff=(0.1, 5.0)).failed(0.0, 1e9) == MAX_RETRY_AFTER
    assert Schedule(retry_timeout=20, backoff=(0.1, 5.0)).failed(0.0, 1e9) == 20
    assert 0.05 <= Schedule(retry_timeout=20, backoff=(0.1, 5.0)).failed(0.0, 0.0) <= 0.1


# -- point 10: a value that stalls a push, sent first ---------------------------------------------------


@pytest.mark.e2e
def test_a_value_that_stalls_every_push_is_refused_by_name_and_the_value_behind_it_delivered(
    gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    proxy = FaultProxy(gateway.address).start()
    proxy.fault, proxy.stall_bytes, proxy.slow_seconds = "stall_on", b"chokes-the-proxy", 60
    try:
        reporter = Reporter(pod_uuid=pod, gateway_url=proxy.address, spool_dir=spool_dir, push_timeout=0.5)
        reporter.reportParameter("poison", "chokes-the-proxy")  # first in the push
        reporter.reportMetric("loss", 0.25)
        # Before: the lone push of the parameter timed out, and the pair was retried whole until the timeout.
        started = time.monotonic()
        assert reporter.finish(timeout=20) is False  # something was refused: docs/api.md, finish()
        assert time.monotonic() - started < 15
    finally:
        proxy.stop()
    series = gateway.series(pod)
    assert series[metric_name("loss")][1] == 0.25 and parameter_name("poison") not in series
    with open(os.path.join(spool_dir, pod, LOG_NAME)) as f:
        log = f.read()
    assert "cannot push parameter 'poison'" in log and "while the gateway answered other pushes" in log, log
    gateway.delete_group(pod)


@pytest.mark.e2e
def test_a_gateway_that_answers_nothing_in_time_costs_two_timeouts_per_halving(gateway: Pushgateway, pod: str) -> None:
    proxy = FaultProxy(gateway.address).start()
    proxy.fault, proxy.stall_bytes, proxy.slow_seconds = "stall_on", b"", 60  # every push stalls
    try:
        records = [Metric(i, time.time(), "metric", f"m{i}", float(i)) for i in range(64)]
        with pytest.raises(TimeoutError):
            Pusher(f"http://{proxy.address}", pod, timeout=0.2).push(records)
        # 64, then 32 whole and 32 halved: 2 per halving down to one value, not one per value.
        assert len(proxy.push_times) == 2 * 6 + 1
    finally:
        proxy.stop()


@pytest.mark.e2e
def test_a_504_hiccup_after_a_refusal_refuses_nothing_else_and_everything_arrives_once_it_ends(
    gateway: Pushgateway, pod: str
) -> None:
    clash = metric_name(f"clash_{pod.replace('-', '_')}")
    # The same name is a counter in another group: the gateway answers 400 to any push of it.
    assert gateway.push_text(f"job/other/instance/{pod}", f"# TYPE {clash} counter\n{clash} 1\n") == 200
    proxy = FaultProxy(gateway.address).start()
    # Right after that 400, an ingress answers 504 to the next 12 pushes (the gateway restarting).
    proxy.fault, proxy.answer_status, proxy.answer_headers, proxy.answer_times = "answer_after_400", 504, [], 12
    pusher = Pusher(f"http://{proxy.address}", pod, timeout=5)
    records = [Metric(i, time.time(), "metric", f"m{i:02d}", float(i)) for i in range(63)]
    records.append(Metric(63, time.time(), "metric", clash[len(metric_name("")) :], 1.0))
    outages = 0
    try:
        for _ in range(20):  # the uploader's retries, without its backoff
            try:
                refused = pusher.push(records)
                break
            except OSError:
                outages += 1
        else:
            pytest.fail("the gateway never took the push")
    finally:
        pusher.close()
        proxy.stop()
    # Before: the lone values whose pushes met the 504s were refused by name for good (22 of 64).
    assert [record.name for record, _ in refused] == [records[-1].name] and outages > 0
    series = gateway.series(pod)
    assert all(series[metric_name(f"m{i:02d}")][1] == float(i) for i in range(63))
    gateway.delete_group(pod)


# -- point 11: VictoriaMetrics cuts long label values short, and says nothing ------------------------------


@pytest.mark.e2e
def test_a_parameter_value_victoriametrics_would_cut_short_is_warned_of_once(
    victoria: VictoriaMetrics, pod: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="uploader")
    now = time.time()
    values = {"long": "a" * 20_000, "wide": "\u00e9" * 10_000, "edge": "b" * VM_MAX_LABEL_VALUE_BYTES}
    writer = RemoteWriter(victoria.write_url, pod)
    for i in range(2):  # a second push of the same values: no second warning
        records = [Parameter(j, now + i, "parameter", name, value) for j, (name, value) in enumerate(values.items())]
        assert writer.push(records) == []
    warned = [r.getMessage() for r in caplog.records if "VictoriaMetrics" in r.getMessage()]
    assert len(warned) == 2 and "'long'" in warned[0] and "20000 bytes" in warned[0] and "'wide'" in warned[1]
    # What the warning is about, measured: the receiver answered 204 and kept 16,384 bytes of each.
    victoria.force_flush()
    kept = wait_for(
        lambda: (
            {s["param_name"]: s["param_value"] for s, _ in victoria.export(f'{{podUUID="{pod}"}}')}
            if len(victoria.export(f'{{podUUID="{pod}"}}')) == 3
            else None
        ),
        20,
        "the 3 parameters",
    )
    assert kept == {"long": "a" * 16_384, "wide": "\u00e9" * 8_192, "edge": values["edge"]}


def test_an_error_page_is_one_printable_line_in_the_message() -> None:
    # nginx's 401 page has line breaks: in the pod's log they hid the failure from the job's early warning, and let a
    # hostile server write whole lines of its own there.
    page = "<html>\r\n<head><title>401</title></head>\n2026-01-01 00:00:00,000 INFO pid=1 x: forged\x1b[2J</html>\n"
    for error in (StatusError(401, "Unauthorized\r\nX: y", page), ReceiverError(401, page)):
        message = str(error)
        assert "\n" not in message and "\r" not in message and "\x1b" not in message, message
        assert message.startswith(
            (
                "the server answered 401 Unauthorized X: y: '<html> <head>",
                "the remote-write receiver answered 401: '<html> <head>",
            )
        )
