"""The package's descriptor helpers: creating a spool file, owning and retiring descriptors, noticing a fork.

A descriptor other threads may still write through is never closed at once:
its number could be reused by any file the program opens next, and a late
report would land there. It is pointed at /dev/null instead and closed a
second later.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import sys
import threading
import time
import weakref
from types import CodeType, FrameType
from typing import AbstractSet, Protocol, TypeVar

from ..safefs import open_at, open_pod_dir
from .names import SPOOL_SUFFIX
from .records import encode_header, now_us

__all__ = [
    "OwnedFd",
    "after_fork",
    "create_spool_file",
    "point_at_devnull",
    "retire",
    "size_of",
    "unlink_in",
    "unlink_quietly",
    "wait_for_calls",
    "watch_forks",
]


_Owner = TypeVar("_Owner", bound="OwnedFd")


class OwnedFd:
    """Owns one descriptor, closed once: by :meth:`close` (safe to call twice) or by leaving a ``with`` block."""

    _fd = -1

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self: _Owner) -> _Owner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_spool_file(pod_dir: str, pod_uuid: str, receivers: tuple[str, ...] | None = None) -> tuple[int, str, str]:
    """A new spool file in *pod_dir*, with its header (naming *receivers*, if given) and a shared lock:
    (fd, path, spool_id)."""
    spool_id = secrets.token_hex(16)
    name = f"w{os.getpid()}-{spool_id[:8]}{SPOOL_SUFFIX}"
    tmp = "." + name + ".tmp"
    header = encode_header(spool_id, pod_uuid, now_us(), receivers)
    # Created and checked private (see safefs); everything below is
    # relative to this descriptor, so a swapped directory is never used.
    dir_fd = open_pod_dir(pod_dir, create=True)
    fd = -1
    try:
        fd = open_at(dir_fd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, where=pod_dir)
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.write(fd, header) != len(header):
            raise OSError(errno.ENOSPC, "short write of the spool header")
        # Publish under the final name only once header and lock are in
        # place, so the uploader never sees a file it cannot identify.
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        if fd >= 0:
            os.close(fd)
            unlink_quietly(tmp, dir_fd)
        raise
    finally:
        os.close(dir_fd)
    return fd, os.path.join(pod_dir, name), spool_id


class _Forkable(Protocol):
    _forked: bool  # set in a child process by the fork hook


# Writers of this process, told by one fork hook that they live in a child.
# A hook beats comparing os.getpid() per report, which is a system call.
_writers: weakref.WeakSet[_Forkable] = weakref.WeakSet()
_fork_hook_registered = False


def watch_forks(writer: _Forkable) -> None:
    """Set ``writer._forked`` in a child process forked from this one."""
    global _fork_hook_registered
    if not _fork_hook_registered:
        os.register_at_fork(after_in_child=after_fork)
        _fork_hook_registered = True
    _writers.add(writer)


def after_fork() -> None:
    global _retired_lock
    _retired_lock = threading.Lock()  # a thread of the parent may have held it
    for writer in list(_writers):
        writer._forked = True


# Descriptors of closed writers, pointed at /dev/null, with the time they were
# retired: released a second later, by a later close (see SpoolWriter.close).
_retired: list[tuple[int, float]] = []
_retired_lock = threading.Lock()
_RETIRE_SECONDS = 1.0


def point_at_devnull(fd: int) -> None:
    """Make *fd* refer to /dev/null (its file, and any lock on it, are let go)."""
    devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)


def retire(fds: list[int], devnull_fds: list[int]) -> None:
    """Point *fds* at /dev/null, keep them and *devnull_fds* a second, and release older ones."""
    now = time.monotonic()
    for fd in fds:
        try:
            point_at_devnull(fd)
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


def size_of(fd: int) -> int:
    """The size of the file open as *fd*; 0 if it cannot be told."""
    try:
        return os.fstat(fd).st_size
    except OSError:
        return 0


def unlink_in(pod_dir: str, name: str) -> None:
    """Remove *name* from *pod_dir* if it can; never raises."""
    try:
        dir_fd = open_pod_dir(pod_dir)
    except OSError:
        return
    try:
        unlink_quietly(name, dir_fd)
    finally:
        os.close(dir_fd)


def unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def wait_for_calls(codes: AbstractSet[CodeType], timeout: float) -> int:
    """Wait until each call of *codes* that another thread is in now has returned; how many are left at *timeout*.

    A grace period, as RCU has: only the calls in progress now are waited for, each until it returns (a thread
    that calls again meanwhile is not waited for again), told from the threads' frames. It costs the callers
    nothing: the writer's hot path takes no lock and counts nothing.
    """
    me = threading.get_ident()
    pending: dict[int, FrameType] = {}
    for ident, top in sys._current_frames().items():
        frame = _call_of(top, codes)
        if ident != me and frame is not None:
            pending[ident] = frame
    deadline = time.monotonic() + timeout
    pause = 0.0001
    while pending and time.monotonic() < deadline:
        time.sleep(pause)  # lets them run: they hold the GIL between their system calls
        pause = min(2 * pause, 0.01)
        tops = sys._current_frames()
        pending = {
            ident: frame
            for ident, frame in pending.items()
            if _call_of(tops.get(ident), {frame.f_code}, frame) is not None
        }
    return len(pending)


def _call_of(top: FrameType | None, codes: AbstractSet[CodeType], this: FrameType | None = None) -> FrameType | None:
    """The frame on *top*'s stack running one of *codes* (and that is *this*, if given), or None."""
    frame = top
    while frame is not None:
        if frame.f_code in codes and (this is None or frame is this):
            return frame
        frame = frame.f_back
    return None
