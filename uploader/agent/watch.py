"""The node agent's one watch: directories created in (or moved into) the spool directory.

Only the spool directory itself is watched, for entries created or moved: one
inotify watch whatever the number of pods, and no event for the reports the
jobs write (IN_MODIFY is left out of the mask), so a busy node costs the agent
nothing here. Pods' own changes are found by polling (see :mod:`.pods`).

Imported by the agent alone (never by ``--help``), so watchdog is imported here at the top.
"""

from __future__ import annotations

import logging
from typing import Callable

from watchdog.events import DirCreatedEvent, DirMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

__all__ = ["RootWatch"]

logger = logging.getLogger(__name__)


class _Call(FileSystemEventHandler):
    """Calls *changed* on every event it is given (the watch's filter chose them)."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self._changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._changed()


class RootWatch:
    """A watchdog observer on *spool_dir* that calls *changed* when an entry is created or moved in."""

    def __init__(self, spool_dir: str, changed: Callable[[], None]) -> None:
        self.spool_dir = spool_dir
        self._handler = _Call(changed)
        self._observer: BaseObserver | None = None
        self.failed = False  # file events are unavailable here: not tried again

    @property
    def active(self) -> bool:
        return self._observer is not None

    def start(self) -> None:
        """Start watching; where file events are unavailable, say so once: the agent's poll still finds pods."""
        observer = Observer()
        try:
            observer.schedule(
                self._handler, self.spool_dir, recursive=False, event_filter=[DirCreatedEvent, DirMovedEvent]
            )
            observer.start()
        except OSError as exc:  # no inotify, or its instances or watches exhausted
            logger.warning("file events are unavailable (%s); polling %s for new pods instead", exc, self.spool_dir)
            self.failed = True
        else:
            self._observer = observer

    def stop(self) -> None:
        """Stop watching (safe to call twice)."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()
