"""Checkpoints: how far into one spool file each sink has acknowledged.

A checkpoint sits beside its spool file (``w123-ab12cd34.jsonl`` ->
``w123-ab12cd34.ckpt``) and is the single commit point of delivery: a sink's
entry is written only after its receiver answered 2xx, atomically (temp file,
fsync, rename), so a reader sees the old checkpoint or the new one, never a
mix. Both go through :mod:`runai.reporter.safefs`: no symlink is ever followed.

One file holds the progress of every sink (:data:`SINKS`). Format 1, the flat
object of the gateway-only uploader, is read as the gateway's progress and is
still what a store writes while the gateway is the only sink with progress, so
that an older uploader (or ``status``) reading the same spool loses nothing.
Format 2 (``{"version": 2, "spool_id", "sinks": {name: entry}}``) is written
once another sink has progress. Storing one sink's entry is a read-modify-write
that keeps the others'; stores into one file are serialised in-process (one
uploader thread per sink), and only the pod's single uploader ever stores.

Loading is tolerant, sink by sink: an entry that is missing, unreadable, for
another spool file, or pointing past the end of the file means "replay from
the start" to that sink, and costs no other sink its progress. Replaying is
harmless (a push replaces values; a remote-write receiver keeps a resent sample
once, VictoriaMetrics with deduplication on), while skipping would lose data.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any, Iterable, NamedTuple

from ..safefs import open_in_pod_dir
from ._replace import replace_file
from .names import checkpoint_path

__all__ = [
    "CHECKPOINT_VERSION",
    "GATEWAY",
    "REMOTE_WRITE",
    "SINKS",
    "Checkpoint",
    "load_checkpoint",
    "load_progress",
    "store_checkpoint",
]

logger = logging.getLogger(__name__)

GATEWAY = "gateway"  # the Pushgateway sink
REMOTE_WRITE = "remote_write"  # the Prometheus remote-write sink
SINKS = (GATEWAY, REMOTE_WRITE)  # every sink a checkpoint can hold progress for, in the order written
CHECKPOINT_VERSION = 2  # the newest format this module reads and writes

_MAX_BYTES = 4096  # a checkpoint is about 150 bytes a sink; read no more than this of whatever is there
_STRIPES = 64


def _new_locks() -> tuple[threading.RLock, ...]:
    return tuple(threading.RLock() for _ in range(_STRIPES))


# A store's read-modify-write must not interleave with another's for the same file, nor a load with a
# rename (safefs reads a file replaced mid-open as missing: a sink would replay it all). Striping bounds
# the locks without tracking files. Reentrant: finish() in a signal handler may interrupt a load of its
# own thread that holds one. A forked child must not inherit one held by a thread it lacks.
_LOCKS = _new_locks()
_fork_hook_registered = False


def _reset_locks() -> None:
    global _LOCKS
    _LOCKS = _new_locks()


@dataclass(frozen=True)
class Checkpoint:
    spool_id: str  # the header id of the spool file this applies to
    offset: int  # bytes of the spool file delivered (always at a line boundary)
    records: int  # reports delivered from it (header and end marker excluded)
    last_seq: int  # the sequence number of the last line covered
    ended: bool = False  # the writer's end-of-stream marker is covered
    rejected: int = 0  # values the receiver refused by name (logged by name in uploader.log)
    # Written just before a push, and only by a sink whose receiver can refuse a resend (remote write): the
    # last seq that push covers, so that after a crash between the receiver's 2xx and the next checkpoint the
    # records up to it are known to be perhaps there already. 0: no push under way past this checkpoint.
    sent_seq: int = 0


class _Stored(NamedTuple):
    """A checkpoint file as read: its spool id, and each sink's entry (or why it is unusable)."""

    spool_id: str
    entries: dict[str, Checkpoint | Exception]


def load_checkpoint(
    spool_path: str, spool_id: str, spool_size: int | None = None, *, sink: str = GATEWAY
) -> Checkpoint | None:
    """The checkpoint of *spool_path* for *sink*, or None to replay it from the start to that sink."""
    return load_progress(spool_path, spool_id, spool_size, sinks=(sink,)).get(sink)


def load_progress(
    spool_path: str, spool_id: str, spool_size: int | None = None, *, sinks: Iterable[str] = SINKS, quiet: bool = False
) -> dict[str, Checkpoint]:
    """The checkpoint of *spool_path* for each of *sinks* that has a usable one (absent: replay to it).

    What makes a checkpoint unusable is logged as a warning, unless *quiet*
    (a caller that polls, such as ``finish()``: the uploader logs it).
    """
    wanted = _checked(sinks)
    warning = logger.debug if quiet else logger.warning
    path = checkpoint_path(spool_path)
    try:
        with _lock(path):
            stored = _read(path)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        warning("checkpoint %s is unreadable (%s); replaying %s from the start", path, exc, spool_path)
        return {}
    if stored.spool_id != spool_id:
        warning("checkpoint %s belongs to another spool file; replaying %s from the start", path, spool_path)
        return {}
    progress = {}
    for sink in wanted:
        entry = stored.entries.get(sink)
        where = path if sink == GATEWAY else f"{path} ({sink})"  # gateway-only messages stay as they were
        if isinstance(entry, Exception):
            warning("checkpoint %s is unreadable (%s); replaying %s from the start", where, entry, spool_path)
        elif entry is not None and (entry.offset < 0 or (spool_size is not None and entry.offset > spool_size)):
            warning("checkpoint %s points past the end of %s; replaying it from the start", where, spool_path)
        elif entry is not None:
            progress[sink] = entry
    return progress


def store_checkpoint(spool_path: str, ckpt: Checkpoint, sink: str = GATEWAY) -> None:
    """Atomically replace *sink*'s entry in the checkpoint of *spool_path*, keeping the others' (raises OSError).

    The other sinks' entries are kept if they are readable and for the same
    spool file; anything else there would read as "replay from the start"
    anyway.
    """
    _checked((sink,))
    path = checkpoint_path(spool_path)
    with _lock(path):
        others = {name: entry for name, entry in _usable_entries(path, ckpt.spool_id).items() if name != sink}
        # A temp name per sink: two sinks' stores can never write into one temp file, whatever the locking.
        name = os.path.basename(path)
        tmp = f".{name}.tmp" if sink == GATEWAY else f".{name}.{sink}.tmp"
        replace_file(path, tmp, _encode(ckpt, sink, others))


def _lock(path: str) -> threading.RLock:
    """The in-process lock of the checkpoint at *path*."""
    global _fork_hook_registered
    if not _fork_hook_registered:  # on first use, not at import
        _fork_hook_registered = True
        os.register_at_fork(after_in_child=_reset_locks)
    return _LOCKS[hash(path) % _STRIPES]


def _checked(sinks: Iterable[str]) -> tuple[str, ...]:
    sinks = tuple(sinks)
    for sink in sinks:
        if sink not in SINKS:
            raise ValueError(f"unknown sink {sink!r}: a checkpoint holds progress for {', '.join(SINKS)}")
    return sinks


def _read(path: str) -> _Stored:
    """Parse the checkpoint at *path* (FileNotFoundError, OSError, or ValueError/TypeError/KeyError if damaged)."""
    with open(open_in_pod_dir(path, os.O_RDONLY), "rb") as f:
        data = f.read(_MAX_BYTES)
    try:
        obj = json.loads(data)
    except RecursionError:  # "[[[[..." nested deep: damaged like any other unparsable file
        raise ValueError("nested too deep to be a checkpoint") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    version = obj.get("version", 1)  # format 1 had no version field
    if version == 1 and type(version) is int:
        # As in format 1's days, a damaged entry makes the whole file unreadable: same warning, same outcome.
        spool_id = str(obj["spool_id"])
        return _Stored(spool_id, {GATEWAY: _entry(spool_id, obj)})
    if version != CHECKPOINT_VERSION or type(version) is not int:
        raise ValueError(f"format {version!r} is not one this uploader reads (1 or {CHECKPOINT_VERSION})")
    spool_id, sinks = obj["spool_id"], obj["sinks"]
    if not isinstance(spool_id, str) or not isinstance(sinks, dict):
        raise ValueError("spool_id is not a string or sinks is not an object")
    return _Stored(spool_id, {name: _entry_or_error(spool_id, sinks[name]) for name in SINKS if name in sinks})


def _entry_or_error(spool_id: str, obj: object) -> Checkpoint | Exception:
    try:
        return _entry(spool_id, obj)
    except (ValueError, TypeError, KeyError) as exc:
        return exc


def _entry(spool_id: str, obj: Any) -> Checkpoint:
    if not isinstance(obj, dict):
        raise ValueError("an entry is not a JSON object")
    return Checkpoint(
        spool_id=spool_id,
        offset=_count(obj["offset"]),
        records=_count(obj["records"]),
        last_seq=_count(obj["last_seq"]),
        ended=bool(obj.get("ended", False)),
        rejected=_count(obj.get("rejected", 0)),
        sent_seq=_count(obj.get("sent_seq", 0)),
    )


def _count(value: object) -> int:
    """*value* if it is a JSON integer; ValueError for anything else (a float such as 1e999 too)."""
    if type(value) is not int:
        raise ValueError(f"{value!r} is not an integer")
    return value


def _usable_entries(path: str, spool_id: str) -> dict[str, Checkpoint]:
    """The readable entries of the checkpoint at *path* for *spool_id*; {} when there is none that is."""
    try:
        stored = _read(path)
    except (OSError, ValueError, TypeError, KeyError):
        return {}  # missing, damaged or planted: it reads as "replay", so there is nothing to keep
    if stored.spool_id != spool_id:
        return {}
    return {name: entry for name, entry in stored.entries.items() if isinstance(entry, Checkpoint)}


def _encode(ckpt: Checkpoint, sink: str, others: dict[str, Checkpoint]) -> bytes:
    if sink == GATEWAY and not others and not ckpt.sent_seq:
        return json.dumps(_fields(ckpt, keep_id=True), separators=(",", ":")).encode()  # format 1, byte for byte
    entries = {**others, sink: ckpt}
    sinks = {name: _fields(entries[name]) for name in SINKS if name in entries}
    obj = {"version": CHECKPOINT_VERSION, "spool_id": ckpt.spool_id, "sinks": sinks}
    return json.dumps(obj, separators=(",", ":")).encode()


def _fields(ckpt: Checkpoint, keep_id: bool = False) -> dict[str, object]:
    fields = asdict(ckpt)
    if not keep_id:
        del fields["spool_id"]  # once, at the top
    if not ckpt.sent_seq:
        del fields["sent_seq"]  # the usual case; and older uploaders' files stay byte for byte the same
    return fields
