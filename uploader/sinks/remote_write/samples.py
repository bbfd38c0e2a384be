"""Building a remote-write request: reports as samples, in time order, in requests under the caps.

Every report is a sample of its series at its own time, in milliseconds; two reports of one series in the
same millisecond keep the last (by ``seq``), since a receiver keeps one value per timestamp. The labels are
exactly what a Prometheus scraping the gateway with ``honor_labels: true`` shows
(:mod:`uploader.sinks.exposition`). Sending them, split around refused samples, is :mod:`.sink`.
"""

from __future__ import annotations

import operator
from typing import AbstractSet, Iterator, NamedTuple, Sequence

from runai.reporter.spool import METRIC, Report

from .. import Refusal
from ..exposition import JOB, encoded_size, exposition_name
from .receiver_answers import LongValues
from .write_request import MAX_SAMPLE_BYTES, encode_labels

__all__ = ["MAX_WRITE_BYTES", "MAX_WRITE_SAMPLES", "Point", "batches", "series_labels", "to_points"]

MAX_WRITE_SAMPLES = 10_000  # samples in one request; more are sent in several
MAX_WRITE_BYTES = 1 << 20  # of one request's protobuf, before compression


_MS, _SEQ, _LABELS = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(4)  # of a Point


class Point(NamedTuple):
    """One report as a sample: sorted by (ms, seq), and bound for the series *series*."""

    ms: int
    seq: int
    series: tuple[str, ...]
    value: float
    labels: bytes  # the series' encoded labels
    record: Report
    resent: bool  # an earlier uploader's push covered it, and may have stored it


def to_points(
    records: Sequence[Report],
    refused: list[tuple[Report, Refusal]],
    resent: AbstractSet[int],
    sent: AbstractSet[tuple[tuple[str, ...], int, float]],
    pod_uuid: str,
    long_values: LongValues,
) -> list[Point]:
    """*records* as samples in time order, one per series and millisecond (the last), less those in *sent*.

    A record that cannot be encoded goes to *refused*, with why (a ValueError); *resent*: ids of records an
    earlier push covered.
    """
    # A drain passes millions of records through here: locals, no attribute lookups per record, and
    # points built with tuple.__new__ (a NamedTuple's own __new__ is Python code).
    known: dict[object, tuple[tuple[str, ...], bytes]] = {}  # a metric's name, or a parameter's series
    points: list[Point] = []
    append, new = points.append, tuple.__new__
    for record in records:
        seq, ts, kind, name, value = record[:5]
        key: object = name if kind == METRIC else (kind, name, str(value))
        found = known.get(key)
        if found is None:
            series = (METRIC, name) if kind == METRIC else (kind, name, str(value))
            try:
                found = known[key] = (series, series_labels(record, pod_uuid, long_values))
            except ValueError as exc:
                refused.append((record, exc))
                continue
        append(
            new(
                Point,
                (
                    round(ts * 1e6) // 1000,
                    seq,
                    found[0],
                    float(value) if kind == METRIC else 1.0,
                    found[1],
                    record,
                    id(record) in resent,
                ),
            )
        )
    points.sort(key=_SEQ)  # (ms, seq) as two stable sorts on one field each: no key tuple per point
    points.sort(key=_MS)
    # One per series and millisecond: the first's place, the last's point (the labels name the series).
    last = dict(zip(zip(map(_LABELS, points), map(_MS, points), strict=True), points, strict=True))
    if not sent:
        return list(last.values())
    return [point for point in last.values() if (point.series, point.ms, point.value) not in sent]


def series_labels(record: Report, pod_uuid: str, long_values: LongValues) -> bytes:
    """The encoded labels of *record*'s series; ValueError for a name or value that cannot be sent."""
    encoded_size(record)  # ValueError for a name Prometheus cannot take, or a value not UTF-8
    if record.kind == METRIC:
        labels = [("metric_name", record.name), ("push_gateway_type", "metric")]
    else:
        long_values.check(record.name, str(record.value))
        labels = [("param_name", record.name), ("param_value", str(record.value)), ("push_gateway_type", "parameter")]
    labels += [("__name__", exposition_name(record)), ("job", JOB), ("podUUID", pod_uuid)]
    # Sorted by name (the spec); an empty value means no label, as a scrape reads one.
    return encode_labels(sorted((name, value) for name, value in labels if value))


def batches(points: list[Point]) -> Iterator[list[Point]]:
    """*points* in runs of at most MAX_WRITE_SAMPLES and MAX_WRITE_BYTES (an upper bound of)."""
    batch: list[Point] = []
    series: set[tuple[str, ...]] = set()
    size = 0
    for point in points:
        grows = MAX_SAMPLE_BYTES + (0 if point.series in series else len(point.labels) + 8)
        if batch and (len(batch) >= MAX_WRITE_SAMPLES or size + grows > MAX_WRITE_BYTES):
            yield batch
            batch, series, size = [], set(), 0
            grows = MAX_SAMPLE_BYTES + len(point.labels) + 8
        batch.append(point)
        series.add(point.series)
        size += grows
    if batch:
        yield batch
