"""Checkpoints: the per-sink format, format 1 read and written as before, and what a damaged entry costs."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

import uploader.delivery.followed as followed
from runai.reporter.spool import SpoolWriter, checkpoint_path, delivery_state, open_spool
from runai.reporter.spool.checkpoint import (
    GATEWAY,
    REMOTE_WRITE,
    SINKS,
    Checkpoint,
    load_checkpoint,
    load_progress,
    store_checkpoint,
)
from tests._helpers import _spool, closed_spool

# What the gateway-only uploader has always written (docs/spool-format.md), byte for byte.
FORMAT_1 = b'{"spool_id":"id","offset":120,"records":3,"last_seq":4,"ended":true,"rejected":1}'


def _write(spool: str, content: bytes | dict[str, object]) -> None:
    with open(checkpoint_path(spool), "wb") as f:
        f.write(content if isinstance(content, bytes) else json.dumps(content).encode())


def _stored(spool: str) -> dict[str, object]:
    with open(checkpoint_path(spool), "rb") as f:
        obj = json.load(f)
    assert isinstance(obj, dict)
    return obj


def test_sinks_are_the_gateway_and_remote_write() -> None:
    assert SINKS == (GATEWAY, REMOTE_WRITE) == ("gateway", "remote_write")


def test_format_1_reads_as_the_gateways_progress(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    _write(spool, FORMAT_1)
    expected = Checkpoint("id", 120, 3, 4, True, 1)
    assert load_checkpoint(spool, "id", 200) == expected
    assert load_checkpoint(spool, "id", 200, sink=REMOTE_WRITE) is None  # nothing delivered by remote write yet
    assert load_progress(spool, "id", 200) == {GATEWAY: expected}
    assert load_progress(spool, "other-id") == {}


def test_the_gateway_alone_still_writes_format_1_byte_for_byte(tmp_path: Path) -> None:
    # An older uploader, status or recover reading this spool must understand it: see docs/spool-format.md.
    spool = _spool(tmp_path)
    store_checkpoint(spool, Checkpoint("id", 120, 3, 4, True, 1))
    with open(checkpoint_path(spool), "rb") as f:
        assert f.read() == FORMAT_1


def test_a_push_under_way_is_recorded_for_its_sink_alone_and_only_while_it_is(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    store_checkpoint(spool, Checkpoint("id", 120, 3, 4, True, 1))
    marked = Checkpoint("id", 60, 1, 2, sent_seq=9)
    store_checkpoint(spool, marked, REMOTE_WRITE)
    with open(checkpoint_path(spool), "rb") as f:
        stored = json.loads(f.read())
    assert stored["sinks"]["remote_write"]["sent_seq"] == 9 and "sent_seq" not in stored["sinks"]["gateway"]
    assert load_progress(spool, "id") == {GATEWAY: Checkpoint("id", 120, 3, 4, True, 1), REMOTE_WRITE: marked}
    store_checkpoint(spool, Checkpoint("id", 90, 2, 9), REMOTE_WRITE)  # the push delivered: no mark left
    with open(checkpoint_path(spool), "rb") as f:
        assert "sent_seq" not in f.read().decode()
    _write(
        spool,
        {
            "version": 2,
            "spool_id": "id",
            "sinks": {"remote_write": {"offset": 60, "records": 1, "last_seq": 2, "sent_seq": "9"}},
        },
    )
    assert load_progress(spool, "id") == {}  # a damaged mark is a damaged entry: replayed, never trusted


def test_a_caller_that_polls_is_not_warned_of_a_damaged_checkpoint_each_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = _spool(tmp_path)
    _write(spool, b"{damaged")
    with caplog.at_level(logging.DEBUG, logger="runai"):
        for _ in range(3):  # finish() polls every few ms; the uploader warns of it once, in its own log
            assert delivery_state(spool, "id", 200, quiet=True).checkpoint is None
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert load_progress(spool, "id") == {}
    assert [r.levelname for r in caplog.records if "unreadable" in r.getMessage()] == ["DEBUG"] * 3 + ["WARNING"]


def test_format_2_round_trip_per_sink(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    gateway, remote = Checkpoint("id", 120, 3, 4, True, 1), Checkpoint("id", 60, 1, 2, False, 2)
    store_checkpoint(spool, remote, REMOTE_WRITE)
    assert load_checkpoint(spool, "id", 200, sink=REMOTE_WRITE) == remote
    assert load_checkpoint(spool, "id", 200) is None
    store_checkpoint(spool, gateway, sink=GATEWAY)
    assert load_progress(spool, "id", 200) == {GATEWAY: gateway, REMOTE_WRITE: remote}
    assert _stored(spool) == {
        "version": 2,
        "spool_id": "id",
        "sinks": {
            "gateway": {"offset": 120, "records": 3, "last_seq": 4, "ended": True, "rejected": 1},
            "remote_write": {"offset": 60, "records": 1, "last_seq": 2, "ended": False, "rejected": 2},
        },
    }
    # Past the end is judged per sink: the gateway's entry is past 100 bytes, remote write's is not.
    assert load_progress(spool, "id", 100) == {REMOTE_WRITE: remote}


def test_storing_one_sink_keeps_the_others(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    store_checkpoint(spool, Checkpoint("id", 10, 1, 1))  # format 1 on disk
    store_checkpoint(spool, Checkpoint("id", 30, 3, 3), REMOTE_WRITE)
    assert load_checkpoint(spool, "id") == Checkpoint("id", 10, 1, 1)  # kept, from format 1
    store_checkpoint(spool, Checkpoint("id", 50, 5, 5))
    assert load_progress(spool, "id") == {GATEWAY: Checkpoint("id", 50, 5, 5), REMOTE_WRITE: Checkpoint("id", 30, 3, 3)}
    # An entry for another spool file is nobody's progress here: a store for this one does not carry it over.
    store_checkpoint(spool, Checkpoint("new-id", 7, 1, 1))
    assert load_progress(spool, "new-id") == {GATEWAY: Checkpoint("new-id", 7, 1, 1)}
    assert "version" not in _stored(spool)  # the gateway alone again: format 1


def test_a_corrupt_entry_costs_only_its_own_sink(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = _spool(tmp_path)
    remote = {"offset": 60, "records": 1, "last_seq": 2, "ended": False, "rejected": 0}
    for broken in ({"offset": "x", "records": 1, "last_seq": 1}, {"records": 1}, [], 1e999):
        _write(spool, {"version": 2, "spool_id": "id", "sinks": {"gateway": broken, "remote_write": remote}})
        with caplog.at_level(logging.WARNING):
            caplog.clear()
            assert load_progress(spool, "id") == {REMOTE_WRITE: Checkpoint("id", 60, 1, 2)}
        assert "is unreadable" in caplog.text and "replaying" in caplog.text
    # Storing the sink whose entry is broken repairs it and keeps the other's.
    store_checkpoint(spool, Checkpoint("id", 90, 2, 3))
    assert load_progress(spool, "id") == {GATEWAY: Checkpoint("id", 90, 2, 3), REMOTE_WRITE: Checkpoint("id", 60, 1, 2)}


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"\0" * 10,
        b"[]",
        b'{"version": 3, "spool_id": "id", "sinks": {}}',
        b'{"version": true, "spool_id": "id"}',
        b'{"version": 2, "spool_id": 1}',
        b'{"version": 2, "spool_id": "id", "sinks": []}',
        b"[" * 4096,
    ],
)
def test_a_damaged_file_replays_every_sink_and_a_store_replaces_it(tmp_path: Path, damage: bytes) -> None:
    spool = _spool(tmp_path)
    _write(spool, damage)
    assert load_progress(spool, "id") == {}
    store_checkpoint(spool, Checkpoint("id", 5, 1, 1), REMOTE_WRITE)
    assert load_progress(spool, "id") == {REMOTE_WRITE: Checkpoint("id", 5, 1, 1)}


def test_an_unknown_sink_is_refused(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    with pytest.raises(ValueError, match="remote_write"):
        store_checkpoint(spool, Checkpoint("id", 5, 1, 1), "remote-write")
    with pytest.raises(ValueError, match="unknown sink"):
        load_checkpoint(spool, "id", sink="otlp")
    assert not os.path.exists(checkpoint_path(spool))


def test_delivery_is_covered_only_when_every_sink_covers_the_file(spool_dir: str, pod: str) -> None:
    spool = closed_spool(os.path.join(spool_dir, pod), pod)
    path, sid, size = spool.path, spool.spool_id, spool.size
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    first_report_end = len(lines[0]) + len(lines[1])  # after the header and one report
    store_checkpoint(path, Checkpoint(sid, size, 3, 4, True, 1))
    assert delivery_state(path, sid, size).covered  # the default: the gateway alone, as before
    both = delivery_state(path, sid, size, sinks=SINKS)
    assert not both.covered and both.checkpoint is None and both.records == 0 and both.refused == 1
    store_checkpoint(path, Checkpoint(sid, first_report_end, 1, 1, False, 2), REMOTE_WRITE)
    both = delivery_state(path, sid, size, sinks=SINKS)
    assert not both.covered and (both.records, both.refused, both.bytes_delivered) == (1, 3, first_report_end)
    assert both.sinks == {
        GATEWAY: Checkpoint(sid, size, 3, 4, True, 1),
        REMOTE_WRITE: Checkpoint(sid, first_report_end, 1, 1, False, 2),
    }
    opened = open_spool(path, resume=False)
    assert opened is not None
    with opened.tail as tail:  # counted from the least advanced sink: two reports (and the end line) left
        counted = delivery_state(path, sid, tail.size(), reader=tail, sinks=SINKS)
    assert (counted.pending, counted.pending_bytes) == (2, size - first_report_end)
    store_checkpoint(path, Checkpoint(sid, size, 3, 4, True, 2), REMOTE_WRITE)
    both = delivery_state(path, sid, size, sinks=SINKS)
    assert both.covered and (both.records, both.refused) == (3, 3)
    with pytest.raises(ValueError, match="at least one"):
        delivery_state(path, sid, size, sinks=())


def test_each_sink_resumes_at_its_own_checkpoint(spool_dir: str, pod: str) -> None:
    # Two FollowedFiles, one per sink, as the uploader's two threads will hold: each commits its own entry.
    pod_dir = os.path.join(spool_dir, pod)
    writer = SpoolWriter(pod_dir, pod)
    writer.write_metric("loss", 1.0)
    writer.write_metric("loss", 0.5)
    writer.close()
    name, size = os.path.basename(writer.path), os.path.getsize(writer.path)
    with open(writer.path, "rb") as f:
        header, first = f.readline(), f.readline()
    gateway = followed.FollowedFiles(pod_dir)
    entry = gateway.follow(name, check_liveness=True)
    assert entry is not None
    list(entry.tail.read_all())
    assert gateway.commit() == (2, size, None)
    gateway.close()
    remote = followed.FollowedFiles(pod_dir, sink=REMOTE_WRITE)
    entry = remote.follow(name, check_liveness=True)
    assert entry is not None and entry.tail.records == 0 and entry.acked.offset == 0  # nothing sent to it yet
    assert len(entry.tail.read(limit=len(first))) == 1  # remote write delivers the first report only
    assert remote.commit() == (1, len(header) + len(first), None)
    remote.close()
    assert load_progress(writer.path, writer.spool_id) == {
        GATEWAY: Checkpoint(writer.spool_id, size, 2, 3, True),
        REMOTE_WRITE: Checkpoint(writer.spool_id, len(header) + len(first), 1, 1),
    }
    for sink, offset, records in ((GATEWAY, size, 2), (REMOTE_WRITE, len(header) + len(first), 1)):
        reopened = open_spool(writer.path, sink=sink)
        assert reopened is not None and reopened.checkpoint is not None
        with reopened.tail as tail:
            assert (tail.offset, tail.records) == (offset, records)


def test_checkpoint_round_trip_and_tolerant_load(tmp_path) -> None:
    spool = str(tmp_path / "w1.jsonl")
    assert checkpoint_path(spool) == str(tmp_path / "w1.ckpt")
    assert load_checkpoint(spool, "id") is None  # missing: replay
    ckpt = Checkpoint("id", 120, 3, 4, True, 1)
    store_checkpoint(spool, ckpt)
    assert load_checkpoint(spool, "id", spool_size=200) == ckpt
    assert load_checkpoint(spool, "other-id") is None
    assert load_checkpoint(spool, "id", spool_size=100) is None  # past the end
    for damage in (b"", b"\0" * 10, b'{"spool_id": "id"', b'{"spool_id":"id","offset":"x","records":1,"last_seq":1}'):
        with open(checkpoint_path(spool), "wb") as f:
            f.write(damage)
        assert load_checkpoint(spool, "id") is None
