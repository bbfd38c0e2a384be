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

__all__ = ["PodLock", "holder_pid", "lock_holders"]

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


def lock_holders(pod_dir: str) -> set[int]:
    """The pids the kernel says hold an flock on *pod_dir*'s lock file, as this process sees them (Linux's
    /proc/locks; empty where it cannot be read). The pid a lock file names is only what its holder wrote there:
    before signalling it, a caller checks that it is one of these, and so never signals a reused pid."""
    try:
        fd = open_in_pod_dir(os.path.join(pod_dir, LOCK_NAME), os.O_RDONLY)
    except OSError:
        return set()
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    # The device as well as the inode: an inode number alone names a file on every other file system too.
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    holders = set()
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 5112 fe:00:2146997 0 EOF"; a waiter's line has "->" after the number.
        fields = line.split()
        if len(fields) >= 6 and fields[1:4:2] == ["FLOCK", "WRITE"] and fields[4].isdigit() and fields[5] == key:
            holders.add(int(fields[4]))
    return holders
