"""The per-pod singleton lock: at most one uploader per pod spool directory.

The uploader holds an exclusive ``flock`` on ``<pod dir>/uploader.lock`` for
its lifetime and writes its pid there. The kernel releases the lock when the
process dies, so a crashed uploader never leaves a stale lock behind. The
file is opened without following a symlink (see :mod:`runai.reporter.safefs`):
``acquire`` truncates it, which must never reach another file.
"""
from __future__ import annotations

import fcntl
import os
import time
from typing import Callable

from ..safefs import open_in_pod_dir
from ._fds import OwnedFd
from .names import LOCK_NAME

__all__ = ["PodLock", "holder_pid"]

_RETRY_SECONDS = 0.02  # between two tries of a lock held by someone else


class PodLock(OwnedFd):
    """An exclusive, non-blocking lock on one pod directory (held while its descriptor is open)."""

    def __init__(self, pod_dir: str) -> None:
        self.path = os.path.join(pod_dir, LOCK_NAME)
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self, timeout: float = 0.0, stopped: Callable[[], bool] | None = None) -> bool:
        """Take the lock, retrying for *timeout* seconds or until *stopped()*; True on success.

        Safe to call when held. Reporters probe the lock with a brief shared
        lock; a short *timeout* keeps such a probe from being mistaken for a
        running uploader.
        """
        deadline = time.monotonic() + timeout
        while not self._try_acquire():
            if time.monotonic() >= deadline or (stopped is not None and stopped()):
                return False
            time.sleep(_RETRY_SECONDS)
        return True

    def _try_acquire(self) -> bool:
        if self._fd >= 0:
            return True
        fd = open_in_pod_dir(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Drop the lock (safe to call twice)."""
        self.close()


def holder_pid(pod_dir: str) -> int | None:
    """The pid of the live uploader holding *pod_dir*'s lock, or None if it is free."""
    path = os.path.join(pod_dir, LOCK_NAME)
    try:
        fd = open_in_pod_dir(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            # A shared lock conflicts with the holder's exclusive one but not
            # with another prober's, so probes never disturb each other.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isascii() and text.isdigit() else 0  # not int('²'): a ValueError
        return None
    finally:
        os.close(fd)
