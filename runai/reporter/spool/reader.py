"""Reading one spool file: complete lines only, from a byte offset on.

A line is consumed only once its newline is there, so a record the writer is
still appending (or one a crash cut short) is never decoded half-written.
Lines that are not valid records are skipped with a warning and never pushed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections import Counter
from typing import Iterable, Iterator

from ..safefs import open_in_pod_dir
from ._fds import OwnedFd
from .checkpoint import GATEWAY, Checkpoint, load_progress
from .records import MAX_LINE_BYTES, End, Header, Report, decode, decode_metrics

__all__ = ["SpoolTail", "BadSpoolError", "SEARCH_BYTES", "skip_reason"]

logger = logging.getLogger(__name__)

_BLOCK = 4 << 20  # bytes per read: few syscalls, bounded memory
_WARN_LINES = 5  # skipped lines of one file warned about one by one
SEARCH_BYTES = 16 * _BLOCK  # searched for the end of an overlong line per read() call
# A millisecond still open may get more lines: read it once it has been over this long, the usual delay
# between a writer stamping a report and appending it (microseconds; a thread preempted between the two, as
# by a GIL switch after 5 ms, can still land a report in the next push: docs/design/scaling.md).
MS_GUARD = 0.002
_FUTURE_S = 1.0  # a line stamped further ahead than this is a clock that stepped back: never wait for it
_TS_US = re.compile(rb'"ts_us":(\d{1,19})[,}]')
_TS_WITHIN = 64  # bytes: a valid line has its ts_us before this ('{"seq":' 19 digits ',"ts_us":' 19 digits)


class BadSpoolError(ValueError):
    """A spool file cannot be identified (its first line is not a valid header)."""


class _TooLong(ValueError):
    def __init__(self) -> None:
        super().__init__(f"a line longer than {MAX_LINE_BYTES} bytes")


class SpoolTail(OwnedFd):
    """A read position in one spool file and what has been read up to it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.spool_id = ""
        self.receivers: tuple[str, ...] | None = None  # the header's (see records.Header)
        self.pod_uuid: str | None = None  # the header's: the pod its writer reported for
        self.offset = 0  # bytes consumed, always at a line boundary
        self.records = 0  # reports read (header and end marker excluded)
        self.last_seq = 0
        self.ended = False  # the end-of-stream marker was read
        self.skipped = 0  # lines skipped as invalid
        self.skip_reasons: Counter[str] = Counter()  # why, in a few words each
        self._searched = 0  # how far a line too long to read was searched for its newline
        self.searching = False  # read() stopped in the middle of that search: call it again
        # Set by read(whole_ms=True) that left the lines of a millisecond unread because it may get more:
        # the wall-clock time to read again at. None: nothing is held.
        self.held_until: float | None = None
        self._fd = open_in_pod_dir(path, os.O_RDONLY)  # never through a symlink; see safefs

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def fsync(self) -> None:
        """Flush the file's written pages to disk (any descriptor of a file will do)."""
        os.fsync(self._fd)

    def writer_alive(self) -> bool:
        """True while the writing process holds its shared lock on the file."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return False

    def read_header(self) -> bool:
        """Read the header line; False while it is incomplete.

        Raises :class:`BadSpoolError` when the first line is not a header.
        """
        line = _first_line(self._fd)
        if line is None:
            return False
        try:
            record = decode(line)
        except ValueError as exc:
            raise BadSpoolError(f"the first line is not a spool header ({exc})") from None
        if not isinstance(record, Header):
            raise BadSpoolError("the first line is not a spool header")
        self.spool_id, self.receivers, self.pod_uuid = record.spool_id, record.receivers, record.pod_uuid
        self.offset = len(line) + 1
        return True

    def resume_at_checkpoint(self, sink: str = GATEWAY) -> Checkpoint | None:
        """Continue after the file's checkpoint for *sink* (its header read first); it, or None to start over."""
        ckpt = self.checkpoints((sink,)).get(sink)
        if ckpt is not None:
            self.resume_at(ckpt)
        return ckpt

    def checkpoints(self, sinks: Iterable[str] = (GATEWAY,)) -> dict[str, Checkpoint]:
        """The checkpoints of *sinks* that fit this file (its header read first); a sink absent: start over.

        A checkpoint that does not point just after a newline cannot be one
        this uploader wrote: the file is replayed from the start instead.
        """
        fitting = {}
        for sink, ckpt in load_progress(self.path, self.spool_id, self.size(), sinks=sinks).items():
            if self.at_line_start(ckpt.offset):
                fitting[sink] = ckpt
                continue
            to = "" if sink == GATEWAY else f" to {sink}"  # the gateway-only warning stays as it was
            logger.warning(
                "checkpoint of %s does not point at a line start; replaying it from the start%s", self.path, to
            )
        return fitting

    def resume_at(self, ckpt: Checkpoint) -> None:
        """Continue after *ckpt*, one of :meth:`checkpoints`."""
        self.offset, self.records, self.last_seq, self.ended = ckpt.offset, ckpt.records, ckpt.last_seq, ckpt.ended

    def read(self, limit: int = _BLOCK, whole_ms: bool = False, hold_open: bool = False) -> list[Report]:
        """Decode the complete lines after :attr:`offset`, about *limit* bytes' worth.

        An empty list with :attr:`offset` unchanged means nothing more to read
        for now, unless :attr:`searching` is set.

        *whole_ms*: never stop inside a millisecond whose lines go on past
        *limit*; its lines are left for the next read. With *hold_open* too
        (a writer may still be writing), the newest millisecond, not over by
        :data:`MS_GUARD` yet, is left for a later read, and :attr:`held_until`
        says when. Each read then holds whole milliseconds, so that two
        reports of one series in one millisecond are sent together.
        """
        self.searching = False  # set again below only while a search is unfinished
        self.held_until = None
        data = os.pread(self._fd, limit, self.offset)
        end = data.rfind(b"\n")
        if end >= 0 and whole_ms:
            end = self._end_of_whole_ms(data, end, more=len(data) == limit, hold_open=hold_open)
        if end < 0:
            if len(data) < limit or self.held_until is not None:
                return []  # a line still being written (or torn), or one open millisecond and nothing else
            if limit <= MAX_LINE_BYTES:  # one line longer than a block: read it whole, up to the cap
                return self.read(min(limit * 2, MAX_LINE_BYTES + 1), whole_ms, hold_open)
            self._skip_long_line()
            return []
        self._searched = 0  # a search, if one was under way, is moot: a newline was found
        block = data[:end]  # one copy of up to a block, for both decoders
        fast = decode_metrics(block)
        if fast:  # nearly every block: every line a writer's metric
            return self._took(end, fast)
        return self._read_lines(block)

    def _took(self, end: int, records: list[Report]) -> list[Report]:
        """Move past *records*, decoded from the lines before the newline at *end* (from :attr:`offset`)."""
        self.records += len(records)
        self.last_seq = records[-1].seq
        self.offset += end + 1
        return records

    def _read_lines(self, block: bytes) -> list[Report]:
        """read()'s lines one at a time, skipping those that are not reports."""
        out: list[Report] = []
        start = 0
        for line in block.split(b"\n"):
            position = self.offset + start
            start += len(line) + 1
            if len(line) > MAX_LINE_BYTES:  # as a line past a block is (see _skip_long_line)
                self._skip(position, _TooLong())
                continue
            try:
                record = decode(line)
            except ValueError as exc:
                self._skip(position, exc)
                continue
            self.last_seq = record.seq
            if isinstance(record, End):
                self.ended = True
            elif isinstance(record, Header):
                self._skip(position, ValueError("a second header"))
            else:
                self.records += 1
                out.append(record)
        self.offset += len(block) + 1
        return out

    def _end_of_whole_ms(self, data: bytes, end: int, more: bool, hold_open: bool) -> int:
        """*end* (the last newline of *data*) moved back before the lines of a millisecond that may go on.

        It may go on when *more* data follows (the read was cut short), or,
        with *hold_open*, when it is the newest and not over by
        :data:`MS_GUARD` (then :attr:`held_until` is set).
        """
        start = data.rfind(b"\n", 0, end) + 1
        ms = _line_ms(data, start)
        if ms is None:
            return end
        if not more:
            held_until = (ms + 1) / 1000 + MS_GUARD
            if not hold_open or not 0 < held_until - time.time() <= MS_GUARD + _FUTURE_S:
                return end  # over already (or stamped by a clock that has stepped back since)
        while start > 0:
            before = data.rfind(b"\n", 0, start - 1) + 1
            if _line_ms(data, before) != ms:
                break
            start = before
        if start == 0 and more:
            # A block that is all one millisecond: read a bigger one (read() doubles it) while that stays
            # below the line cap; past it, read it whole, since a read must move on.
            return end if len(data) > MAX_LINE_BYTES // 2 else -1
        if not more:
            self.held_until = held_until
        return start - 1

    def read_all(self) -> Iterator[Report]:
        """Every report after :attr:`offset`, to the last complete line, a block at a time."""
        while True:
            before = self.offset
            yield from self.read()
            if self.offset == before and not self.searching:
                return

    def at_line_start(self, offset: int) -> bool:
        """True if *offset* is just after a newline (where a checkpoint must point)."""
        return offset > 0 and os.pread(self._fd, 1, offset - 1) == b"\n"

    def unread_bytes(self) -> int:
        """Bytes after the last complete line: a line being written, or a torn one."""
        return max(0, self.size() - self.offset)

    def _skip_long_line(self) -> None:
        """Skip the line at :attr:`offset`, longer than MAX_LINE_BYTES, if its newline is there.

        Looked for a block at a time, never holding the line, and at most
        :data:`SEARCH_BYTES` a call (so that a caller can stop between two):
        the next call goes on from where this one ended, and :attr:`searching`
        says whether there is more to search.
        """
        position = max(self._searched, self.offset + MAX_LINE_BYTES)
        for _ in range(SEARCH_BYTES // _BLOCK):
            data = os.pread(self._fd, _BLOCK, position)
            newline = data.find(b"\n")
            if newline >= 0:
                self._skip(self.offset, _TooLong())
                self.offset = position + newline + 1
                self._searched, self.searching = 0, False
                return
            position += len(data)
            if len(data) < _BLOCK:  # no newline up to the end: unfinished, or torn when its writer is gone
                self._searched, self.searching = position, False
                return
        self._searched, self.searching = position, True

    def _skip(self, position: int, exc: Exception) -> None:
        self.skipped += 1
        self.skip_reasons[skip_reason(exc)] += 1
        if self.skipped <= _WARN_LINES:
            logger.warning(
                "%s: skipping the line at byte %d, which is not a valid record (%s)", self.path, position, exc
            )
        elif self.skipped == _WARN_LINES + 1:
            logger.warning("%s: more invalid lines; counting them without a warning each", self.path)


def _line_ms(data: bytes, start: int) -> int | None:
    """The millisecond of the line at *start* in *data*, from its raw bytes; None if none is found."""
    match = _TS_US.search(data, start, start + _TS_WITHIN)
    return int(match.group(1)) // 1000 if match else None


def skip_reason(exc: Exception) -> str:
    """The kind of damage, without the details that make every line differ (positions, values)."""
    return str(exc).split(":", 1)[0].split(" (", 1)[0]


_HEADER_BYTES = 64 << 10  # a header is a few hundred bytes: a first line longer than this is none


def _first_line(fd: int) -> bytes | None:
    """The first line; None while it is incomplete (BadSpoolError when it can never be a header)."""
    data = os.pread(fd, _HEADER_BYTES, 0)
    end = data.find(b"\n")
    if end < 0 and len(data) == _HEADER_BYTES:  # else it would stay "being created" on every scan for ever
        raise BadSpoolError(f"the first line is not a spool header (no newline in its first {_HEADER_BYTES} bytes)")
    return None if end < 0 else data[:end]
