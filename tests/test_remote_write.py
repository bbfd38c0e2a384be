"""The remote-write sink (uploader/remote_write.py) against real receivers: Debian's Prometheus 2.42 with
``--web.enable-remote-write-receiver`` and Debian's VictoriaMetrics single node, both started here.

What the receivers answer is measured with plain requests first (``_raw``) and asserted, so that a
receiver that changes its answers fails here, not silently in the sink's judgement of them.
"""
from __future__ import annotations

import math
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator

import cramjam
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from harness import FaultProxy, Prometheus, VictoriaMetrics, job_env, wait_for
from runai.reporter.spool import Metric, Parameter, Report, decode, encode_metric
from uploader.sinks.remote_write import sink as remote_write
from uploader.sinks.remote_write import MAX_WRITE_SAMPLES, ReceiverError, RemoteWriter
from uploader.sinks.remote_write.write_request import encode_labels, encode_write_request

from tests.test_security import PASSWORD, USER, _certificates

POD = "rw-pod-1"
LOSS = f'reporter_push_gateway_metric_loss{{podUUID="{POD}"}}'
LOSS_LABELS = {"__name__": "reporter_push_gateway_metric_loss", "job": "reporter_pod_info", "podUUID": POD,
               "metric_name": "loss", "push_gateway_type": "metric"}
HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
           "X-Prometheus-Remote-Write-Version": "0.1.0"}


def ms(record: Report) -> int:
    return round(record.ts * 1e6) // 1000


def losses(n: int, start: float, step: float = 0.1, name: str = "loss") -> list[Report]:
    """*n* reports of *name* from *start* (s), *step* s apart, values 1/(i+1): falling, each distinct."""
    return [Metric(i, start + i * step, "metric", name, 1.0 / (i + 1)) for i in range(n)]


def expected(records: list[Report]) -> list[tuple[int, float]]:
    return [(ms(r), float(r.value)) for r in records]


def assert_twelve_digits(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """VictoriaMetrics keeps about 12 significant digits (measured: 1/3 comes back as 0.333333333333)."""
    assert [t for t, _ in got] == [t for t, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-11, abs=0)


def exported(victoria: VictoriaMetrics) -> int:
    return sum(len(samples) for _, samples in victoria.export(LOSS))


def _raw(url: str, series: list[tuple[list[tuple[str, str]], list[tuple[int, float]]]]) -> tuple[int, str]:
    """One request of *series* ([(labels, [(ms, value)])]), as the spec has it: (status, answer)."""
    body = encode_write_request([(encode_labels(sorted(labels)), samples) for labels, samples in series])
    request = urllib.request.Request(url, data=bytes(cramjam.snappy.compress_raw(body)), method="POST",
                                     headers=HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- the encoding, decoded by the official protobuf runtime -------------------------------------------------

def _message_classes() -> dict[str, Any]:
    """The spec's four messages, built from a descriptor here (no protoc)."""
    proto = descriptor_pb2.FileDescriptorProto(name="rw_test.proto", package="rwtest", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    fields = {
        "WriteRequest": [("timeseries", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".rwtest.TimeSeries")],
        "TimeSeries": [("labels", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".rwtest.Label"),
                       ("samples", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".rwtest.Sample")],
        "Label": [("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, ""), ("value", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, "")],
        "Sample": [("value", 1, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, ""),
                   ("timestamp", 2, F.TYPE_INT64, F.LABEL_OPTIONAL, "")],
    }
    for name, specs in fields.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in specs:
            message.field.add(name=field_name, number=number, type=kind, label=label, type_name=type_name or None)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"rwtest.{name}")) for name in fields}


def test_the_official_runtime_decodes_every_field_and_serialises_the_same_bytes() -> None:
    classes = _message_classes()
    series = [
        ([("__name__", "a"), ("job", "j"), ("param_value", "ünï \"q\"\n" + "x" * 300)],
         [(0, 0.0), (1, -0.0), (1_700_000_000_123, math.pi), (2**62, math.inf), (-5, -math.inf), (7, 1e-300)]),
        ([("__name__", "b")], [(-(2**63), 1.0), (2**63 - 1, math.nan)]),
        ([("__name__", "c")], []),
    ]
    ours = encode_write_request([(encode_labels(labels), samples) for labels, samples in series])
    decoded = classes["WriteRequest"].FromString(ours)
    assert len(decoded.timeseries) == len(series)
    for got, (labels, samples) in zip(decoded.timeseries, series, strict=True):
        assert [(label.name, label.value) for label in got.labels] == labels
        assert [s.timestamp for s in got.samples] == [t for t, _ in samples]
        for sample, (_, value) in zip(got.samples, samples, strict=True):
            assert math.copysign(1, sample.value) == math.copysign(1, value)  # -0.0 kept
            assert sample.value == value or math.isnan(sample.value) and math.isnan(value)
    # Byte for byte what the runtime writes: field order, defaults left out, varints and lengths.
    official = classes["WriteRequest"](timeseries=[
        classes["TimeSeries"](labels=[classes["Label"](name=n, value=v) for n, v in labels],
                              samples=[classes["Sample"](timestamp=t, value=v) for t, v in samples])
        for labels, samples in series])
    assert official.SerializeToString(deterministic=True) == ours


class _Capture(RemoteWriter):
    """A RemoteWriter whose requests are kept and answered as *answer* says: a unit-test stand-in for a
    receiver, for what no real one does on demand."""

    def __init__(self, answer: Callable[[bytes], tuple[int, str]] = lambda body: (204, ""), **auth: str) -> None:
        super().__init__("http://127.0.0.1:1/api/v1/write", POD, **auth)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answer = answer

    def _post(self, body: bytes) -> None:
        protobuf = bytes(cramjam.snappy.decompress_raw(body))
        self.requests.append((dict(self._headers), protobuf))
        status, text = self.answer(protobuf)
        if status >= 300:
            raise ReceiverError(status, text)

    def sizes(self) -> list[int]:
        """The samples of each request (of its first series)."""
        decode = _message_classes()["WriteRequest"].FromString
        return [len(decode(body).timeseries[0].samples) for _, body in self.requests]


def test_a_request_is_a_snappy_block_of_sorted_labels_and_time_ordered_samples() -> None:
    now = time.time()
    records: list[Report] = [
        Metric(3, now + 2, "metric", "loss", 3.0), Metric(1, now, "metric", "loss", 1.0),
        Parameter(2, now + 1, "parameter", "lr", "0.1"), Metric(4, now + 1, "metric", "acc", 0.5),
        Metric(6, now + 1.0004, "metric", "acc", 0.75),  # the same millisecond as seq 4 (or the next): the last wins
        Metric(5, now + 1.0004, "metric", "acc", 0.6),
    ]
    writer = _Capture(tenant="team-a")
    assert writer.push(records) == []
    [(headers, body)] = writer.requests
    assert headers["X-Scope-OrgID"] == "team-a"
    assert {k: headers[k] for k in HEADERS} == HEADERS
    request = _message_classes()["WriteRequest"].FromString(body)
    got = {}
    for series in request.timeseries:
        names = [label.name for label in series.labels]
        assert names == sorted(names)
        labels = {label.name: label.value for label in series.labels}
        got[labels["__name__"]] = (labels, [(s.timestamp, s.value) for s in series.samples])
    assert got["reporter_push_gateway_metric_loss"] == (LOSS_LABELS, [(ms(records[1]), 1.0), (ms(records[0]), 3.0)])
    acc = got["reporter_push_gateway_metric_acc"][1]
    assert [t for t, _ in acc] == sorted({ms(r) for r in records[3:]})
    assert acc[-1] == (ms(records[4]), 0.75)  # seq 6 beat seq 5 at the same millisecond
    assert got["reporter_push_gateway_parameter_lr"] == (
        {"__name__": "reporter_push_gateway_parameter_lr", "job": "reporter_pod_info", "podUUID": POD,
         "param_name": "lr", "param_value": "0.1", "push_gateway_type": "parameter"}, [(ms(records[2]), 1.0)])


def test_a_sample_s_millisecond_is_the_spool_line_s_microseconds_floored() -> None:
    """Records decoded from real spool lines: ts is ts_us / 1e6, a float; the sample must be ts_us // 1000."""
    stamps = [1_795_790_100_709_999, 1_795_790_100_710_000, 1_795_790_100_711_999, 1_000, 999, 4_102_444_800_000_999]
    records = [decode(encode_metric(i, ts_us, "loss", float(i)).rstrip(b"\n")) for i, ts_us in enumerate(stamps)]
    writer = _Capture()
    assert writer.push(records) == []
    [series] = _message_classes()["WriteRequest"].FromString(writer.requests[0][1]).timeseries
    want = sorted((ts_us // 1000, float(i)) for i, ts_us in enumerate(stamps))
    assert [(sample.timestamp, sample.value) for sample in series.samples] == want


def test_requests_are_capped_and_unencodable_records_refused_unsent() -> None:
    writer = _Capture()
    records = losses(2 * MAX_WRITE_SAMPLES + 5, time.time() - 3000)
    bad = Parameter(0, time.time(), "parameter", "p", "\udcff")
    refused = writer.push([bad, *records])
    assert [(r, type(e)) for r, e in refused] == [(bad, ValueError)] and "UTF-8" in str(refused[0][1])
    assert writer.sizes() == [MAX_WRITE_SAMPLES, MAX_WRITE_SAMPLES, 5]


def test_outages_raise_and_other_client_errors_refuse_without_retrying() -> None:
    records = losses(8, time.time())
    for status in (429, 502, 503, 504):
        writer = _Capture(lambda body, status=status: (status, "busy"))
        with pytest.raises(ReceiverError) as caught:
            writer.push(records)
        assert caught.value.status == status and len(writer.requests) == 1
    # The receiver refuses the sender, not the samples: raised, never counted as refusals (nothing is lost).
    for status in (401, 403, 404):
        writer = _Capture(lambda body, status=status: (status, "forbidden"))
        with pytest.raises(ReceiverError):
            writer.push(records)
        assert len(writer.requests) == 1
    writer = _Capture(lambda body: (422, "unprocessable"))  # any other 4xx: refused whole, not retried
    assert [r for r, _ in writer.push(records)] == records and len(writer.requests) == 1
    # 413, too big: halved until it fits.
    decode = _message_classes()["WriteRequest"].FromString
    writer = _Capture(lambda body: (413, "too large") if len(decode(body).timeseries[0].samples) > 2 else (204, ""))
    assert writer.push(records) == [] and writer.sizes() == [8, 4, 2, 2, 4, 2, 2]
    # A 500 that names no sample: sent twice, split, and one sample answered so twice is an outage.
    writer = _Capture(lambda body: (500, "internal error"))
    with pytest.raises(ReceiverError):
        writer.push(records)
    assert writer.sizes() == [8, 8, 4, 2, 1]


# -- real receivers ----------------------------------------------------------------------------------------

@pytest.fixture
def prometheus(tmp_path: Any) -> Iterator[Prometheus]:
    """Prometheus 2.42 taking remote writes, with a 1 h out-of-order window."""
    with Prometheus(str(tmp_path), remote_write=True, out_of_order_window="1h") as server:
        yield server


@pytest.fixture
def strict_prometheus(tmp_path: Any) -> Iterator[Prometheus]:
    """Prometheus 2.42 taking remote writes, without an out-of-order window (its default)."""
    with Prometheus(str(tmp_path), remote_write=True) as server:
        yield server


@pytest.fixture
def victoria(tmp_path: Any) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(str(tmp_path)) as server:
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


def test_victoriametrics_holds_all_1000_reports_at_their_own_times(victoria: VictoriaMetrics) -> None:
    records = losses(1000, time.time() - 200, step=0.2)
    writer = RemoteWriter(victoria.write_url, POD)
    assert writer.push(records) == []
    # Measured: after a force_flush the series shows at once, but 1 or 2 of the 1,000 samples may take
    # up to about 0.6 s more (without it, about 10 s for all).
    victoria.force_flush()
    wait_for(lambda: exported(victoria) == len(records), 10, "all 1,000 samples in the export")
    [(labels, samples)] = victoria.export(LOSS)
    assert labels == LOSS_LABELS
    assert_twelve_digits(samples, expected(records))


def test_what_each_receiver_keeps_of_unusual_values(strict_prometheus: Prometheus,
                                                     victoria: VictoriaMetrics) -> None:
    now = time.time()
    values = [1.0, math.nan, math.inf, -math.inf, -0.0, 5e-324, 0.1 + 0.2]
    records = [Metric(i, now - 10 + i, "metric", "loss", value) for i, value in enumerate(values)]
    for server in (strict_prometheus, victoria):
        assert RemoteWriter(server.write_url, POD).push(records) == []
    [(_, samples)] = strict_prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert [(t, str(v)) for t, v in samples] == [(t, str(v)) for t, v in expected(records)]  # every bit
    # Measured: VictoriaMetrics drops NaN silently and keeps about 12 significant digits, fewer for a
    # value much smaller than others near it (0.123456789 beside 1e12 came back as 0.123456).
    victoria.force_flush()
    wait_for(lambda: exported(victoria) == len(values) - 1, 10, "the samples in the export")
    [(_, kept)] = victoria.export(LOSS)
    assert [t for t, _ in kept] == [t for t, v in expected(records) if not math.isnan(v)]
    assert [v for _, v in kept] == [1.0, math.inf, -math.inf, 0.0, 0.0, 0.3]


def test_a_sample_too_old_for_prometheus_is_refused_by_name_and_the_rest_is_stored(prometheus: Prometheus) -> None:
    now = time.time()
    ms_now = int(now * 1000)
    _raw(prometheus.write_url, [([("__name__", "probe")], [(ms_now, 1.0)])])
    # Measured: 2.42 answers 500 "too old sample" for one sample older than the window, and stores
    # nothing of that request, not even another series' good sample.
    assert _raw(prometheus.write_url, [([("__name__", "probe")], [(ms_now - 7_200_000, 2.0)]),
                                       ([("__name__", "other")], [(ms_now, 3.0)])]) == (500, "too old sample\n")
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
    assert _raw(strict_prometheus.write_url, [([("__name__", "probe")], [(ms_now, 1.0), (ms_now - 1000, 2.0)])]) \
        == (204, "")
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
            400, "duplicate sample for timestamp\n")
        writer = RemoteWriter(server.write_url, POD)
        assert writer.push([earlier]) == []
        assert writer.pushes == 0
        [(_, samples)] = server.samples(f"{LOSS}[1h]", at=now + 1)
        assert samples == expected(records)


def test_what_a_failed_push_delivered_is_not_sent_again(strict_prometheus: Prometheus,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote_write, "MAX_WRITE_SAMPLES", 100)  # three requests, small enough to bisect fast
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


def test_a_resend_to_victoriametrics_is_no_refusal(victoria: VictoriaMetrics, tmp_path: Any) -> None:
    records = losses(200, time.time() - 40, step=0.2)
    writer = RemoteWriter(victoria.write_url, POD)
    assert writer.push(records) == [] and writer.push(records) == []
    # Measured: VictoriaMetrics takes the resend (204) and keeps both copies of every sample (a few of
    # them show in the export up to about 0.5 s after a force_flush) ...
    victoria.force_flush()
    wait_for(lambda: exported(victoria) == 2 * len(records), 10, "the resent copies in the export")
    [(_, samples)] = victoria.export(LOSS)
    assert_twelve_digits(samples, sorted(expected(records) * 2))
    # ... unless it runs with -dedup.minScrapeInterval=1ms, the flag docs recommend for at-least-once delivery.
    with VictoriaMetrics(str(tmp_path), dedup="1ms") as deduplicating:
        writer = RemoteWriter(deduplicating.write_url, POD)
        assert writer.push(records) == [] and writer.push(records) == []
        deduplicating.force_flush()
        wait_for(lambda: deduplicating.own_metric('vm_deduplicated_samples_total{type="merge"}') == len(records),
                 10, "VictoriaMetrics to drop the resent copies")
        [(_, samples)] = deduplicating.export(LOSS)
        assert_twelve_digits(samples, expected(records))


def test_the_training_process_never_imports_the_sink_s_dependencies() -> None:
    code = ("import sys, runai.reporter, runai.reporter.spool\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cramjam', 'google', 'uploader')))")
    done = subprocess.run([sys.executable, "-c", code], env=job_env(), capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


def test_basic_auth_and_tls_to_a_real_prometheus(tmp_path: Any) -> None:
    import bcrypt

    ca, cert, key = _certificates(str(tmp_path))
    config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                      f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    now = time.time()
    records = losses(50, now - 10)
    with Prometheus(str(tmp_path), remote_write=True, web_config=str(config), ca_file=ca,
                    auth=(USER, PASSWORD)) as server:
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


def test_a_sample_from_the_future_makes_prometheus_refuse_the_present(prometheus: Prometheus,
                                                                      strict_prometheus: Prometheus) -> None:
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


def test_the_ca_file_is_used_whatever_the_scheme_s_case(tmp_path: Any) -> None:
    # http.client is given an https connection for "HTTPS://" too; its CA file must not be dropped.
    from uploader.sinks.http import KeepAliveHandler
    missing = str(tmp_path / "missing-ca.pem")
    for url in ("https://receiver/api/v1/write", "HTTPS://receiver/api/v1/write"):
        with pytest.raises(FileNotFoundError):
            KeepAliveHandler.for_url(url, ca_file=missing)
    assert KeepAliveHandler.for_url("http://receiver/api/v1/write", ca_file=missing) is not None


class _SlowForBig(_Capture):
    """Times out on a request of more than *most* samples, as a slow link does on a big body."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most

    def _post(self, body: bytes) -> None:
        samples = len(_message_classes()["WriteRequest"].FromString(
            bytes(cramjam.snappy.decompress_raw(body))).timeseries[0].samples)
        if samples > self.most:
            raise TimeoutError("the receiver did not answer in full in time")
        super()._post(body)


def test_a_batch_that_times_out_is_split_not_retried_whole_for_ever() -> None:
    now = time.time()
    records: list[Report] = [Metric(i, now + i / 1000, "metric", "loss", float(i)) for i in range(1, 65)]
    writer = _SlowForBig(most=10)
    assert writer.push(records) == []
    assert sum(writer.sizes()) == 64 and max(writer.sizes()) <= 10
    with pytest.raises(TimeoutError):  # even one sample too slow: an outage, for the caller to retry
        _SlowForBig(most=0).push(records)


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
        healer = threading.Thread(target=lambda: (wait_for(lambda: proxy.pushes >= 1, 30, "a stored request"),
                                                  setattr(proxy, "fault", None)))
        healer.start()
        # The request times out, is split, and its parts come back "out of order sample": they are there.
        assert writer.push(records) == []
        healer.join()
    finally:
        proxy.stop()
    [(_, samples)] = strict_prometheus.samples(f"{LOSS}[1h]", at=now + 1)
    assert samples == expected(records)


def test_a_wrong_path_refuses_the_sender_not_the_samples(victoria: VictoriaMetrics) -> None:
    # Measured: VictoriaMetrics answers a wrong path with 400 "unsupported path requested", not 404.
    writer = RemoteWriter(victoria.write_url.replace("/api/v1/write", "/api/v1/writ"), POD)
    with pytest.raises(ReceiverError) as caught:
        writer.push(losses(64, time.time() - 10))
    assert caught.value.status == 400 and "unsupported path" in caught.value.body and caught.value.outage
    assert len(caught.value.args[0]) < 600
