"""A spool writer in a forked child: its next report starts the child's own file.

A mixin of :class:`~.writer.SpoolWriter`, kept apart so that each module stays one concept: the writer's
report path and lifecycle there, what a child does with the writer it inherited here. The fork hook
(:func:`._fds.after_fork`) sets ``_forked`` in the child.
"""

from __future__ import annotations

import itertools
import os
import threading

from ._rotation import SpoolFile


class _Forking:
    """What the fork handling reads and changes of the writer (set by SpoolWriter.__init__)."""

    lost: int
    records: int
    _fd: int
    _seq: itertools.count[int]
    _markers: int
    _torn: bool
    _warned: bool
    _fork_pending: bool
    _slow_lock: threading.RLock
    _rotated: list[tuple[int, str, str, float]]
    _released: list[SpoolFile]
    _devnull_fds: list[int]

    def _recheck(self) -> None:
        raise NotImplementedError  # SpoolWriter's

    def _open(self) -> None:
        raise NotImplementedError  # SpoolWriter's

    @property
    def _forked(self) -> bool:  # set by the fork hook in a child (_fds.after_fork): its next report opens its own file
        return self._fork_pending

    @_forked.setter
    def _forked(self, value: bool) -> None:
        self._fork_pending = value
        self._recheck()

    def _after_fork(self) -> None:
        # The child shares the parent's descriptor; writing through it would interleave two sequence counters
        # in one file. Start its own file.
        self._slow_lock = threading.RLock()  # a thread of the parent may have held it
        with self._slow_lock:
            if not self._forked:
                return
            self._drop_inherited()  # the parent keeps its locks and files
            self._released, self._markers = [], 0
            self._forked = self._torn = self._warned = False
            self._seq, self.lost, self.records = itertools.count(1), 0, 0
            self._recheck()
            self._open()

    def _drop_inherited(self) -> None:
        """Close a forked child's copies of the parent's descriptors."""
        self._close_fd()
        for fd in [entry[0] for entry in self._rotated] + self._devnull_fds:
            os.close(fd)
        self._rotated, self._devnull_fds = [], []

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
