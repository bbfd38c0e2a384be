"""The self-pipe the uploader loop sleeps on, and that anything may wake."""

from __future__ import annotations

import math
import os
import select
import threading

__all__ = ["Wakeup"]


class Wakeup:
    """A self-pipe the loop sleeps on.

    ``set()`` may be called from any thread and from a signal handler, even
    while the main thread is inside :meth:`wait` or :meth:`clear`
    (``threading.Event`` takes a lock there, and a handler that sets it can
    deadlock the thread it interrupted). It never waits for its lock: whoever
    finds it taken skips, since the holder is either another ``set()`` (a
    wakeup is on its way) or :meth:`close` (the loop is over). The lock keeps
    ``close()`` from releasing the pipe's descriptor under a ``set()`` about to
    write to it: the number could be reused by any file opened next.
    """

    def __init__(self) -> None:
        self._read = self._write = -1
        self._poll = select.poll()  # not select(): it fails on descriptors past 1023
        self._lock = threading.Lock()

    def open(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll.register(self._read, select.POLLIN)

    def close(self) -> None:
        with self._lock:
            write, self._write = self._write, -1
            read, self._read = self._read, -1
        if read >= 0:
            self._poll.unregister(read)
        for fd in (write, read):
            if fd >= 0:
                os.close(fd)

    def set(self) -> None:
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._write >= 0:  # else not running: the loop checks its stop flag first thing
                os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: a wakeup is pending anyway
        finally:
            self._lock.release()

    def clear(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> None:
        self._poll.poll(math.ceil(timeout * 1000))
