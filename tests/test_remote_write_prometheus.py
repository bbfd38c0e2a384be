"""The remote-write sink against a real Prometheus (Debian's 2.42 with ``--web.enable-remote-write-receiver``).

What the receiver answers is measured with plain requests first (``_raw``) and asserted, so that a
receiver that changes its answers fails here, not silently in the sink's judgement of them."""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any, Iterator

import pytest

from harness import FaultProxy, Prometheus, wait_for
from runai.reporter.spool import Metric, Parameter
from tests._remote_write import LOSS, LOSS_LABELS, POD, _raw, expected, losses, ms
from tests._tls import PASSWORD, USER, _certificates
from uploader.sinks.remote_write import ReceiverError, RemoteWriter
from uploader.sinks.remote_write import samples as remote_write_samples

pytestmark = pytest.mark.e2e


@pytest.fixture
def prometheus(tmp_path: Any) -> Iterator[Prometheus]:
    """Prometheus 2.42 taking remote writes, with a 1 h out-of-order window."""
    with Prometheus(str(tmp_path), remote_write=True, out_of_order_window="1h") as server:
        yield server


def test_prometheus_holds_all_1000_reports_at_their_own_times(prometheus: Prometheus) -> None:
    now = time.time()
    records = losses(1000, now - 200, step=0.2)
    writer = RemoteWriter(prometheus.write_url, POD)
    assert writer.push(records) == []
    writer.close()
    [(labels, samples)] = prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert labels == LOSS_LABELS
    assert samples == expected(records)  # all 1,000, values in order, at the reports' own milliseconds


def test_a_sample_too_old_for_prometheus_is_refused_by_name_and_the_rest_is_stored(prometheus: Prometheus) -> None:
    now = time.time()
    ms_now = int(now * 1000)
    _raw(prometheus.write_url, [([("__name__", "probe")], [(ms_now, 1.0)])])
    # Measured: 2.42 answers 500 "too old sample" for one sample older than the window, and stores
    # nothing of that request, not even another series' good sample.
    assert _raw(
        prometheus.write_url,
        [([("__name__", "probe")], [(ms_now - 7_200_000, 2.0)]), ([("__name__", "other")], [(ms_now, 3.0)])],
    ) == (500, "too old sample\n")
    assert prometheus.samples("other[3h]", at=now + 1) == []

    records = losses(300, now - 60, step=0.2)
    old = Parameter(1000, now - 7200, "parameter", "optimizer", "adam")
    writer = RemoteWriter(prometheus.write_url, POD)
    refused = writer.push([*records[:150], old, *records[150:]])
    assert [record for record, _ in refused] == [old]
    error = refused[0][1]
    assert isinstance(error, ReceiverError) and error.status == 500 and "too old sample" in str(error)
    [(_, samples)] = prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert samples == expected(records)
    assert writer.pushes < 40  # bisected, not sent sample by sample


def test_out_of_order_samples_in_one_request_arrive_sorted(strict_prometheus: Prometheus) -> None:
    now = time.time()
    ms_now = int(now * 1000)
    # Measured: without a window, a series' samples out of order within one request are dropped, with a 204.
    assert _raw(strict_prometheus.write_url, [([("__name__", "probe")], [(ms_now, 1.0), (ms_now - 1000, 2.0)])]) == (
        204,
        "",
    )
    assert strict_prometheus.samples("probe[1h]", at=now + 1) == [({"__name__": "probe"}, [(ms_now, 1.0)])]

    records = losses(500, now - 100, step=0.2)
    shuffled = records[::2][::-1] + records[1::2]
    assert RemoteWriter(strict_prometheus.write_url, POD).push(shuffled) == []
    [(_, samples)] = strict_prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert samples == expected(records)


def test_a_resend_to_prometheus_is_no_refusal(prometheus: Prometheus, strict_prometheus: Prometheus) -> None:
    now = time.time()
    records = losses(200, now - 40, step=0.2)
    for server in (prometheus, strict_prometheus):
        assert RemoteWriter(server.write_url, POD).push(records) == []
    series = [(sorted(LOSS_LABELS.items()), expected(records))]
    # Measured: with a window, the resend of a whole batch is taken (204) and stores nothing twice ...
    assert _raw(prometheus.write_url, series) == (204, "")
    assert RemoteWriter(prometheus.write_url, POD).push(records) == []
    [(_, samples)] = prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert samples == expected(records)
    # ... and without one, it is "out of order sample" (400): indistinguishable from a late new sample,
    # which is why docs recommend the window for at-least-once delivery.
    assert _raw(strict_prometheus.write_url, series) == (400, "out of order sample\n")
    # Measured on both: the same millisecond with another value is "duplicate sample for timestamp" (400).
    # The series has a sample there, from an earlier send of the last report of that millisecond: delivered.
    last = records[-1]
    earlier = Metric(last.seq - 1000, last.ts, "metric", "loss", 42.0)
    for server in (prometheus, strict_prometheus):
        assert _raw(server.write_url, [(sorted(LOSS_LABELS.items()), [(ms(last), 42.0)])]) == (
            400,
            "duplicate sample for timestamp\n",
        )
        writer = RemoteWriter(server.write_url, POD)
        assert writer.push([earlier]) == []
        assert writer.pushes == 0
        [(_, samples)] = server.samples(f"{LOSS}[1h]", at=now + 1)
        assert samples == expected(records)


def test_what_a_failed_push_delivered_is_not_sent_again(
    strict_prometheus: Prometheus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(remote_write_samples, "MAX_WRITE_SAMPLES", 100)  # three requests, small enough to bisect fast
    now = time.time()
    records = losses(250, now - 100, step=0.1)
    proxy = FaultProxy(strict_prometheus.address).start()
    try:
        proxy.fault, proxy.fail_after = "fail_after", 1  # the first request gets through, then 500s
        writer = RemoteWriter(f"http://{proxy.address}/api/v1/write", POD)
        with pytest.raises(ReceiverError):
            writer.push(records)
        assert writer.pushes == 1
        proxy.fault = None
        # Sent again, the first request's samples would all be "out of order" (no window) and refused.
        assert writer.push(records) == []
        assert writer.pushes == 3
    finally:
        proxy.stop()
    [(_, samples)] = strict_prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert samples == expected(records)


def test_basic_auth_and_tls_to_a_real_prometheus(tmp_path: Any) -> None:
    import bcrypt

    ca, cert, key = _certificates(str(tmp_path))
    config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  {USER}: '{hashed}'\n"
    )
    now = time.time()
    records = losses(50, now - 10)
    with Prometheus(
        str(tmp_path), remote_write=True, web_config=str(config), ca_file=ca, auth=(USER, PASSWORD)
    ) as server:
        assert server.write_url.startswith("https://")
        writer = RemoteWriter(server.write_url, POD, username=USER, password=PASSWORD, ca_file=ca)
        assert writer.push(records) == []
        writer.close()
        [(_, samples)] = server.samples(f"{LOSS}[1h]", at=now + 1)
        assert samples == expected(records)
        # Measured: a wrong password is 401. It refuses the sender, not the samples: raised, as the gateway
        # sink does (the loop backs off, then keeps the reports for recover), never counted as refusals.
        wrong = RemoteWriter(server.write_url, POD, username=USER, password="wrong", ca_file=ca)
        with pytest.raises(ReceiverError) as caught:
            wrong.push(records[:3])
        assert caught.value.status == 401 and wrong.pushes == 0
        with pytest.raises(ssl.SSLCertVerificationError):
            RemoteWriter(server.write_url, POD, username=USER, password=PASSWORD).push(records[:1])


def test_a_sample_from_the_future_makes_prometheus_refuse_the_present(
    prometheus: Prometheus, strict_prometheus: Prometheus
) -> None:
    """Why pods need synchronised clocks: one report 3 h ahead moves the head, and the present is then
    too old (with a 1 h window: 500 "too old sample") or out of bounds (without one: 400)."""
    now = time.time()
    ahead = Metric(0, now + 3 * 3600, "metric", "skewed", 1.0)
    present = losses(3, now - 1)
    for server, answer in ((prometheus, "too old sample"), (strict_prometheus, "out of bounds")):
        writer = RemoteWriter(server.write_url, POD)
        assert writer.push([ahead]) == []
        refused = writer.push(present)
        assert [(record, answer in str(error)) for record, error in refused] == [(r, True) for r in present]
        assert server.samples(f"{LOSS}[1h]", at=now + 1) == []


def test_a_resend_that_also_holds_a_late_sample_loses_none_of_the_rest(strict_prometheus: Prometheus) -> None:
    # Prometheus rolls a request back whole for one "out of order sample": the answer never proves the
    # request's other samples stored, even when all of them were in a push a dead uploader had begun.
    now = time.time()
    writer = RemoteWriter(strict_prometheus.write_url, POD)
    assert writer.push([Metric(1, now - 58, "metric", "loss", 2.0)]) == []
    late = Metric(2, now - 59, "metric", "loss", 1.0)  # older than the series' newest: never storable
    good = [Metric(3 + i, now - 57 + i / 100, "metric", "loss", 3.0 + i) for i in range(99)]
    refused = writer.push([late, *good], resent=frozenset(id(r) for r in [late, *good]))
    assert refused == []  # the late one alone, maybe stored before: counted delivered, not refused
    [(_, samples)] = strict_prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert [value for _, value in samples] == [2.0, *(r.value for r in good)]  # all 99 good ones stored


def test_a_request_whose_answer_never_came_is_no_refusal_when_sent_again(strict_prometheus: Prometheus) -> None:
    proxy = FaultProxy(strict_prometheus.address).start()
    try:
        proxy.fault, proxy.slow_seconds = "slow", 30  # stored by Prometheus; the answer is held past the timeout
        writer = RemoteWriter(f"http://{proxy.address}/api/v1/write", POD, timeout=1.0)
        now = time.time()
        records = losses(50, now - 60)
        healer = threading.Thread(
            target=lambda: (wait_for(lambda: proxy.pushes >= 1, 30, "a stored request"), setattr(proxy, "fault", None))
        )
        healer.start()
        # The request times out, is split, and its parts come back "out of order sample": they are there.
        assert writer.push(records) == []
        healer.join()
    finally:
        proxy.stop()
    [(_, samples)] = strict_prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert samples == expected(records)
