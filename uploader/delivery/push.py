"""One push of a sink's loop and what follows it: refusals counted and logged by name, then the commit.

A mixin of :class:`~.service.Uploader`, kept apart so that each module stays one concept: when to read,
push and exit there; what one push does here. After the receiver's 2xx, each file's checkpoint for this
sink is written: the commit point.
"""

from __future__ import annotations

import logging
from typing import Callable

from runai.reporter.settings import redact_url
from runai.reporter.spool import Report, refused_by

from ..runtime.descriptors import out_of_descriptors
from ..sinks import Refusal, Sink
from ..sinks.exposition import exposition_name
from ..sinks.http import StatusError
from .followed import FollowedFiles
from .hooks import DeliveryHooks
from .scan import Scanner

__all__ = ["Pushing"]

logger = logging.getLogger(__name__)


class Pushing:
    """What a push reads and changes of the loop: its own state here, the loop's set by Uploader.__init__."""

    _files: FollowedFiles
    _scanner: Scanner
    _stopping: bool

    def __init__(self, sink: Sink, on_progress: Callable[[int, int], None] | None, hooks: DeliveryHooks) -> None:
        self.sink = sink
        self.on_progress = on_progress
        self._hooks = hooks
        # what this run did, for summaries
        self.delivered_records = 0
        self.delivered_bytes = 0  # of spool files, header lines included
        # undelivered_bytes() as of the last commit with an on_progress: what another loop's thread may read
        # (SinkLoops), since the followed files themselves change under it in this loop's thread
        self.undelivered_at_commit = 0
        self.rejected: dict[str, str] = {}  # exposition name (printable) -> the receiver's answer, or why not sent
        self.last_error = ""
        self._retry_after: float | None = None  # the wait the last failed push's receiver asked for

    def _deliver(self) -> bool:
        held = self._scanner.latest.values()
        sources = {id(record): path for record, path in held}  # the file each refusal is counted against
        sink, records = self.sink, [record for record, _ in held]
        resent: frozenset[int] = frozenset()
        if sink.marks_sending:
            resent = self._files.resent(held)
            self._files.mark_sending()
        self._retry_after = None
        try:
            rejected = sink.push(records, resent)
        except OSError as exc:
            self._retry_after = exc.retry_after if isinstance(exc, StatusError) else None
            self._hooks.push_failed(sink.name)
            if sink.marks_sending and not sink.reached:
                self._files.unmark()
            if not self._stopping:
                self._note_failure(exc)
            return False
        if records:
            self._hooks.pushed(sink.name)
        for record, refusal in rejected:
            self._refused(record, refusal, sources[id(record)])
        self._scanner.latest.clear()
        return self._commit()

    def _refused(self, record: Report, refusal: Refusal, path: str) -> None:
        """Count and log (once per name) a report refused by name."""
        entry = self._files.get(path)
        if entry is not None:  # always: a file with values held is read past its checkpoint, so followed
            entry.refused += 1
        # A name may hold lone surrogates: keep it printable for logs and summaries.
        name = ascii(exposition_name(record))[1:-1]
        if name not in self.rejected:
            who = refused_by(self.sink.receiver) if isinstance(refusal, StatusError) else "cannot push"
            logger.error(
                "%s %s %s (pushed as %s); the other reports are not affected: %s",
                who,
                record.kind,
                ascii(record.name),
                name,
                refusal,
            )
        self.rejected[name] = str(refusal)

    def _commit(self) -> bool:
        """Write the checkpoint of every file read further than its last one."""
        records, size, error = self._files.commit()
        self.delivered_records += records
        self.delivered_bytes += size
        if records:
            self._hooks.delivered(self.sink.name, records)
        if error is not None:
            self.last_error = str(error)
        if self.on_progress is not None:
            self.undelivered_at_commit = self._files.pending_bytes()
            self.on_progress(self.delivered_records, self.delivered_bytes)
        return error is None

    def _note_failure(self, exc: OSError) -> None:
        first, local = not self.last_error, out_of_descriptors(exc)
        self.last_error = local or str(exc)
        if isinstance(exc, StatusError):
            kind = "answered with an error"
        elif isinstance(exc, TimeoutError):
            kind = "did not answer in time"
        else:
            kind = "cannot be tried: " + local if local else "is unreachable"
        log = logger.warning if first else logger.debug
        log(
            "%s %s %s (%s); retrying with backoff, nothing is lost",
            self.sink.receiver,
            redact_url(self.sink.url),
            kind,
            exc,
        )
