"""Which pod directories the spool directory holds: listed at once when its watch sees an entry made, when its
mtime changed (compared every :data:`~.config.ROOT_POLL_SECONDS`), and every :data:`~.config.ROOT_LIST_SECONDS`
whatever it says (the watch is a hint: it may fail, or start late).

Listing 100,000 names every few seconds, with nothing changed, was most of what an idle agent spent over a spool
directory full of empty pod directories; a stat is all an unchanged directory costs now.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from ..delivery.listing import SETTLED_NS
from .config import MIN_SLEEP_SECONDS, ROOT_LIST_SECONDS, ROOT_POLL_SECONDS
from .judge import dir_mtime, pod_dirs
from .watch import RootWatch

__all__ = ["Discovery"]

LIST_MIN_SECONDS = 4 * MIN_SLEEP_SECONDS  # listings at most this often: a create/remove loop costs a few a second


class Discovery:
    """The pod directories under *spool_dir*; *wake* is called (in the watch's thread) when an entry is made."""

    def __init__(self, spool_dir: str, wake: Callable[[], None], use_watchdog: bool = True) -> None:
        self.spool_dir = spool_dir
        self._wake = wake
        self._changed, self._next_poll, self._next_list, self._earliest = True, 0.0, 0.0, 0.0
        self._listed = -1  # the directory's mtime at the last listing (-1: list at the next poll)
        self._watch = RootWatch(spool_dir, self._event) if use_watchdog else None

    @property
    def next_due(self) -> float:
        return self._earliest if self._changed else self._next_poll

    def listing(self, now: float) -> set[str] | None:
        """The names of the pod directories, if a listing is due at *now* (else None)."""
        if now < self._earliest or not (self._changed or now >= self._next_poll):
            return None
        self._next_poll = now + ROOT_POLL_SECONDS
        mtime = dir_mtime(self.spool_dir)
        if not self._changed and now < self._next_list and mtime == self._listed and mtime >= 0:
            return None
        self._changed, self._next_list, self._earliest = False, now + ROOT_LIST_SECONDS, now + LIST_MIN_SECONDS
        self._listed = mtime if time.time_ns() - mtime > SETTLED_NS else -1  # (else listed again next poll)
        watch = self._watch
        if watch is not None and not (watch.active or watch.failed) and os.path.isdir(self.spool_dir):
            watch.start()
        names = pod_dirs(self.spool_dir)
        if names is None:  # it cannot be listed now (EMFILE): no listing, so no pod is forgotten; again next poll
            self._listed = -1
        return names

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    def _event(self) -> None:
        self._changed = True
        self._wake()
