"""Rotation of a spool writer's file: past its size bound, end it and go on in a new one.

A mixin of :class:`~.writer.SpoolWriter`, kept apart so that each module stays one concept: the writer's
report path and lifecycle there, the rare switch to a new file here.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import NamedTuple

from ._fds import point_at_devnull, size_of, unlink_in
from .records import encode_end, now_us

__all__ = ["SpoolFile"]


class SpoolFile(NamedTuple):
    """One file a writer wrote, as it was when the writer closed it."""

    path: str
    spool_id: str
    size: int


class _Rotating:
    """What rotation reads and changes of the writer (set by SpoolWriter.__init__)."""

    pod_dir: str
    path: str
    spool_id: str
    max_bytes: int
    closed: bool
    _fd: int
    _seq: itertools.count[int]
    _markers: int
    _tick_at_us: int
    _slow_lock: threading.RLock
    _rotated: list[tuple[int, str, str, float]]
    _released: list[SpoolFile]
    _devnull_fds: list[int]

    def _create(self) -> tuple[int, str, str]:
        raise NotImplementedError  # SpoolWriter's

    def _warn(self, message: str) -> None:
        raise NotImplementedError  # SpoolWriter's

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
                # A signal handler in this thread ran close() meanwhile (the lock is reentrant): the stream
                # is over, and the new file was never part of it.
                os.close(fd)
                unlink_in(self.pod_dir, os.path.basename(path))
                return
            # No call between the check above and this swap, so no signal handler can run close() in
            # between: it sees either the old file or both.
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

        A thread that read the old descriptor just before the rotation may still be about to write to it, so a
        rotated file is released only a second later, and its descriptor is not closed but pointed at
        /dev/null (dup2): a write that late is lost, never misdirected into whatever file would have reused
        the number. Releasing it drops the file's lock, which tells the uploader this writer is done with it.
        """
        keep = []
        for fd, path, spool_id, rotated_at in self._rotated:
            if time.monotonic() - rotated_at < 1.0:
                keep.append((fd, path, spool_id, rotated_at))
                continue
            size = size_of(fd)
            try:
                point_at_devnull(fd)
            except OSError:  # out of descriptors, say: a later rotation check tries again
                keep.append((fd, path, spool_id, rotated_at))
                continue
            self._devnull_fds.append(fd)
            self._released.append(SpoolFile(path, spool_id, size))
        if self.closed:  # close() ran meanwhile (a signal handler in this thread): it retired them all already
            return
        self._rotated = keep
