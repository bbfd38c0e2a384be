"""The on-disk spool: its record format and its writer.

This module is the one place that knows what a spool line looks like: the
training process writes with :class:`SpoolWriter`, the uploader reads with
:func:`decode`. The format is documented in ``docs/spool-format.md``.

Every report becomes one JSON line, appended with a single ``os.write`` on an
``O_APPEND`` descriptor with no user-space buffer: once ``os.write`` returns the
line is in the kernel's page cache and survives a SIGKILL of the job.
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
import weakref
from typing import Callable, NamedTuple, Union

from .safefs import list_pod_dir, open_at, open_in_pod_dir, open_pod_dir

__all__ = [
    "FORMAT_VERSION",
    "LOG_FORMAT",
    "LOG_NAME",
    "MAX_LINE_BYTES",
    "MAX_NAME_CHARS",
    "MAX_VALUE_BYTES",
    "SPOOL_SUFFIX",
    "Record",
    "SpoolFile",
    "SpoolWriter",
    "decode",
    "encode_metric",
    "encode_parameter",
    "is_spool_file",
    "open_log",
    "spool_file_names",
    "writer_pid",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPOOL_SUFFIX = ".jsonl"
LOG_NAME = "uploader.log"  # the uploader's log, one per pod directory (its stderr too)
# Its lines: `runai-uploader status` finds the last error by the level after the time.
LOG_FORMAT = "%(asctime)s %(levelname)s pid=%(process)d %(name)s: %(message)s"
# The largest parameter value, in UTF-8 bytes, a report accepts (docs/api.md):
# one value must never make a line, or a push, too big to handle.
MAX_VALUE_BYTES = 64 << 10
# The longest spool line, newline excluded. A value JSON-escapes to at most
# 6x its UTF-8 bytes (a control character becomes \u00XX), so a valid line
# is well below this; a reader skips a longer one as damage, without holding it.
MAX_LINE_BYTES = 8 * MAX_VALUE_BYTES
# The longest report name, in characters (ASCII by the name rule): as for a
# value, one name must never make a line or a push too big to handle.
MAX_NAME_CHARS = 250

HEADER = "header"
METRIC = "metric"
PARAMETER = "parameter"
END = "end"

# JSON has no NaN or infinity, so non-finite metric values travel as these
# strings (the spellings Prometheus' text format uses) and stay valid JSON.
_NONFINITE_TO_JSON = {"nan": '"NaN"', "inf": '"+Inf"', "-inf": '"-Inf"'}
_NONFINITE_FROM_JSON = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}

# Names are checked against [a-zA-Z_][a-zA-Z0-9_]* before they get here, so
# they need no JSON escaping and string formatting is safe (and ~3x faster
# than json.dumps). Timestamps are integer microseconds: formatting a float
# costs as much as the write(2) itself (0.9 us each on the CI machine).
_PARAMETER_LINE = '{"seq":%d,"ts_us":%d,"kind":"parameter","name":"%s","value":%s}\n'
_END_LINE = '{"seq":%d,"ts_us":%d,"kind":"end"}\n'

Value = Union[float, str, None]


class Record(NamedTuple):
    """One decoded spool line."""

    seq: int
    ts: float  # seconds since the Unix epoch
    kind: str
    name: str = ""
    value: Value = None
    spool_id: str = ""


def is_spool_file(filename: str) -> bool:
    """True for a finished spool file name (temp files start with a dot)."""
    return filename.endswith(SPOOL_SUFFIX) and not filename.startswith(".")


def writer_pid(filename: str) -> int | None:
    """The pid of the process that wrote the spool file *filename* (``w<pid>-<id>.jsonl``), if it says."""
    pid = filename[1:].split("-", 1)[0] if filename.startswith("w") else ""
    # isdigit() alone lets through digits int() refuses, such as "²".
    return int(pid) if pid.isascii() and pid.isdecimal() else None


def open_log(pod_dir: str, flags: int) -> int:
    """A descriptor of *pod_dir*'s uploader log, opened without following a symlink (see safefs)."""
    return open_in_pod_dir(os.path.join(pod_dir, LOG_NAME), flags)


def now_us() -> int:
    return time.time_ns() // 1000


def spool_file_names(pod_dir: str) -> list[str]:
    """The finished spool files in *pod_dir*, sorted; [] if it cannot be listed (or is not private)."""
    try:
        names = list_pod_dir(pod_dir)
    except OSError:
        return []
    return sorted(n for n in names if is_spool_file(n))


def encode_metric(seq: int, ts_us: int, name: str, value: float) -> bytes:
    # The hot path's encoder: an f-string is compiled, about a third cheaper
    # than % on a format string. A finite float's repr is its shortest
    # round-trip decimal, a valid JSON number.
    text = repr(value) if _isfinite(value) else _NONFINITE_TO_JSON[repr(value)]
    return f'{{"seq":{seq},"ts_us":{ts_us},"kind":"metric","name":"{name}","value":{text}}}\n'.encode()


def encode_parameter(seq: int, ts_us: int, name: str, value: str) -> bytes:
    return (_PARAMETER_LINE % (seq, ts_us, name, _json_string(value))).encode()


def encode_end(seq: int, ts_us: int) -> bytes:
    return (_END_LINE % (seq, ts_us)).encode()


def encode_header(spool_id: str, pod_uuid: str, ts_us: int) -> bytes:
    header = {
        "seq": 0,
        "ts_us": ts_us,
        "kind": HEADER,
        "version": FORMAT_VERSION,
        "spool_id": spool_id,
        "pod_uuid": pod_uuid,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    return (json.dumps(header, separators=(",", ":")) + "\n").encode()


# The exact shape SpoolWriter gives a finite metric, which is nearly every
# line: matching it is strict validation too, at a third of json.loads' cost.
# Sequence numbers and timestamps are below 2**63 (19 digits at most): a
# longer one is damage, and would overflow a float.
_INT_BOUND = 1 << 63
_WRITER_METRIC = re.compile(
    rb'\{"seq":(0|[1-9][0-9]{0,18}),"ts_us":(0|[1-9][0-9]{0,18}),"kind":"metric",'
    rb'"name":"([A-Za-z_][A-Za-z0-9_]*)","value":(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\}'
)


def decode(line: bytes) -> Record:
    """Decode one line (without its newline); raise ValueError if it is not a valid record."""
    match = _WRITER_METRIC.fullmatch(line)
    if match is not None:
        seq, ts_us, name, value = match.groups()
        seq, ts_us = int(seq), int(ts_us)
        if seq < _INT_BOUND and ts_us < _INT_BOUND:
            return Record(seq, ts_us / 1e6, METRIC, name.decode(), float(value))
        raise ValueError("not a spool record: seq and ts_us must be below 2**63")
    try:
        obj = json.loads(line)
        seq, ts_us, kind = obj["seq"], obj["ts_us"], obj["kind"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a spool record: {exc}") from None
    if type(seq) is not int or type(ts_us) is not int or not (0 <= seq < _INT_BOUND and 0 <= ts_us < _INT_BOUND):
        raise ValueError("not a spool record: seq and ts_us must be integers from 0 to 2**63 - 1")
    ts = ts_us / 1e6
    if kind == METRIC:
        name, value = obj.get("name"), obj.get("value")
        if type(value) is str:
            value = _NONFINITE_FROM_JSON.get(value)
        elif type(value) is int:
            try:
                value = float(value)
            except OverflowError:  # as float() reads the same digits as text, and json.loads reads 1e999
                value = math.inf if value > 0 else -math.inf
        if not isinstance(name, str) or type(value) is not float:
            raise ValueError("metric record without a name or a numeric value")
        return Record(seq, ts, kind, name, value)
    if kind == PARAMETER:
        name, value = obj.get("name"), obj.get("value")
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError("parameter record without a name or a string value")
        return Record(seq, ts, kind, name, value)
    if kind == END:
        return Record(seq, ts, kind)
    if kind == HEADER:
        spool_id, version = obj.get("spool_id"), obj.get("version")
        if version != FORMAT_VERSION:
            raise ValueError(f"spool format version {version!r} is not supported (this reader knows {FORMAT_VERSION})")
        if not isinstance(spool_id, str) or not spool_id:
            raise ValueError("header record without a spool_id")
        return Record(seq, ts, kind, spool_id=spool_id)
    raise ValueError(f"unknown record kind {kind!r}")


class SpoolFile(NamedTuple):
    """One file a writer wrote, as it was when the writer closed it."""

    path: str
    spool_id: str
    size: int


# A writer checks its file's size for rotation once every this many + 1
# records (a mask on the sequence number): no per-report bookkeeping.
_ROTATION_CHECK_MASK = 0xFFF


class SpoolWriter:
    """Appends records to this process's own spool file in a pod directory.

    The writer holds a shared ``flock`` on its file for as long as it is open;
    the uploader takes that as "this writer is alive", and the kernel drops
    it when the process dies, however it dies.

    Thread-safe without a lock on the hot path: ``next()`` on an
    ``itertools.count`` is atomic, and so is one ``write(2)`` on an
    ``O_APPEND`` descriptor, so every record gets a unique sequence number and
    lands whole. (With several threads the file order may differ from the
    sequence order by a few records; the reader orders one file's records by
    sequence number, not position or time.)

    Past *max_bytes* a writer ends its file with an end marker and goes on in
    a new one (checked every 4096 records); a second or more later it lets go
    of the old file (see :meth:`_release_rotated`), so that the uploader can
    deliver, retire and, under the history bound, delete it while the job
    runs. With *fsync*, every report is fsync'ed before it returns (slow: a
    disk flush per report).

    Failures of the environment (unwritable directory, full disk) never raise:
    the report is counted in :attr:`lost`, and one warning is logged.

    *on_tick*, if given, is called from a report at most about once a second
    (judged by the timestamp the report computes anyway, so it costs no
    system call); it must neither block nor raise.
    """

    def __init__(self, pod_dir: str, pod_uuid: str, *, max_bytes: int = 64 << 20, fsync: bool = False,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.pod_dir = pod_dir
        self.pod_uuid = pod_uuid
        self.max_bytes = max_bytes
        self.path = ""
        self.spool_id = ""
        self.lost = 0  # reports that could not be written
        self.records = 0  # reports written; set by close()
        self.files: list[SpoolFile] = []  # every file written, oldest first; set by close()
        self.closed = False
        self._sync = fsync
        # Earlier files: (fd, path, spool_id, rotated at) while still open, then
        # SpoolFile once released (see _release_rotated).
        self._rotated: list[tuple[int, str, str, float]] = []
        self._released: list[SpoolFile] = []
        self._devnull_fds: list[int] = []
        self._markers = 0  # sequence numbers spent on end markers of rotated files
        self._fd = -1
        self._seq = itertools.count(1)
        self._torn = False  # a short write left a partial line behind
        self._forked = False  # set in a child process by the fork hook
        self._warned = False
        self._on_tick = on_tick
        self._tick_at_us = 0  # the first report ticks
        # For the rare paths only. Reentrant, because a signal handler that calls
        # finish() may interrupt this very thread inside one of them: with a
        # plain Lock, its close() would wait for itself for ever.
        self._slow_lock = threading.RLock()
        _watch_forks(self)
        self._open()

    # -- the hot path ---------------------------------------------------

    def write_metric(self, name: str, value: float) -> None:
        ts_us = _time_ns() // 1000
        self._append(encode_metric(self._next_seq(), ts_us, name, value))
        if ts_us >= self._tick_at_us:
            self._tick(ts_us)

    def write_parameter(self, name: str, value: str) -> None:
        ts_us = _time_ns() // 1000
        self._append(encode_parameter(self._next_seq(), ts_us, name, value))
        if ts_us >= self._tick_at_us:
            self._tick(ts_us)

    def _next_seq(self) -> int:
        if self._forked:
            self._after_fork()
        seq = next(self._seq)
        if not seq & _ROTATION_CHECK_MASK:
            self._maybe_rotate()
        return seq

    def _append(self, data: bytes) -> None:
        if self._torn:
            # Terminate the torn line first so it cannot swallow this record.
            # The flag stays set until a write goes through whole.
            data = b"\n" + data
        try:
            if _write(self._fd, data) == len(data):
                self._torn = False
                if self._sync:
                    os.fsync(self._fd)
                return
            self._torn = True  # part of the line is in the file
            self._lose(OSError(errno.ENOSPC, "short write"))
        except OSError as exc:
            self._lose(exc)

    def _tick(self, ts_us: int) -> None:
        # Several threads may get here at once; on_tick guards itself.
        self._tick_at_us = ts_us + 1_000_000
        if self._on_tick is not None:
            try:
                self._on_tick()
            except Exception:  # a report must never fail for it
                logger.debug("the spool writer's tick failed", exc_info=True)

    # -- lifecycle ------------------------------------------------------

    def close(self) -> None:
        """Append the end-of-stream record and close the file (safe to call twice)."""
        with self._slow_lock:
            if self.closed:
                return
            self.closed = True
            if self._forked:
                # A forked child that never reported owns no stream: drop its
                # copies of the parent's descriptors and leave the parent's files be.
                self._drop_inherited()
                return
            if self._fd < 0:
                return
            end_seq = next(self._seq)
            self.records = end_seq - 1 - self.lost - self._markers
            end = encode_end(end_seq, now_us())
            try:
                _write(self._fd, b"\n" + end if self._torn else end)
                if self._sync:
                    os.fsync(self._fd)
            except OSError:
                pass  # not a lost report: once the lock goes, the uploader ends the file without it
            files = list(self._released)
            open_fds = [fd for fd, *_ in self._rotated] + [self._fd]
            for fd, path, spool_id, _ in [*self._rotated, (self._fd, self.path, self.spool_id, 0.0)]:
                files.append(SpoolFile(path, spool_id, _size(fd)))
            self.files = files
            # Other threads may have read these descriptors and be about to
            # write: a closed number could be reused by any file the program
            # opens next, and a late report would land in it. So they point at
            # /dev/null (which also drops the files' locks) and are released
            # only a second later.
            self._fd = -1
            _retire(open_fds, self._devnull_fds)
            self._rotated, self._released, self._devnull_fds = [], [], []

    def _maybe_rotate(self) -> None:
        if self._tick_at_us > now_us() + 1_000_000:
            self._tick_at_us = 0  # the wall clock stepped back: tick now, not when it catches up
        with self._slow_lock:
            if self._fd < 0 or self.closed:
                return
            self._release_rotated()
            try:
                if os.fstat(self._fd).st_size < self.max_bytes:
                    return
                fd, path, spool_id = self._create()
            except OSError as exc:
                self._warn(f"cannot start a new spool file in {self.pod_dir!r} ({exc}); going on in {self.path!r}")
                return
            old_fd = self._fd
            entry = (old_fd, self.path, self.spool_id, time.monotonic())
            if self.closed:
                # A signal handler in this thread ran close() meanwhile (the lock is
                # reentrant): the stream is over, and the new file was never part of it.
                os.close(fd)
                _unlink_in(self.pod_dir, os.path.basename(path))
                return
            # No call between the check above and this swap, so no signal handler
            # can run close() in between: it sees either the old file or both.
            self._fd, self.path, self.spool_id = fd, path, spool_id
            self._rotated.append(entry)
            # The old file is complete: its end marker lets the uploader flush it.
            self._markers += 1
            try:
                os.write(old_fd, encode_end(next(self._seq), now_us()))
            except OSError:
                pass

    def _release_rotated(self) -> None:
        """Let go of rotated files, so the uploader can retire them and their space can be freed.

        A thread that read the old descriptor just before the rotation may
        still be about to write to it, so a rotated file is released only a
        second later, and its descriptor is not closed but pointed at
        /dev/null (dup2): a write that late is lost, never misdirected into
        whatever file would have reused the number. Releasing it drops the
        file's lock, which tells the uploader this writer is done with it.
        """
        keep = []
        for fd, path, spool_id, rotated_at in self._rotated:
            if time.monotonic() - rotated_at < 1.0:
                keep.append((fd, path, spool_id, rotated_at))
                continue
            size = _size(fd)
            try:
                _point_at_devnull(fd)
            except OSError:  # out of descriptors, say: a later rotation check tries again
                keep.append((fd, path, spool_id, rotated_at))
                continue
            self._devnull_fds.append(fd)
            self._released.append(SpoolFile(path, spool_id, size))
        self._rotated = keep

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _open(self) -> None:
        try:
            self._fd, self.path, self.spool_id = self._create()
        except OSError as exc:
            self._warn(f"cannot create a spool file in {self.pod_dir!r} ({exc}); reports will be lost")

    @property
    def offset(self) -> int:
        """The size of the last file written, once :meth:`close` has run (0 before)."""
        return self.files[-1].size if self.files else 0

    def _create(self) -> tuple[int, str, str]:
        """A new, locked spool file with its header: (fd, path, spool_id)."""
        spool_id = secrets.token_hex(16)
        name = f"w{os.getpid()}-{spool_id[:8]}{SPOOL_SUFFIX}"
        tmp = "." + name + ".tmp"
        header = encode_header(spool_id, self.pod_uuid, now_us())
        # Created and checked private (see safefs); everything below is
        # relative to this descriptor, so a swapped directory is never used.
        dir_fd = open_pod_dir(self.pod_dir, create=True)
        fd = -1
        try:
            fd = open_at(dir_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, where=self.pod_dir)
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.write(fd, header) != len(header):
                raise OSError(errno.ENOSPC, "short write of the spool header")
            # Publish under the final name only once header and lock are in
            # place, so the uploader never sees a file it cannot identify.
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            if fd >= 0:
                os.close(fd)
                _unlink_quietly(tmp, dir_fd)
            raise
        finally:
            os.close(dir_fd)
        return fd, os.path.join(self.pod_dir, name), spool_id

    def _after_fork(self) -> None:
        # The child shares the parent's descriptor; writing through it would
        # interleave two sequence counters in one file. Start its own file.
        self._slow_lock = threading.RLock()  # a thread of the parent may have held it
        with self._slow_lock:
            if not self._forked:
                return
            self._drop_inherited()  # the parent keeps its locks and files
            self._released, self._markers = [], 0
            self._forked = self._torn = self._warned = False
            self._seq, self.lost, self.records = itertools.count(1), 0, 0
            self._open()

    def _drop_inherited(self) -> None:
        """Close a forked child's copies of the parent's descriptors."""
        self._close_fd()
        for fd in [entry[0] for entry in self._rotated] + self._devnull_fds:
            os.close(fd)
        self._rotated, self._devnull_fds = [], []

    def _lose(self, exc: OSError) -> None:
        with self._slow_lock:
            self.lost += 1
        self._warn(f"cannot write to the spool file {self.path!r} ({exc}); reports are being lost")

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("%s; finish() will report how many", message)


# Bound once: attribute lookups on the hot path cost as much as the work.
_isfinite = math.isfinite
_json_string = json.encoder.encode_basestring_ascii  # json.dumps' C core for one str, without its setup
_time_ns = time.time_ns
_write = os.write

# Writers of this process, told by one fork hook that they live in a child.
# A hook beats comparing os.getpid() per report, which is a system call.
_writers: weakref.WeakSet[SpoolWriter] = weakref.WeakSet()
_fork_hook_registered = False


def _watch_forks(writer: SpoolWriter) -> None:
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=_mark_forked)
        _fork_hook_registered = True
    _writers.add(writer)


def _mark_forked() -> None:
    global _retired_lock
    _retired_lock = threading.Lock()  # a thread of the parent may have held it
    for writer in list(_writers):
        writer._forked = True


# Descriptors of closed writers, pointed at /dev/null, with the time they were
# retired: released a second later, by a later close (see SpoolWriter.close).
_retired: list[tuple[int, float]] = []
_retired_lock = threading.Lock()
_RETIRE_SECONDS = 1.0


def _point_at_devnull(fd: int) -> None:
    """Make *fd* refer to /dev/null (its file, and any lock on it, are let go)."""
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)


def _retire(fds: list[int], devnull_fds: list[int]) -> None:
    """Point *fds* at /dev/null, keep them and *devnull_fds* a second, and release older ones."""
    now = time.monotonic()
    for fd in fds:
        try:
            _point_at_devnull(fd)
        except OSError:  # out of descriptors, say: closing is the lesser harm
            os.close(fd)
            continue
        _retired.append((fd, now))
    _retired.extend((fd, now) for fd in devnull_fds)
    # Never wait: a signal handler may have interrupted the holder in this thread.
    if _retired_lock.acquire(blocking=False):
        try:
            while _retired and now - _retired[0][1] >= _RETIRE_SECONDS:
                os.close(_retired.pop(0)[0])
        finally:
            _retired_lock.release()


def _size(fd: int) -> int:
    try:
        return os.fstat(fd).st_size
    except OSError:
        return 0


def _unlink_in(pod_dir: str, name: str) -> None:
    """Remove *name* from *pod_dir* if it can; never raises."""
    try:
        dir_fd = open_pod_dir(pod_dir)
    except OSError:
        return
    try:
        _unlink_quietly(name, dir_fd)
    finally:
        os.close(dir_fd)


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
