"""The spool files one uploader follows: one record per file, what is pending in them, their checkpoints.

A file is followed from the first scan that can identify it (its header is
complete) until it is delivered and its writer is gone; then it is retired
(kept in the history, or deleted past its bound) and never opened again. A
file that cannot be a spool file is ignored, once, with the reason.
"""

from __future__ import annotations

import errno
import logging
import os
from collections import Counter
from dataclasses import replace
from typing import Iterable, Iterator

from runai.reporter.safefs import UnsafePathError
from runai.reporter.spool import (
    GATEWAY,
    BadSpoolError,
    Checkpoint,
    Report,
    is_spool_file,
    open_spool,
    other_pod,
    store_checkpoint,
)

from ..runtime.descriptors import FOLLOWED_DESCRIPTORS
from ..runtime.ratelog import RateLimitedLog
from .followed_file import FollowedFile
from .retention import History

__all__ = ["FollowedFile", "FollowedFiles", "TORN_LINE"]

logger = logging.getLogger(__name__)

TORN_LINE = "an incomplete last line (the writer died mid-record)"


class FollowedFiles:
    """The spool files of one pod directory: those followed, by path, and those done with."""

    def __init__(
        self,
        pod_dir: str,
        history_bytes: int | None = None,
        *,
        sink: str = GATEWAY,
        all_sinks: tuple[str, ...] | None = None,
        pod: str | None = None,
    ) -> None:
        self.pod_dir = pod_dir
        self.pod = pod  # the pod its files are delivered as; None: the directory's name (see other_pod)
        self.sink = sink  # whose progress the checkpoints read and written here are
        self.ignored: dict[str, str] = {}  # spool files that cannot be read at all -> why
        self._files: dict[str, FollowedFile] = {}
        self._closed: set[str] = set()  # names of delivered files of gone writers, and of unreadable ones
        self._skipped_retired: Counter[str] = Counter()  # skip reasons of files no longer followed
        # delivered files of gone writers, trimmed to a bound (each deleted once all sinks have it)
        self._history = History(history_bytes, all_sinks or (sink,))
        # Set by a scan that left a spool file unopened for want of a descriptor: not everything was read.
        self.deferred = False
        self._failures = RateLimitedLog(logger)
        self._released = False  # close() gave the descriptors back

    def __iter__(self) -> Iterator[FollowedFile]:
        return iter(self._files.values())

    def get(self, path: str) -> FollowedFile | None:
        return self._files.get(path)

    @property
    def done(self) -> set[str]:
        """The names of the files never to be read again (delivered, or unreadable), for the listing to skip."""
        return self._closed

    def follow(self, name: str, check_liveness: bool) -> FollowedFile | None:
        """The followed file *name* (opened on first sight), or None if it is not one to read."""
        if not is_spool_file(name):
            return None
        path = os.path.join(self.pod_dir, name)
        entry = self._files.get(path)
        if entry is None:
            return None if name in self._closed else self._open(path)
        if check_liveness:
            entry.alive = entry.tail.writer_alive()
        return entry

    def retire(self, entry: FollowedFile) -> None:
        """Stop following a delivered file whose writer is gone."""
        path, tail = entry.path, entry.tail
        torn = tail.unread_bytes()
        if torn:
            logger.warning("%s: ignoring %d bytes after the last complete line; the writer died mid-record", path, torn)
            self._skipped_retired[TORN_LINE] += 1
        self._skipped_retired.update(tail.skip_reasons)
        tail.close()
        FOLLOWED_DESCRIPTORS.give()
        del self._files[path]
        self._closed.add(os.path.basename(path))
        self._history.add(path, tail.spool_id)

    def sync(self) -> None:
        """fsync every spool file that grew since its last fsync (the `interval` durability policy)."""
        for entry in self._files.values():
            size = entry.tail.size()
            if size > entry.synced:
                try:
                    entry.tail.fsync()
                except OSError as exc:
                    logger.error("cannot fsync %s: %s", entry.path, exc)
                    continue
                entry.synced = size

    def resent(self, held: Iterable[tuple[Report, str]]) -> frozenset[int]:
        """The ids of the *held* records (each with its file's path) that a dead uploader's push may have delivered."""
        if not any(entry.resent_seq for entry in self._files.values()):
            return frozenset()  # the usual case, at no cost per record
        return frozenset(
            id(record) for record, path in held if (entry := self._files.get(path)) is not None and entry.resent(record)
        )

    def mark_sending(self) -> None:
        """Record in each checkpoint how far the push about to start reaches (:attr:`Checkpoint.sent_seq`).

        Best effort: a file whose mark cannot be written is pushed anyway,
        and after a crash its resends are judged as first sends.
        """
        for entry in self._files.values():
            if entry.uncommitted() and entry.acked.sent_seq < entry.tail.last_seq:
                self._store_mark(entry, entry.tail.last_seq)

    def unmark(self) -> None:
        """Take back the marks of a push that reached no receiver (refused connections): nothing of it is stored."""
        for entry in self._files.values():
            if entry.acked.sent_seq != entry.resent_seq:
                self._store_mark(entry, entry.resent_seq)  # what a dead uploader left, if anything

    def _store_mark(self, entry: FollowedFile, seq: int) -> None:
        marked = replace(entry.acked, sent_seq=seq)
        # No checkpoint yet: one at offset 0 would read as damaged (not after a newline), so the mark on
        # disk starts at the first record; the one in memory keeps 0, and the header in what is delivered.
        stored = marked if marked.offset else replace(marked, offset=entry.start)
        try:
            store_checkpoint(entry.path, stored, sink=self.sink)
        except OSError as exc:
            logger.error("cannot write the checkpoint of %s around a push: %s", entry.path, exc)
            return
        entry.acked = marked

    def commit(self) -> tuple[int, int, OSError | None]:
        """Write the checkpoint of every file read further than its last one.

        Returns the records and bytes newly covered, and the last error (None if every write succeeded).
        """
        records = size = 0
        error = None
        for entry in self._files.values():
            if not entry.uncommitted():
                continue
            tail, acked = entry.tail, entry.acked
            # A dead uploader's mark past what this commit covers still says what may be stored.
            carried = entry.resent_seq if entry.resent_seq > tail.last_seq else 0
            ckpt = Checkpoint(
                tail.spool_id,
                tail.offset,
                tail.records,
                tail.last_seq,
                tail.ended,
                acked.rejected + entry.refused,
                carried,
            )
            try:
                store_checkpoint(entry.path, ckpt, sink=self.sink)
            except OSError as exc:
                # Delivered but not recorded: a later replay re-sends it, harmlessly. The refusals
                # stay counted for the next checkpoint, so that finish() still learns of them.
                logger.error("cannot write the checkpoint of %s: %s", entry.path, exc)
                error = exc
                continue
            entry.refused = 0
            entry.resent_seq = carried  # once passed, no record is looked up against it any more
            records += ckpt.records - acked.records
            size += ckpt.offset - acked.offset
            entry.acked = ckpt
        return records, size, error

    def close(self) -> None:
        """Close every followed file (safe twice): their descriptors go back, what is pending stays countable."""
        if self._released:
            return
        self._released = True
        for entry in self._files.values():
            entry.tail.close()
            FOLLOWED_DESCRIPTORS.give()

    # -- what is pending ----------------------------------------------------

    def uncommitted(self) -> bool:
        """Some file is read further than its checkpoint."""
        return any(entry.uncommitted() for entry in self._files.values())

    def ending(self) -> bool:
        """Some file read further than its checkpoint has ended (end-of-stream read) or lost its writer."""
        return any(e.tail.ended or not e.alive for e in self._files.values() if e.uncommitted())

    def writers_alive(self) -> bool:
        return any(entry.alive for entry in self._files.values())

    def pending_records(self) -> int:
        return sum(entry.pending_records() for entry in self._files.values())

    def pending_bytes(self) -> int:
        return sum(entry.pending_bytes() for entry in self._files.values())

    def skip_reasons(self) -> Counter[str]:
        """Lines skipped as corrupt (never pushed), counted by reason, retired files included."""
        reasons = Counter(self._skipped_retired)
        for entry in self._files.values():
            reasons.update(entry.tail.skip_reasons)
        return reasons

    # -- opening --------------------------------------------------------------

    def _open(self, path: str) -> FollowedFile | None:
        if not FOLLOWED_DESCRIPTORS.take():
            # The process's share of descriptors for followed files is taken (by this pod or others): the file
            # waits on disk until delivered ones are retired; the rest stay for checkpoints and sockets.
            self._defer("every descriptor for followed files is in use (%d)", FOLLOWED_DESCRIPTORS.limit())
            return None
        entry = self._open_counted(path)
        if entry is None:
            FOLLOWED_DESCRIPTORS.give()
        return entry

    def _defer(self, msg: str, *args: object) -> None:
        self.deferred = True
        self._failures.log(
            logging.WARNING, "defer", "%s: " + msg + "; the other spool files are read later", self.pod_dir, *args
        )

    def _open_counted(self, path: str) -> FollowedFile | None:
        try:
            opened = open_spool(path, sink=self.sink)
        except (IsADirectoryError, UnsafePathError, BadSpoolError) as exc:
            # Not a spool file, and will not become one: say so once, not on every scan.
            logger.error("ignoring %s: %s", path, exc)
            self._closed.add(os.path.basename(path))
            self.ignored[path] = str(exc)
            return None
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # this process or the system: never the file's fault
                self._defer("out of descriptors (%s)", exc.strerror)
            else:
                logger.warning("cannot open %s: %s", path, exc)
            return None
        if opened is None:
            # A writer publishes its file with its header whole (by rename): one without is no writer's, and never
            # becomes one. Opened once, not on every scan (200,000 planted empty files took 6 s a scan).
            self._closed.add(os.path.basename(path))
            self._failures.log(
                logging.WARNING,
                "headerless",
                "%s: ignoring spool files with no header (no writer made them, nothing in them is delivered: "
                "they can be removed): %s",
                *os.path.split(path),
            )
            return None
        tail = opened.tail
        foreign = other_pod(tail, self.pod)
        if foreign is not None:  # never pushed under this pod's name: said once, as for a file that is no spool
            tail.close()
            logger.error("ignoring %s: %s", path, foreign)
            self._closed.add(os.path.basename(path))
            self.ignored[path] = foreign
            return None
        start = tail.offset  # a fresh file is read from its header's end; a resumed one, from its checkpoint
        acked = opened.checkpoint or Checkpoint(tail.spool_id, 0, 0, 0)
        entry = self._files[path] = FollowedFile(
            path,
            tail,
            acked,
            alive=tail.writer_alive(),
            resent_seq=acked.sent_seq,
            start=start if not acked.offset else 0,
        )
        return entry
