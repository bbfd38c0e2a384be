"""One spool file an uploader follows: how far it is read, and how far delivered (see :mod:`.followed`)."""

from __future__ import annotations

from dataclasses import dataclass

from runai.reporter.spool import Checkpoint, Report, SpoolTail

__all__ = ["FollowedFile"]


@dataclass(eq=False)
class FollowedFile:
    """One followed spool file: how far it is read, and how far delivered."""

    path: str
    tail: SpoolTail  # the read position, and what was read up to it
    acked: Checkpoint  # its last checkpoint: how far it is delivered
    alive: bool  # its writer held its lock at the last liveness check
    synced: int = 0  # its size at its last fsync
    refused: int = 0  # its records the receiver refused since its last checkpoint
    # The records up to this seq were in a push that an earlier uploader began and never checkpointed
    # (it died): the receiver may have them already (Checkpoint.sent_seq as found at open).
    resent_seq: int = 0
    start: int = 0  # the offset of its first record (just after its header)

    def resent(self, record: Report) -> bool:
        """*record* may be at the receiver already: an earlier uploader's push covered it and then died."""
        return record.seq <= self.resent_seq

    def uncommitted(self) -> bool:
        """Read further than its checkpoint: values held or being pushed, or lines skipped."""
        return self.tail.offset != self.acked.offset

    def retirable(self) -> bool:
        """Delivered as far as it is read, and its writer is gone (what is read is all there is)."""
        return not self.alive and not self.uncommitted()

    def pending_records(self) -> int:
        """Reports read or on disk that its checkpoint does not cover (a lower bound while reading)."""
        return self.tail.records - self.acked.records

    def pending_bytes(self) -> int:
        """Bytes of the file that its checkpoint does not cover."""
        return self.tail.size() - self.acked.offset
