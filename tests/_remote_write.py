"""What the remote-write sink tests share: the series they send, the request's decoding, and a capturing sink."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any, Callable

import cramjam
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from harness import VictoriaMetrics
from runai.reporter.spool import Metric, Report
from uploader.sinks.remote_write import ReceiverError, RemoteWriter
from uploader.sinks.remote_write.write_request import encode_labels, encode_write_request

POD = "rw-pod-1"

LOSS = f'reporter_push_gateway_metric_loss{{podUUID="{POD}"}}'

LOSS_LABELS = {
    "__name__": "reporter_push_gateway_metric_loss",
    "job": "reporter_pod_info",
    "podUUID": POD,
    "metric_name": "loss",
    "push_gateway_type": "metric",
}

HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


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
    request = urllib.request.Request(url, data=bytes(cramjam.snappy.compress_raw(body)), method="POST", headers=HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _message_classes() -> dict[str, Any]:
    """The spec's four messages, built from a descriptor here (no protoc)."""
    proto = descriptor_pb2.FileDescriptorProto(name="rw_test.proto", package="rwtest", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    fields = {
        "WriteRequest": [("timeseries", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".rwtest.TimeSeries")],
        "TimeSeries": [
            ("labels", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".rwtest.Label"),
            ("samples", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".rwtest.Sample"),
        ],
        "Label": [("name", 1, F.TYPE_STRING, F.LABEL_OPTIONAL, ""), ("value", 2, F.TYPE_STRING, F.LABEL_OPTIONAL, "")],
        "Sample": [
            ("value", 1, F.TYPE_DOUBLE, F.LABEL_OPTIONAL, ""),
            ("timestamp", 2, F.TYPE_INT64, F.LABEL_OPTIONAL, ""),
        ],
    }
    for name, specs in fields.items():
        message = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in specs:
            message.field.add(name=field_name, number=number, type=kind, label=label, type_name=type_name or None)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"rwtest.{name}")) for name in fields}


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
