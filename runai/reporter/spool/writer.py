"""The spool writer: this process's own spool file in a pod directory.

Every report becomes one JSON line (see :mod:`.records`), appended with a single ``os.write`` on an
``O_APPEND`` descriptor with no user-space buffer: once ``os.write`` returns the line is in the kernel's page
cache and survives a SIGKILL of the job.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Container

from ._fds import create_spool_file, retire, size_of, wait_for_calls, watch_forks
from ._fork import _Forking
from ._rotation import SpoolFile, _Rotating
from .records import encode_end, encode_metric, encode_parameter, now_us

__all__ = ["SpoolFile", "SpoolWriter"]

logger = logging.getLogger(__name__)


_Check = Callable[[Any, Any], "tuple[str, float]"]


def _trusted(name: str, value: float) -> tuple[str, float]:
    return name, value


# A writer checks its file's size for rotation once every this many + 1 records (a mask on the sequence
# number): no per-report bookkeeping.
_ROTATION_CHECK_MASK = 0xFFF
# How long close() waits for reports that other threads had begun before it (a write blocked on a full
# disk or a stalled NFS server, say); those still writing then are counted lost, never silently so.
_IN_FLIGHT_SECONDS = 2.0


class SpoolWriter(_Rotating, _Forking):
    """Appends records to this process's own spool file in a pod directory.

    It holds a shared ``flock`` on its file while open; the uploader takes that as "this writer is alive", and
    the kernel drops it when the process dies, however it dies.

    Thread-safe without a lock on the hot path: ``next()`` on an ``itertools.count`` is atomic, and so is one
    ``write(2)`` on an ``O_APPEND`` descriptor, so every record gets a unique sequence number and lands whole.
    (With several threads the file order may differ from the sequence order by a few records; the reader
    orders one file's records by sequence number.)

    Past *max_bytes* it ends its file with an end marker and goes on in a new one (checked every 4096 records);
    a second or more later it lets go of the old file (see :meth:`_release_rotated`), so that the uploader can
    deliver, retire and, under the history bound, delete it while the job runs. With *fsync*, every report is
    fsync'ed before it returns (a disk flush per report).

    Failures of the environment (unwritable directory, full disk) never raise: the report is counted in
    :attr:`lost`, and one warning is logged. *on_tick* is called from a report about once a second at most
    (judged by the report's own timestamp: no system call); it must neither block nor raise.

    A metric whose name is not in *names*, or whose value is not a float, goes through *check(name, value)*
    first, which returns them as they are to be written or raises (the Reporter's checks; by default they are
    trusted as given). With *closed_error*, a metric after :meth:`close` raises ValueError with it.
    *receivers*: the kinds of receiver its job was configured with, for every file's header (None: not said).
    """

    def __init__(
        self,
        pod_dir: str,
        pod_uuid: str,
        *,
        max_bytes: int = 64 << 20,
        fsync: bool = False,
        on_tick: Callable[[], None] | None = None,
        check: _Check = _trusted,
        names: Container[str] = frozenset(),
        closed_error: str = "",
        receivers: tuple[str, ...] | None = None,
    ) -> None:
        self.pod_dir, self.pod_uuid, self.max_bytes, self.receivers = pod_dir, pod_uuid, max_bytes, receivers
        self.path = self.spool_id = ""
        self.lost = 0  # reports that could not be written
        self.records = 0  # reports written; set by close()
        self.files: list[SpoolFile] = []  # every file written, oldest first; set by close()
        self._sync = fsync
        # Earlier files: (fd, path, spool_id, rotated at) while still open, then SpoolFile once released.
        self._rotated: list[tuple[int, str, str, float]] = []
        self._released: list[SpoolFile] = []
        self._devnull_fds: list[int] = []
        self._markers = 0  # sequence numbers spent on end markers of rotated files
        self._fd, self._seq = -1, itertools.count(1)
        self._torn = False  # a short write left a partial line behind
        self.closed = self._fork_pending = self._warned = False  # _fork_pending: see _forked
        self._on_tick, self._check, self._names, self._closed_error = on_tick, check, names, closed_error
        self._slow = fsync  # see _recheck
        self._tick_at_us = 0  # the first report ticks
        # For the rare paths only. Reentrant: a signal handler that calls finish() may interrupt this very
        # thread inside one of them, and with a plain Lock its close() would wait for itself for ever.
        self._slow_lock = threading.RLock()
        watch_forks(self)
        self._open()

    # -- the hot path ---------------------------------------------------

    def write_metric(self, name: str, value: float) -> None:
        """Report a numeric metric; raises TypeError/ValueError for bad input, ValueError once finished.

        A Reporter's ``reportMetric`` is this method of its writer (one Python
        frame a report); ``help(reporter.reportMetric)`` shows this text.
        """
        # One Python frame for the whole report (a Reporter binds this method as its reportMetric): every
        # call and attribute lookup saved is a measurable share of a ~2.5 us report.
        if type(name) is not str or name not in self._names or type(value) is not float:
            if self.closed and self._closed_error:  # rare path: the finished error comes before the checks
                raise ValueError(self._closed_error)
            name, value = self._check(name, value)
        if self._slow:  # a fork, a torn line, fsync or close(): the general path
            if self.closed and self._closed_error:
                raise ValueError(self._closed_error)
            self._write_general(encode_metric, name, value)
            return
        seq = next(self._seq)
        if not seq & _ROTATION_CHECK_MASK:
            self._maybe_rotate()
        ts_us = _time_ns() // 1000
        # encode_metric's line, formatted here to save a call; a non-finite value goes through it.
        data = (
            f'{{"seq":{seq},"ts_us":{ts_us},"kind":"metric","name":"{name}","value":{value!r}}}\n'.encode()
            if _isfinite(value)
            else encode_metric(seq, ts_us, name, value)
        )
        try:
            if _write(self._fd, data) != len(data):
                self._short_write()
        except OSError as exc:
            self._lose(exc)
        if ts_us >= self._tick_at_us:
            self._tick(ts_us)

    def write_parameter(self, name: str, value: str) -> None:
        self._write_general(encode_parameter, name, value)

    def _write_general(self, encode: Callable[[int, int, str, Any], bytes], name: str, value: Any) -> None:
        if self.closed and self._closed_error:  # checked again inside the call close() waits for
            raise ValueError(self._closed_error)
        ts_us = _time_ns() // 1000
        if self._forked:
            self._after_fork()
        seq = next(self._seq)
        if not seq & _ROTATION_CHECK_MASK:
            self._maybe_rotate()
        self._append(encode(seq, ts_us, name, value))
        if ts_us >= self._tick_at_us:
            self._tick(ts_us)

    def _append(self, data: bytes) -> None:
        if self._torn:
            # Terminate the torn line first so it cannot swallow this record.
            # The flag stays set until a write goes through whole.
            data = b"\n" + data
        try:
            if _write(self._fd, data) == len(data):
                if self._torn:
                    self._torn = False
                    self._recheck()
                if self._sync:
                    os.fsync(self._fd)
                return
            self._short_write()
        except OSError as exc:
            self._lose(exc)

    def _short_write(self) -> None:
        self._torn = self._slow = True  # part of the line is in the file
        self._lose(OSError(errno.ENOSPC, "short write"))

    def _recheck(self) -> None:  # reports take the general path while anything needs it
        self._slow = slow = self._torn or self._sync or self.closed or self._fork_pending
        if not slow and (self.closed or self._torn or self._fork_pending):
            # close() or a short write (another thread, or a signal handler in this one) set its flag after
            # it was read above, and the store may have undone its _slow = True: never let it go back.
            self._slow = True

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
            self.closed = self._slow = True
            if self._forked:  # a forked child that never reported owns no stream: leave the parent's files be
                self._drop_inherited()
                return
            if self._fd < 0:
                return
        # Reports that other threads began before the flag was set may not have written yet: the end marker,
        # the sizes and the descriptors' retirement wait for them (without the lock, which they may need).
        late = wait_for_calls(_REPORTING, _IN_FLIGHT_SECONDS)
        with self._slow_lock:
            self.lost += late
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
                files.append(SpoolFile(path, spool_id, size_of(fd)))
            self.files = files
            # Other threads may have read these descriptors and be about to write: a closed number could be
            # reused by any file the program opens next, and a late report would land in it. So they point
            # at /dev/null (which also drops the files' locks) and are released only a second later.
            self._fd = -1
            retire(open_fds, self._devnull_fds)
            self._rotated, self._released, self._devnull_fds = [], [], []

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
        return create_spool_file(self.pod_dir, self.pod_uuid, self.receivers)

    def _lose(self, exc: OSError) -> None:
        with self._slow_lock:
            self.lost += 1
        self._warn(f"cannot write to the spool file {self.path!r} ({exc}); reports are being lost")

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("%s; finish() will report how many", message)


# The calls a report goes through (all beneath one of these): close() waits for those in flight.
_REPORTING = frozenset(method.__code__ for method in (SpoolWriter.write_metric, SpoolWriter.write_parameter))

# Bound once: attribute lookups on the hot path cost as much as the work.
_time_ns = time.time_ns
_write = os.write
_isfinite = math.isfinite
