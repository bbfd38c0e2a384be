"""The names an uploader's scan reads in its pod directory: listed again only when the directory may have changed.

A follower scans its pod directory every poll (0.5 s). Listing, sorting and
looking up every name each time cost a pod of 200,000 planted files most of a
core, in a thread that shares the interpreter with the node agent's main loop
and every other pod's delivery. So the directory is listed again only when its
mtime moved (a file made, renamed or removed), and the names of files done with
(delivered, unreadable) are left out, in C, before any per-name work.

An mtime is coarse: a file made in the same tick as a listing leaves it as it
was. So a listing is reused only if the mtime it saw was already
:data:`SETTLED_NS` old when it was taken (as git does for its index); a busy
directory is listed every scan, as before.
"""

from __future__ import annotations

import os
import time
from typing import AbstractSet

from runai.reporter.safefs import open_pod_dir
from runai.reporter.spool import is_spool_file

__all__ = ["SETTLED_NS", "PodListing"]

SETTLED_NS = 1_000_000_000  # an mtime this old is past any timestamp granularity: no change can hide behind it


class PodListing:
    """The spool file names of *pod_dir* to scan: those not in the *done* set given to :meth:`names`."""

    def __init__(self, pod_dir: str) -> None:
        self.pod_dir = pod_dir
        self._names: set[str] = set()
        self._mtime: int | None = None  # the settled mtime the names were listed at, else None

    def names(self, done: AbstractSet[str]) -> list[str]:
        """The spool files to scan, sorted (raises OSError as :func:`~runai.reporter.safefs.list_pod_dir`)."""
        # Through the checked descriptor, as its files are opened: never through a symlink swapped in for the
        # directory (root would list another user's private directory).
        dir_fd = open_pod_dir(self.pod_dir)
        try:
            mtime = os.fstat(dir_fd).st_mtime_ns
            if mtime != self._mtime:
                listed_at = time.time_ns()
                self._names = set(filter(is_spool_file, os.listdir(dir_fd)))
                self._mtime = mtime if mtime < listed_at - SETTLED_NS else None
        finally:
            os.close(dir_fd)
        self._names -= done
        return sorted(self._names)
