"""The spool format, the writer's failure handling, checkpoints and the tail reader."""
from __future__ import annotations

import errno
import json
import logging
import math
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runai.reporter.spool import writer as spool
from runai.reporter.spool import (
    SpoolWriter,
    decode,
    encode_end,
    encode_header,
    encode_metric,
    encode_parameter,
)
from runai.reporter.spool import Checkpoint, checkpoint_path, load_checkpoint, store_checkpoint
from runai.reporter.spool import BadSpoolError, SpoolTail
from tests._helpers import closed_spool


def strict_json(line: bytes) -> object:
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_metric_values_round_trip_as_strict_json(value: float) -> None:
    line = encode_metric(1, 1_500_000, "m", value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    strict_json(line)
    got = decode(line[:-1]).value
    assert (math.isnan(value) and math.isnan(got)) or got == value  # type: ignore[arg-type]


@given(st.text())
def test_parameter_values_round_trip_as_one_line(value: str) -> None:
    line = encode_parameter(3, 2_000_000, "p", value)
    assert line.count(b"\n") == 1  # newlines in values are escaped, never split a record
    strict_json(line)
    assert decode(line[:-1]) == (3, 2.0, "parameter", "p", value, "")


@pytest.mark.parametrize("line", [
    b"", b"garbage", b"[]", b"null", b'{"seq":1}', b'{"seq":"1","ts_us":1,"kind":"metric","name":"a","value":1}',
    b'{"seq":1,"ts_us":1,"kind":"metric","name":"a","value":"1"}', b'{"seq":1,"ts_us":1,"kind":"metric","value":1}',
    b'{"seq":1,"ts_us":1,"kind":"parameter","name":"a","value":1}', b'{"seq":1,"ts_us":1,"kind":"what"}',
    b'{"seq":0,"ts_us":1,"kind":"header","version":99,"spool_id":"x"}', b"\0\0\0",
    b'{"seq":1,"ts_us":1,"kind":"metric",', b'{"seq":1,"ts":1.5,"kind":"metric","name":"a","value":1}',
    b'{"seq":1,"ts_us":1.5,"kind":"metric","name":"a","value":1}', b"[" * 100_000,
])
def test_decode_refuses_what_is_not_a_record(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode(line)


def read_all(path: str) -> list:
    tail = SpoolTail(path)
    try:
        assert tail.read_header()
        return tail.read()
    finally:
        tail.close()


def test_writer_survives_enospc_and_counts_the_loss(tmp_path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    writer = SpoolWriter(str(tmp_path / "pod"), "pod")
    writer.write_metric("a", 1.0)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "_write", full_disk)  # the writer's one call of write(2)
    for i in range(100):
        writer.write_metric("b", float(i))
    monkeypatch.setattr(spool, "_write", real_write)
    writer.write_metric("c", 3.0)
    writer.close()
    assert (writer.lost, writer.records) == (100, 2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    assert [(r.name, r.value) for r in read_all(writer.path)] == [("a", 1.0), ("c", 3.0)]


def test_a_torn_write_does_not_poison_the_next_record(tmp_path, monkeypatch) -> None:
    writer = SpoolWriter(str(tmp_path / "pod"), "pod")
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "_write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    writer.write_metric("torn", 1.0)
    monkeypatch.setattr(spool, "_write", full_disk)  # then nothing fits at all for a while
    writer.write_metric("lost", 1.5)
    monkeypatch.setattr(spool, "_write", real_write)
    writer.write_metric("after", 2.0)
    writer.close()
    assert writer.lost == 2
    tail = SpoolTail(writer.path)
    assert tail.read_header()
    assert [(r.name, r.value) for r in tail.read()] == [("after", 2.0)]
    assert tail.skipped == 1 and tail.ended


def test_unwritable_spool_never_raises(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    writer = SpoolWriter(str(blocker / "pod"), "pod")
    for i in range(10):
        writer.write_metric("a", float(i))
    writer.close()
    assert writer.lost == 10 and writer.path == ""
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_truncated_anywhere_in_the_last_record_keeps_the_earlier_ones(tmp_path) -> None:
    header = encode_header("id1", "pod", 1_000_000)
    body = b"".join(encode_metric(i, 1_000_000, "m", float(i)) for i in range(1, 4))
    last = encode_metric(4, 1_000_000, "m", 4.0)
    path = str(tmp_path / "w1.jsonl")
    for cut in range(len(last)):
        with open(path, "wb") as f:
            f.write(header + body + last[:cut])
        assert [r.value for r in read_all(path)] == [1.0, 2.0, 3.0], cut
    with open(path, "wb") as f:
        f.write(header + body + last)
    assert [r.value for r in read_all(path)] == [1.0, 2.0, 3.0, 4.0]


def test_a_file_without_a_valid_header_is_refused(tmp_path) -> None:
    path = tmp_path / "w1.jsonl"
    path.write_bytes(encode_metric(1, 1_000_000, "m", 1.0))
    tail = SpoolTail(str(path))
    with pytest.raises(BadSpoolError):
        tail.read_header()
    tail.close()


def test_end_marker_is_read(tmp_path) -> None:
    path = tmp_path / "w1.jsonl"
    path.write_bytes(encode_header("id", "pod", 1_000_000) + encode_metric(1, 1_000_000, "m", 1.0)
                     + encode_end(2, 1_000_000))
    tail = SpoolTail(str(path))
    assert tail.read_header()
    assert len(tail.read()) == 1 and tail.ended and tail.records == 1 and tail.last_seq == 2
    tail.close()


def test_checkpoint_round_trip_and_tolerant_load(tmp_path) -> None:
    spool = str(tmp_path / "w1.jsonl")
    assert checkpoint_path(spool) == str(tmp_path / "w1.ckpt")
    assert load_checkpoint(spool, "id") is None  # missing: replay
    ckpt = Checkpoint("id", 120, 3, 4, True, 1)
    store_checkpoint(spool, ckpt)
    assert load_checkpoint(spool, "id", spool_size=200) == ckpt
    assert load_checkpoint(spool, "other-id") is None
    assert load_checkpoint(spool, "id", spool_size=100) is None  # past the end
    for damage in (b"", b"\0" * 10, b'{"spool_id": "id"',
                   b'{"spool_id":"id","offset":"x","records":1,"last_seq":1}'):
        with open(checkpoint_path(spool), "wb") as f:
            f.write(damage)
        assert load_checkpoint(spool, "id") is None


def test_a_failed_checkpoint_write_keeps_the_old_one(tmp_path, monkeypatch) -> None:
    spool = str(tmp_path / "w1.jsonl")
    old = Checkpoint("id", 10, 1, 1)
    store_checkpoint(spool, old)

    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "injected I/O error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="injected"):
        store_checkpoint(spool, Checkpoint("id", 20, 2, 2))
    assert load_checkpoint(spool, "id") == old


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["metric", "parameter"]), st.sampled_from(["a", "b", "c_1"]),
                          st.floats(allow_nan=False, width=32)), max_size=30))
def test_writer_and_reader_agree(tmp_path_factory, reports) -> None:
    writer = SpoolWriter(str(tmp_path_factory.mktemp("pod")), "pod")
    for kind, name, value in reports:
        if kind == "metric":
            writer.write_metric(name, value)
        else:
            writer.write_parameter(name, str(value))
    writer.close()
    records = read_all(writer.path)
    assert [(r.kind, r.name) for r in records] == [(k, n) for k, n, _ in reports]
    assert [r.seq for r in records] == list(range(1, len(reports) + 1))


@given(st.integers(0, 2**64), st.integers(0, 2**62), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
       st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**20, 10**20),
                 st.sampled_from(["1E5", "-0", "1e+300", "2.5e-3", "01", "1.", ".5", "+1", "1e", "--1"])))
def test_decode_fast_path_agrees_with_json(seq: int, ts_us: int, name: str, value: object) -> None:
    text = value if isinstance(value, str) else repr(value)
    line = f'{{"seq":{seq},"ts_us":{ts_us},"kind":"metric","name":"{name}","value":{text}}}'.encode()
    try:
        expected = json.loads(line)
        want = float(expected["value"])
    except ValueError:
        with pytest.raises(ValueError):
            decode(line)
        return
    if seq >= 2**63:  # out of the range a spool line may hold (docs/operations.md, "Limits")
        with pytest.raises(ValueError):
            decode(line)
        return
    record = decode(line)
    assert (record.seq, record.name, record.value) == (seq, name, want)
    assert record.ts == ts_us / 1e6


def test_decode_gives_one_type_per_kind_of_line() -> None:
    from runai.reporter.spool import End, Header, Metric, Parameter

    header = decode(encode_header("id", "pod", 1_000_000)[:-1])
    assert isinstance(header, Header) and header.spool_id == "id" and header.kind == "header"
    assert isinstance(decode(encode_metric(1, 1, "m", 1.5)[:-1]), Metric)
    assert isinstance(decode(b'{"seq":1,"ts_us":1,"kind":"metric","name":"m","value":"NaN"}'), Metric)  # the slow path
    parameter = decode(encode_parameter(2, 1, "p", "v")[:-1])
    assert isinstance(parameter, Parameter)
    assert (parameter.kind, parameter.name, parameter.value) == ("parameter", "p", "v")
    assert isinstance(decode(encode_end(3, 1)[:-1]), End)


def test_last_error_reads_the_level_after_the_time(spool_dir: str, pod: str) -> None:
    from runai.reporter.spool import LOG_NAME, last_error, last_line

    pod_dir = os.path.join(spool_dir, pod)
    os.mkdir(pod_dir, 0o700)
    assert last_error(pod_dir) is None  # no log
    with open(os.path.join(pod_dir, LOG_NAME), "w") as f:
        f.write("2026-01-01 00:00:00,000 WARNING pid=1 uploader.service: the gateway is unreachable\n"
                "2026-01-01 00:00:01,000 INFO pid=1 uploader.service: a message that says ERROR \n"
                "  File \"x.py\", line 1, in f: raise ValueError(' ERROR ')\n\n")
    assert last_error(pod_dir) == "2026-01-01 00:00:00,000 WARNING pid=1 uploader.service: the gateway is unreachable"
    assert last_line(pod_dir) == "File \"x.py\", line 1, in f: raise ValueError(' ERROR ')"


def test_delivery_state_of_a_closed_file(spool_dir: str, pod: str) -> None:
    from runai.reporter.spool import delivery_state, open_spool

    spool = closed_spool(os.path.join(spool_dir, pod), pod)
    state = delivery_state(spool.path, spool.spool_id, spool.size)
    assert not state.covered and state.checkpoint is None and state.records == 0
    store_checkpoint(spool.path, Checkpoint(spool.spool_id, spool.size - 10, 2, 2, False, 1))
    state = delivery_state(spool.path, spool.spool_id, spool.size)
    assert not state.covered and (state.records, state.refused) == (2, 1)
    opened = open_spool(spool.path, resume=False)
    assert opened is not None and opened.checkpoint is None
    with opened.tail as tail:  # a checkpoint that is not at a line start is not the uploader's: all is pending
        header_bytes = tail.offset
        counted = delivery_state(spool.path, spool.spool_id, tail.size(), reader=tail)
    assert counted.checkpoint is None and (counted.pending, counted.pending_bytes) == (3, spool.size - header_bytes)
    store_checkpoint(spool.path, Checkpoint(spool.spool_id, spool.size, 3, 4, True, 1))
    assert delivery_state(spool.path, spool.spool_id, spool.size).covered
    os.unlink(spool.path)  # as history retention deletes a delivered file: still covered
    os.unlink(checkpoint_path(spool.path))
    assert delivery_state(spool.path, spool.spool_id, spool.size).covered


def test_a_first_line_too_long_for_a_header_is_not_a_spool_file(tmp_path: Path) -> None:
    from runai.reporter.spool import open_spool

    path = tmp_path / "w1-x.jsonl"
    path.write_bytes(b"x" * 100)  # short, no newline: still being created
    assert open_spool(str(path)) is None
    path.write_bytes(b"x" * (64 << 10))  # a header never gets this long: not "being created" for ever
    with pytest.raises(BadSpoolError, match="first line is not a spool header"):
        open_spool(str(path))


def _spool_with_times(tmp_path: Path, times_us: list[int]) -> str:
    """A closed spool file whose metric lines carry *times_us*, in that order (values 0, 1, ...)."""
    from runai.reporter.spool import encode_metric

    spool = closed_spool(str(tmp_path), "pod", reports=0)
    with open(spool.path, "rb") as f:
        header = f.read().split(b"\n")[0] + b"\n"
    with open(spool.path, "wb") as f:
        f.write(header + b"".join(encode_metric(i + 1, t, "loss", float(i)) for i, t in enumerate(times_us)))
    return spool.path


def test_a_read_holding_whole_milliseconds_never_ends_inside_one(tmp_path: Path) -> None:
    # Lines at ms 5, 5, 7, 7, 7, 9: a read cut by its byte limit inside ms 7 stops before ms 7's first line.
    path = _spool_with_times(tmp_path, [5_000, 5_900, 7_000, 7_100, 7_999, 9_000])
    with SpoolTail(path) as tail:
        assert tail.read_header()
        start = tail.offset
        line = (os.path.getsize(path) - start) // 6
        assert [r.value for r in tail.read(start + 4 * line + 1 - start, whole_ms=True)] == [0.0, 1.0]
        assert tail.held_until is None  # cut by the limit, not held for time
        assert [r.value for r in tail.read(whole_ms=True)] == [2.0, 3.0, 4.0, 5.0]  # the last ms is long over
        assert tail.records == 6 and tail.last_seq == 6 and tail.offset == os.path.getsize(path)
    with SpoolTail(path) as tail:  # without whole_ms, the same limit cuts ms 7
        assert tail.read_header()
        assert [r.value for r in tail.read(4 * line + 1)] == [0.0, 1.0, 2.0, 3.0]
    one_ms = _spool_with_times(tmp_path / "one", [7_000] * 40)
    with SpoolTail(one_ms) as tail:  # a block that is all one millisecond: a bigger read takes all of it
        assert tail.read_header()
        assert len(tail.read(200, whole_ms=True)) == 40 and tail.offset == os.path.getsize(one_ms)


def test_a_follower_reads_the_newest_millisecond_once_it_is_over(tmp_path: Path) -> None:
    import time

    from runai.reporter.spool.reader import MS_GUARD

    now_us = time.time_ns() // 1000
    open_ms = (now_us // 1000 + 20) * 1000  # 20 ms ahead: still open when read below
    path = _spool_with_times(tmp_path, [now_us - 5_000_000, open_ms, open_ms + 1])
    with SpoolTail(path) as tail:
        assert tail.read_header()
        assert [r.value for r in tail.read(whole_ms=True, hold_open=True)] == [0.0]
        assert tail.held_until == pytest.approx((open_ms // 1000 + 1) / 1000 + MS_GUARD)
        assert tail.read(whole_ms=True, hold_open=True) == [] and tail.held_until is not None
        assert [r.value for r in tail.read(whole_ms=True)] == [1.0, 2.0]  # not following: read at once
    stepped = _spool_with_times(tmp_path / "stepped", [now_us + 3_600_000_000])  # a clock an hour ahead
    with SpoolTail(stepped) as tail:
        assert tail.read_header()
        assert len(tail.read(whole_ms=True, hold_open=True)) == 1 and tail.held_until is None  # never waited for
