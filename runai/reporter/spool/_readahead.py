"""Decoding the next block of a spool file in a thread, while the uploader waits on a receiver.

A drain alternates reading (decoding, all CPU) and pushing (mostly waiting
for the receiver's answer, the GIL released). Decoding the block that the
next read will want during that wait overlaps the two. A spool file is only
ever appended to, so bytes read ahead are the bytes a later read would get;
a read that wants another block (another offset or size) just reads it.
"""
from __future__ import annotations

import logging
import os
import threading

from .records import Report, decode_metrics

__all__ = ["ReadAhead"]

logger = logging.getLogger(__name__)


class ReadAhead:
    """The complete lines of *limit* bytes of *fd* from *offset*, decoded in a worker thread when every one
    is a writer's metric (:func:`~runai.reporter.spool.records.decode_metrics`); nothing otherwise.

    Its owner must :meth:`join` it before closing *fd* (the thread reads it).
    """

    def __init__(self, fd: int, offset: int, limit: int) -> None:
        self.offset = offset
        self.limit = limit
        self._decoded: tuple[int, list[Report]] | None = None
        self._thread = threading.Thread(target=self._run, args=(fd,), name="runai-spool-read-ahead", daemon=True)
        self._thread.start()

    def _run(self, fd: int) -> None:
        try:
            data = os.pread(fd, self.limit, self.offset)
            end = data.rfind(b"\n")
            records = decode_metrics(data[:end]) if end > 0 else None
        except Exception as exc:  # nothing read ahead, the read reads for itself (and meets the error itself)
            logger.debug("reading ahead in a spool file failed: %s", exc)
            return
        if records:
            self._decoded = (end, records)

    def take(self, offset: int, limit: int) -> tuple[int, list[Report]] | None:
        """(where the last newline is, relative to *offset*; the records before it) if this read ahead is
        the one a read of *limit* bytes at *offset* wants and it decoded them; else None, read for yourself."""
        self._thread.join()
        return self._decoded if (offset, limit) == (self.offset, self.limit) else None

    def join(self) -> None:
        self._thread.join()
