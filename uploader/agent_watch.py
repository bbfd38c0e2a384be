"""The node agent's one watch: directories created in (or moved into) the spool directory.

Only the spool directory itself is watched, for entries created or moved: one
inotify watch whatever the number of pods, and no event for the reports the
jobs write (IN_MODIFY is left out of the mask), so a busy node costs the agent
nothing here. Pods' own changes are found by polling (see uploader.agent).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

__all__ = ["RootWatch"]

logger = logging.getLogger(__name__)


class RootWatch:
    """A watchdog observer on *spool_dir* that calls *changed* when an entry is created or moved in."""

    def __init__(self, spool_dir: str, changed: Callable[[], None]) -> None:
        self.spool_dir = spool_dir
        self._changed = changed
        self._observer: Any = None
        self.failed = False  # file events are unavailable here: not tried again

    @property
    def active(self) -> bool:
        return self._observer is not None

    def start(self) -> bool:
        """Start watching; False (logged) where file events are unavailable: the agent's poll still finds pods."""
        try:
            from watchdog.events import DirCreatedEvent, DirMovedEvent, FileSystemEvent, FileSystemEventHandler
            from watchdog.observers import Observer

            changed = self._changed

            class _OnNewEntry(FileSystemEventHandler):
                def on_any_event(self, event: FileSystemEvent) -> None:
                    changed()

            observer = Observer()
            observer.schedule(_OnNewEntry(), self.spool_dir, recursive=False,
                              event_filter=[DirCreatedEvent, DirMovedEvent])
            observer.start()
        except (OSError, ImportError) as exc:
            logger.warning("file events are unavailable (%s); polling %s for new pods instead", exc, self.spool_dir)
            self.failed = True
            return False
        self._observer = observer
        return True

    def stop(self) -> None:
        """Stop watching (safe to call twice)."""
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()
