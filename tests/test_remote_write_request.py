"""The remote-write request (uploader/write_request.py, uploader/remote_write.py) without a receiver: its bytes,
checked by the official protobuf runtime, its caps, and what each answer makes of the samples."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from typing import Any

import cramjam
import pytest

from harness import job_env
from runai.reporter.spool import Metric, Parameter, Report, decode, encode_metric
from tests._remote_write import HEADERS, LOSS_LABELS, POD, _Capture, _message_classes, losses, ms
from uploader.sinks.remote_write import MAX_WRITE_SAMPLES, ReceiverError
from uploader.sinks.remote_write.write_request import encode_labels, encode_write_request


def test_the_official_runtime_decodes_every_field_and_serialises_the_same_bytes() -> None:
    classes = _message_classes()
    series = [
        (
            [("__name__", "a"), ("job", "j"), ("param_value", 'ünï "q"\n' + "x" * 300)],
            [(0, 0.0), (1, -0.0), (1_700_000_000_123, math.pi), (2**62, math.inf), (-5, -math.inf), (7, 1e-300)],
        ),
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
    official = classes["WriteRequest"](
        timeseries=[
            classes["TimeSeries"](
                labels=[classes["Label"](name=n, value=v) for n, v in labels],
                samples=[classes["Sample"](timestamp=t, value=v) for t, v in samples],
            )
            for labels, samples in series
        ]
    )
    assert official.SerializeToString(deterministic=True) == ours


def test_a_request_is_a_snappy_block_of_sorted_labels_and_time_ordered_samples() -> None:
    now = time.time()
    records: list[Report] = [
        Metric(3, now + 2, "metric", "loss", 3.0),
        Metric(1, now, "metric", "loss", 1.0),
        Parameter(2, now + 1, "parameter", "lr", "0.1"),
        Metric(4, now + 1, "metric", "acc", 0.5),
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
        {
            "__name__": "reporter_push_gateway_parameter_lr",
            "job": "reporter_pod_info",
            "podUUID": POD,
            "param_name": "lr",
            "param_value": "0.1",
            "push_gateway_type": "parameter",
        },
        [(ms(records[2]), 1.0)],
    )


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


@pytest.mark.e2e
def test_the_training_process_never_imports_the_sink_s_dependencies() -> None:
    code = (
        "import sys, runai.reporter, runai.reporter.spool\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cramjam', 'google', 'uploader')))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=job_env(), capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


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
        samples = len(
            _message_classes()["WriteRequest"]
            .FromString(bytes(cramjam.snappy.decompress_raw(body)))
            .timeseries[0]
            .samples
        )
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
