"""Retention: the delivered spool files of gone writers, kept under a bound of bytes.

Only files that are fully delivered and whose writer is gone are ever added:
undelivered data is never deleted. Past the bound the oldest go first, each
with its checkpoint. With several sinks, each sink's loop adds the files it
has delivered; a file is deleted only once its checkpoint says every sink has
it (the loop of the last sink to get there deletes it).
"""

from __future__ import annotations

import logging
import os
from typing import Callable, TypeVar

from runai.reporter.safefs import open_pod_dir
from runai.reporter.spool import GATEWAY, checkpoint_path, delivery_state

__all__ = ["History"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class History:
    """Delivered spool files kept on disk, trimmed oldest first to *max_bytes* (None keeps everything)."""

    def __init__(self, max_bytes: int | None, sinks: tuple[str, ...] = (GATEWAY,)) -> None:
        self.max_bytes = max_bytes
        self.sinks = sinks  # every configured sink: a file goes only once each has it
        self._files: dict[str, tuple[float, int, str]] = {}  # path -> (mtime, size, spool id)

    def add(self, path: str, spool_id: str) -> None:
        """Count *path*, a delivered file of a gone writer, then trim the oldest while over the bound."""
        if self.max_bytes is None:
            return
        try:
            info = _in_pod_dir(path, lambda name, dir_fd: os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
        except OSError:
            return
        self._files[path] = (info.st_mtime, info.st_size, spool_id)
        self._trim(self.max_bytes)

    def _trim(self, max_bytes: int) -> None:
        """Delete the oldest delivered files of gone writers while the history is over its bound."""
        total = sum(size for _, size, _ in self._files.values())
        for path in sorted(self._files, key=lambda p: self._files[p][0]):
            if total <= max_bytes:
                break
            _, size, spool_id = self._files[path]
            if len(self.sinks) > 1 and not delivery_state(path, spool_id, size, sinks=self.sinks).covered:
                continue  # another sink has yet to get it: its loop adds it when it has
            total -= self._files.pop(path)[1]
            for victim in (path, checkpoint_path(path)):
                try:
                    _in_pod_dir(victim, lambda name, dir_fd: os.unlink(name, dir_fd=dir_fd))
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    logger.error("cannot delete %s to keep the history under %d bytes: %s", victim, max_bytes, exc)
            logger.info("deleted delivered spool %s: history over %d bytes", path, max_bytes)


def _in_pod_dir(path: str, call: Callable[[str, int], _T]) -> _T:
    """*call*(name, dir_fd) on the file *path* through a checked descriptor of its pod directory.

    Never by path: a pod directory swapped for a symlink meanwhile (its owner
    can) would steer a deletion, as the node agent's root, into another
    directory. The pod directory is opened as the uploader opens it, checked.
    """
    pod_dir, name = os.path.split(path)
    dir_fd = open_pod_dir(pod_dir)
    try:
        return call(name, dir_fd)
    finally:
        os.close(dir_fd)
