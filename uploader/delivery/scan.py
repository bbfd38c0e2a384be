"""Reading what is new in a pod's spool files, coalesced to the latest value of each name (or every record).

A scan reads each followed file on from its offset, within a byte budget (so
that pushes and checkpoints never wait long behind a big backlog) and a cap
on the distinct values held (so that memory stays bounded: the rest waits on
disk until these are delivered).
"""

from __future__ import annotations

import math
import time
from itertools import repeat
from typing import Callable

from runai.reporter.spool import SEARCH_BYTES, Report

from .followed import FollowedFile, FollowedFiles

__all__ = ["MAX_PENDING_VALUES", "SCAN_BYTES", "Scanner"]

SCAN_BYTES = 64 << 20  # read per scan by default; bounds how long pushes wait behind reading
# Distinct values read and not yet pushed. Past it reading pauses until they
# are delivered; the rest waits on disk. About 300 bytes each in memory.
MAX_PENDING_VALUES = 100_000
_READ_BYTES = 4 << 20  # one read of a spool file
_WHOLE_MS_READ_BYTES = 64 << 10  # the least a whole-millisecond read asks for
_MIN_LINE_BYTES = 32  # no valid record line is shorter: a read of N such bytes adds at most N/32 values


class Scanner:
    """Reads the followed files into :attr:`latest`, the newest value of each name not yet pushed.

    With *coalesce* False (the remote-write sink) :attr:`latest` holds every
    record read and not yet pushed instead, bounded the same way by *max_pending*,
    and reads hold whole milliseconds (``SpoolTail.read(whole_ms=True)``): two
    reports of one series in one millisecond then go in one push, where the
    last one is kept. With *hold_open* too (a follower), the newest millisecond
    of a file whose writer is alive is read once it is over; :meth:`held_due`
    says when to come back for it.

    *stopping* is asked after each read (a scan of a big backlog takes
    seconds: a signal must not wait for it); *again* is called when a file
    has more to read than the budget allowed, to come straight back for it.
    """

    def __init__(
        self,
        files: FollowedFiles,
        stopping: Callable[[], bool],
        again: Callable[[], None],
        *,
        scan_bytes: int = SCAN_BYTES,
        max_pending: int = MAX_PENDING_VALUES,
        coalesce: bool = True,
        hold_open: bool = False,
    ) -> None:
        self.files = files
        self.scan_bytes = scan_bytes  # read at most about this much before pushing and committing
        self.max_pending = max_pending  # distinct values held before reading pauses
        # values not yet pushed (coalesced, or every record), with the file each came from
        self.latest: dict[object, tuple[Report, str]] = {}  # keyed by (kind, name), or by id when not coalesced
        self.coalesce = coalesce
        self.hold_open = hold_open and not coalesce
        self._held_until: float | None = None  # wall clock: when the lines the last scan held back are due
        self._stopping = stopping
        self._again = again

    def scan(self, names: list[str], check_liveness: bool) -> bool:
        """Read what is new in the spool files among *names*; False if the budget ran out before the end."""
        budget = self.scan_bytes
        self._held_until = None
        self.files.deferred = False
        for name in names:
            if self._stopping():  # a first scan of a pod of many files opens each: a signal must not wait
                return False
            entry = self.files.follow(name, check_liveness)
            if entry is None:
                continue
            drained = False
            while budget > 0:
                if len(self.latest) >= self.max_pending:
                    # Held values only grow with distinct names; the rest waits on
                    # disk until these are delivered (the loop rescans after a push).
                    return False
                read = self._read(entry, budget)
                if self._stopping():
                    return False
                if read is None:
                    drained = True
                    break
                budget -= read
            if not drained:
                self._again()  # come straight back for the rest
            elif entry.retirable():
                self.files.retire(entry)
        return budget > 0 and not self.files.deferred  # a file left unopened (no descriptor): not drained

    def _read(self, entry: FollowedFile, budget: int) -> int | None:
        """Read one block of *entry* into :attr:`latest`; the bytes it counts against *budget*, None at the end."""
        tail = entry.tail
        room = self.max_pending - len(self.latest)
        before = tail.offset
        hold = self.hold_open and entry.alive and not tail.ended
        limit = min(_READ_BYTES, room * _MIN_LINE_BYTES)
        if not self.coalesce:
            # Whole milliseconds: a read too small to hold one would have to split it (max_pending may be
            # passed by one read's worth, about 2,000 records).
            limit = max(limit, _WHOLE_MS_READ_BYTES)
        records = tail.read(limit, whole_ms=not self.coalesce, hold_open=hold)
        if tail.held_until is not None:
            self._held_until = min(self._held_until or math.inf, tail.held_until)
        if tail.offset == before and not tail.searching:
            return None
        if tail.searching:  # a search for the end of an overlong line reads without moving the offset
            return SEARCH_BYTES
        read = tail.offset - before
        if self.coalesce:
            for record in records:
                self._coalesce(record, entry.path)
            return read
        # Every record, not coalesced, keyed by its id (unique among the records held, which are alive):
        # built in C (map, zip), not by a Python loop, for a drain reads millions; and an int key is no
        # object for the cyclic garbage collector to traverse, which a drain's CPU time showed.
        paths = repeat(entry.path, len(records))
        self.latest.update(zip(map(id, records), zip(records, paths, strict=True), strict=True))
        return read

    def held_due(self, now: float) -> float:
        """When (on the monotonic clock, *now* being its present) to read the lines the last scan held back."""
        if self._held_until is None:
            return math.inf
        return now + max(0.0, self._held_until - time.time())

    def _coalesce(self, record: Report, path: str) -> None:
        key = (record.kind, record.name)
        held = self.latest.get(key)
        # One writer's reports are ordered by sequence number: its clock may
        # step back. Across writers, the newest report wins, as it would have
        # on the gateway had each been pushed at once.
        if held is None or (record.seq > held[0].seq if path == held[1] else record.ts >= held[0].ts):
            self.latest[key] = (record, path)
