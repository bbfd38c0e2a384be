"""Which pod directories the spool directory holds: listed at once when its watch sees an entry made, and every
:data:`~.config.ROOT_POLL_SECONDS` besides (the watch is a hint: it may fail, or start late)."""

from __future__ import annotations

import os
from typing import Callable, Collection

from .config import ROOT_POLL_SECONDS
from .judge import pod_dirs
from .watch import RootWatch

__all__ = ["Discovery", "owner_of"]


class Discovery:
    """The pod directories under *spool_dir*; *wake* is called (in the watch's thread) when an entry is made."""

    def __init__(self, spool_dir: str, wake: Callable[[], None], use_watchdog: bool = True) -> None:
        self.spool_dir = spool_dir
        self._wake = wake
        self._changed, self._next_scan = True, 0.0
        self._watch = RootWatch(spool_dir, self._event) if use_watchdog else None

    @property
    def next_due(self) -> float:
        return self._next_scan

    def changes(self, now: float, known: Collection[str]) -> tuple[set[str], set[str]] | None:
        """The names made and gone since *known*, if a listing is due at *now* (else None)."""
        if not self._changed and now < self._next_scan:
            return None
        self._changed, self._next_scan = False, now + ROOT_POLL_SECONDS
        watch = self._watch
        if watch is not None and not (watch.active or watch.failed) and os.path.isdir(self.spool_dir):
            watch.start()
        names = pod_dirs(self.spool_dir)
        return names.difference(known), set(known).difference(names)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def _event(self) -> None:
        self._changed = True
        self._wake()


def owner_of(path: str) -> int:
    """The uid that owns *path* (not followed), -1 if it cannot be read."""
    try:
        return os.stat(path, follow_symlinks=False).st_uid
    except OSError:
        return -1
