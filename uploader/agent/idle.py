"""Idle pods watched, not polled: one inotify instance, a watch on each idle pod directory for new entries.

An idle pod (everything delivered, no writer alive) can change only by a new
spool file. Comparing each one's directory mtime every few seconds cost a stat
per pod per look: at 10,000 idle pods, several percent of a core for nothing.
Watched, an idle pod costs nothing until an entry is created or moved into its
directory; the agent then looks at it at once. The watch is only a hint (the
look itself decides, and a watched pod is still looked at every
``IDLE_WATCHED_POLL_SECONDS``, in :mod:`.config`), so correctness never
depends on an event. The agent takes at most :func:`watch_cap` watches (a
quarter of ``fs.inotify.max_user_watches``, at most ``MAX_IDLE_WATCHES``): run
as root, it shares that per-user limit with the kubelet and containerd, which
fail without watches. Past the cap, or where inotify or its watches run out,
the pods beyond are polled as before; it is said once in the log.

Only idle pods are watched: an active pod's uploader writes its checkpoints
(new entries, by rename) on every push, and those events would be noise.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections import deque
from typing import Callable

from .config import IDLE_WATCHED_POLL_SECONDS, MAX_IDLE_WATCHES

__all__ = ["IdleWatch", "system_watch_cap", "watch_cap"]

logger = logging.getLogger(__name__)

_IN_MOVED_TO, _IN_CREATE, _IN_Q_OVERFLOW, _IN_IGNORED = 0x80, 0x100, 0x4000, 0x8000
_IN_ONLYDIR, _IN_DONT_FOLLOW = 0x01000000, 0x02000000
_MASK = _IN_CREATE | _IN_MOVED_TO | _IN_ONLYDIR | _IN_DONT_FOLLOW
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (of the name that follows)
# The per-user limit, and the same for the user namespace the agent runs in (the lower one applies).
_LIMITS = ("/proc/sys/fs/inotify/max_user_watches", "/proc/sys/user/max_inotify_watches")
_ASSUMED_LIMIT = 8192  # where neither can be read: the kernel's default before 5.11
_AT_CAP = (
    f"the agent's cap (a quarter of fs.inotify.max_user_watches, at most {MAX_IDLE_WATCHES}: the node's "
    "other programs need theirs)"
)


def watch_cap(max_user_watches: int) -> int:
    """The most idle pods watched under a per-user limit of *max_user_watches*: a quarter of it, at most
    :data:`~.config.MAX_IDLE_WATCHES`."""
    return max(0, min(MAX_IDLE_WATCHES, max_user_watches // 4))


def system_watch_cap(limits: tuple[str, ...] = _LIMITS) -> int:
    """:func:`watch_cap` of this system's limit: the lowest of the files *limits* that can be read."""
    values = []
    for path in limits:
        try:
            with open(path) as f:
                values.append(int(f.read()))
        except (OSError, ValueError):
            pass
    return watch_cap(min(values, default=_ASSUMED_LIMIT))


class IdleWatch:
    """Watches idle pod directories; :meth:`changed` gives the names of those that had a new entry since.

    *wake* is called (in the watch's thread) when one did. Names are kept by the caller's thread only: the
    thread passes on watch descriptors, never touches the tables.
    """

    def __init__(self, wake: Callable[[], None], enabled: bool = True, max_watches: int | None = None) -> None:
        self._wake = wake
        self._enabled = enabled  # else every idle pod is polled
        self._max_watches = max_watches  # None: system_watch_cap(), when started
        self._fd = -1
        self._names: dict[int, str] = {}  # watch descriptor -> pod name
        self._wds: dict[str, int] = {}
        self._events: deque[int] = deque()  # descriptors that had an event (-1: the queue overflowed)
        self._stop_r = self._stop_w = -1
        self._thread: threading.Thread | None = None
        self._full = False  # the watches ran out: none tried until one is removed
        self._warned = False

    def start(self) -> None:
        """Start watching; without inotify, say so once (every idle pod is then polled)."""
        if not self._enabled:
            return
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        except (OSError, AttributeError) as exc:
            logger.warning("idle pods are polled (inotify is unavailable: %s)", exc)
            return
        self._fd = fd
        if self._max_watches is None:
            self._max_watches = system_watch_cap()
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._read, name="idle pods watch", daemon=True)
        self._thread.start()

    def watch(self, name: str, path: str) -> bool:
        """Watch pod *name*'s directory *path*; False if it is not watched (it must be polled)."""
        if name in self._wds:
            return True
        if self._fd < 0 or self._full:
            return False
        if len(self._wds) >= (self._max_watches or 0):
            self._warn_once(_AT_CAP)
            return False
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), _MASK)
        if wd < 0:
            if ctypes.get_errno() == errno.ENOSPC:
                self._full = True
                self._warn_once("and no more watches (fs.inotify.max_user_watches)")
            return False  # else gone, or not a directory: its next look says
        self._names[wd], self._wds[name] = name, wd
        return True

    def _warn_once(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("%d idle pods watched, %s: the others are polled", len(self._wds), why)

    @property
    def count(self) -> int:
        """Pods watched now."""
        return len(self._wds)

    def next_look(self, name: str, path: str, unwatched: float) -> float:
        """Seconds until the idle pod *name* (directory *path*) must be looked at, watching it if it is not.

        Watched since before this look, a new entry would have woken it; watched only now, one more look
        after *unwatched* seconds sees what came between its last look and the watch.
        """
        if name in self._wds:
            return IDLE_WATCHED_POLL_SECONDS
        self.watch(name, path)
        return unwatched

    def unwatch(self, name: str) -> None:
        wd = self._wds.pop(name, None)
        if wd is not None:
            self._names.pop(wd, None)
            self._libc.inotify_rm_watch(self._fd, wd)  # fails harmlessly if its directory is gone
            self._full = False

    def changed(self) -> list[str]:
        """The watched pods that had a new entry since the last call (every one after an overflow)."""
        out: set[str] = set()
        while self._events:
            wd = self._events.popleft()
            if wd == -1:
                out.update(self._wds)
            elif wd in self._names:
                out.add(self._names[wd])
        return list(out)

    def stop(self) -> None:
        if self._thread is not None:
            os.write(self._stop_w, b"\0")
            self._thread.join()
            self._thread = None
        for fd in (self._fd, self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._fd = self._stop_r = self._stop_w = -1

    def _read(self) -> None:
        poll = select.poll()
        poll.register(self._fd, select.POLLIN)
        poll.register(self._stop_r, select.POLLIN)
        while all(fd != self._stop_r for fd, _ in poll.poll()):
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(data):
                wd, mask, _, size = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + size
                if mask & _IN_Q_OVERFLOW:
                    self._events.append(-1)
                elif not mask & _IN_IGNORED:  # (the watch's end: its directory gone, or unwatched)
                    self._events.append(wd)
            self._wake()
