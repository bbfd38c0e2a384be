"""Storing a checkpoint safely: concurrent stores, failed writes, forks, signal handlers, planted links, root."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

import runai.reporter.spool.checkpoint as checkpoint
from harness import wait_for
from runai.reporter.spool import SpoolWriter, checkpoint_path
from runai.reporter.spool.checkpoint import (
    GATEWAY,
    REMOTE_WRITE,
    SINKS,
    Checkpoint,
    load_checkpoint,
    load_progress,
    store_checkpoint,
)
from tests._helpers import _spool


def test_two_threads_storing_different_sinks_never_lose_an_entry(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    rounds = 1000
    done = dict.fromkeys(SINKS, 0)  # stores each sink has completed, published after each returns
    lost: list[str] = []
    start = threading.Barrier(len(SINKS))

    def store_many(sink: str) -> None:
        other = REMOTE_WRITE if sink == GATEWAY else GATEWAY
        start.wait()
        for i in range(1, rounds + 1):
            store_checkpoint(spool, Checkpoint("id", i, i, i), sink)
            done[sink] = i
            seen_before = done[other]  # read before loading: the load must show at least this much
            progress = load_progress(spool, "id")
            for name, least in ((sink, i), (other, seen_before)):
                got = progress[name].records if name in progress else 0
                if got < least:
                    lost.append(f"round {i} of {sink}: {name} at {got}, had stored {least}")

    threads = [threading.Thread(target=store_many, args=(sink,)) for sink in SINKS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not lost, lost[:5]
    assert load_progress(spool, "id") == {sink: Checkpoint("id", rounds, rounds, rounds) for sink in SINKS}
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(checkpoint_path(spool))]  # no temp file left


def test_a_child_forked_while_a_lock_is_held_can_still_load(tmp_path: Path) -> None:
    # A training process may fork (data loader workers) while one of its threads is in finish()'s load.
    spool = _spool(tmp_path)
    store_checkpoint(spool, Checkpoint("id", 5, 1, 1))
    with checkpoint._lock(checkpoint_path(spool)):
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only if the load returns, with the right answer
            os._exit(0 if load_progress(spool, "id") == {GATEWAY: Checkpoint("id", 5, 1, 1)} else 1)
    reaped: list[int] = []

    def child_exited() -> bool:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            reaped.append(status)
        return bool(done)

    try:
        wait_for(child_exited, 10, "the forked child to load the checkpoint (a deadlock if it never does)")
    finally:
        if not reaped:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(reaped[0]) == 0


@pytest.mark.parametrize("call", ["os.write", "os.fsync", "os.replace"])
def test_an_os_error_during_a_store_leaves_the_old_checkpoint(tmp_path: Path, call: str) -> None:
    spool = _spool(tmp_path)
    old = {GATEWAY: Checkpoint("id", 10, 1, 1), REMOTE_WRITE: Checkpoint("id", 20, 2, 2)}
    for sink, ckpt in old.items():
        store_checkpoint(spool, ckpt, sink)
    before = os.listdir(tmp_path)
    for sink in SINKS:
        with mock.patch(call, side_effect=OSError(errno.ENOSPC, "injected: no space left on device")):
            with pytest.raises(OSError, match="injected"):
                store_checkpoint(spool, Checkpoint("id", 99, 9, 9), sink)
        assert load_progress(spool, "id") == old
        assert os.listdir(tmp_path) == before  # the failed store's temp file is gone


def test_a_short_write_is_never_renamed_into_place(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    store_checkpoint(spool, Checkpoint("id", 10, 1, 1))
    real_write = os.write
    with mock.patch("os.write", side_effect=lambda fd, data: real_write(fd, data[:5])):
        with pytest.raises(OSError, match="short write"):
            store_checkpoint(spool, Checkpoint("id", 99, 9, 9), REMOTE_WRITE)
    assert load_progress(spool, "id") == {GATEWAY: Checkpoint("id", 10, 1, 1)}


def test_a_planted_temp_symlink_of_another_sink_is_not_followed(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    precious = tmp_path.parent / f"{tmp_path.name}-precious"
    precious.write_bytes(b"precious\n")
    temp = tmp_path / f".{os.path.basename(checkpoint_path(spool))}.{REMOTE_WRITE}.tmp"
    os.symlink(precious, temp)
    store_checkpoint(spool, Checkpoint("id", 5, 1, 1), REMOTE_WRITE)
    assert precious.read_bytes() == b"precious\n"
    assert not temp.exists() and not temp.is_symlink()
    assert load_checkpoint(spool, "id", sink=REMOTE_WRITE) == Checkpoint("id", 5, 1, 1)


def test_a_load_in_a_signal_handler_does_not_wait_for_the_load_it_interrupted(tmp_path: Path) -> None:
    # finish() in a SIGTERM handler may interrupt finish() of its own thread inside a load that holds the
    # checkpoint's lock: the handler's own load must go through, not wait for a frame that cannot resume.
    spool = str(tmp_path / "w1-abcd.jsonl")
    Path(spool).write_bytes(b"x" * 10)
    store_checkpoint(spool, Checkpoint("id", 5, 1, 1))
    loaded: list[Checkpoint | None] = []

    def interrupted_load() -> None:
        with checkpoint._lock(spool):  # as the interrupted load holds it
            loaded.append(load_checkpoint(spool, "id"))  # as the handler's load

    thread = threading.Thread(target=interrupted_load, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the second load waited for a lock its own thread holds"
    assert loaded == [Checkpoint("id", 5, 1, 1)]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root (the node agent) gives files away")
def test_a_checkpoint_stored_by_root_belongs_to_the_pod_directory_s_owner(tmp_path: Path) -> None:
    # The node agent runs as root; the job's own uploader, as the job's user, must still read what it stored.
    spool = _spool(tmp_path)
    os.chown(os.path.dirname(spool), 54321, 54321)
    store_checkpoint(spool, Checkpoint("id", 120, 3, 4), REMOTE_WRITE)
    info = os.stat(checkpoint_path(spool))
    assert (info.st_uid, info.st_gid) == (54321, 54321)
    assert load_progress(spool, "id") == {REMOTE_WRITE: Checkpoint("id", 120, 3, 4)}


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


def test_a_checkpoint_replaced_while_it_is_opened_is_never_called_unsafe(
    spool_dir: str, pod: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rename replacing the checkpoint between open() and fstat() leaves the opened file with no name."""
    from runai.reporter.spool import Checkpoint, store_checkpoint

    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.close()
    stop = threading.Event()

    def store_again_and_again() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            store_checkpoint(writer.path, Checkpoint(writer.spool_id, 0, n, n))

    thread = threading.Thread(target=store_again_and_again)
    thread.start()
    loads = 0
    try:
        with caplog.at_level("WARNING"):
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                load_checkpoint(writer.path, writer.spool_id)
                loads += 1
    finally:
        stop.set()
        thread.join(10)
    unsafe = [r.getMessage() for r in caplog.records if "links" in r.getMessage() or "remove it" in r.getMessage()]
    assert loads > 1000 and not unsafe, (loads, unsafe[:3])
