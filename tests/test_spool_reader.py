"""Reading a spool file: headers, end markers, torn tails, the delivery state, and whole milliseconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runai.reporter.spool import (
    BadSpoolError,
    Checkpoint,
    SpoolTail,
    checkpoint_path,
    encode_end,
    encode_header,
    encode_metric,
    store_checkpoint,
)
from tests._helpers import closed_spool, read_all


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
    path.write_bytes(
        encode_header("id", "pod", 1_000_000) + encode_metric(1, 1_000_000, "m", 1.0) + encode_end(2, 1_000_000)
    )
    tail = SpoolTail(str(path))
    assert tail.read_header()
    assert len(tail.read()) == 1 and tail.ended and tail.records == 1 and tail.last_seq == 2
    tail.close()


def test_last_error_reads_the_level_after_the_time(spool_dir: str, pod: str) -> None:
    from runai.reporter.spool import LOG_NAME, last_error, last_line

    pod_dir = os.path.join(spool_dir, pod)
    os.mkdir(pod_dir, 0o700)
    assert last_error(pod_dir) is None  # no log
    with open(os.path.join(pod_dir, LOG_NAME), "w") as f:
        f.write(
            "2026-01-01 00:00:00,000 WARNING pid=1 uploader.service: the gateway is unreachable\n"
            "2026-01-01 00:00:01,000 INFO pid=1 uploader.service: a message that says ERROR \n"
            "  File \"x.py\", line 1, in f: raise ValueError(' ERROR ')\n\n"
        )
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
