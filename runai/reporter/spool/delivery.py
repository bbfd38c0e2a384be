"""How far a spool file is delivered: opening it with its checkpoint, and judging its delivery.

The checkpoint is the single commit point (see :mod:`.checkpoint`): every
reader of the spool that asks "what is delivered, what is pending" asks it
here. The uploader opens files with :func:`open_spool`; ``finish()``,
``runai-uploader status`` and ``recover``'s count of what is left judge them
with :func:`delivery_state`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

from .checkpoint import Checkpoint, load_checkpoint
from .reader import SpoolTail

__all__ = ["Delivery", "OpenSpool", "delivery_state", "open_spool"]


class OpenSpool(NamedTuple):
    """A spool file open after its header, or after its checkpoint."""

    tail: SpoolTail
    checkpoint: Checkpoint | None  # None: deliver from the start (none, or none that fits this file)


def open_spool(path: str, *, resume: bool = True) -> OpenSpool | None:
    """Open the spool file *path*, read its header and, with *resume*, move past its checkpoint.

    None while the header is incomplete (a file still being created: try
    again later). Raises OSError if the file cannot be opened (UnsafePathError
    or IsADirectoryError: it never will be), and
    :class:`~.reader.BadSpoolError` if it is not a spool file.
    """
    tail = SpoolTail(path)
    try:
        if not tail.read_header():
            tail.close()
            return None
        return OpenSpool(tail, tail.resume_at_checkpoint() if resume else None)
    except BaseException:
        tail.close()
        raise


@dataclass(frozen=True)
class Delivery:
    """What the checkpoint of one spool file says."""

    checkpoint: Checkpoint | None  # None: nothing delivered yet
    size: int  # the bytes of the file it was judged against
    covered: bool  # nothing of the file is left to deliver
    pending: int = 0  # complete reports after the checkpoint (counted only when asked)
    pending_bytes: int = 0  # the bytes of the lines after the checkpoint (likewise)

    @property
    def records(self) -> int:
        """Reports delivered (header and end marker excluded)."""
        return 0 if self.checkpoint is None else self.checkpoint.records

    @property
    def refused(self) -> int:
        """Values the gateway refused with 400 (logged by name in the pod's log)."""
        return 0 if self.checkpoint is None else self.checkpoint.rejected

    @property
    def bytes_delivered(self) -> int:
        return 0 if self.checkpoint is None else self.checkpoint.offset


def delivery_state(path: str, spool_id: str, size: int, *, reader: SpoolTail | None = None) -> Delivery:
    """How far the spool file *path* (header id *spool_id*, *size* bytes) is delivered, by its checkpoint.

    A file is covered once its checkpoint reaches *size*. A spool file that
    is gone while its pod directory is still there counts as covered: history
    retention deletes single files, and only once they are delivered and their
    writer is gone. A vanished pod directory is another matter.

    With *reader*, the file open just after its header, the checkpoint is
    checked against the file as the uploader checks it, and the complete
    reports after it are counted, reading the file to its last complete line.
    """
    if reader is None:
        checkpoint = load_checkpoint(path, spool_id)
    else:
        checkpoint = reader.resume_at_checkpoint()
    if checkpoint is None:
        covered = reader is None and not os.path.exists(path) and os.path.isdir(os.path.dirname(path))
    else:
        covered = checkpoint.offset >= size
    if reader is None:
        return Delivery(checkpoint, size, covered)
    start = reader.offset  # after the checkpoint, or after the header
    pending = sum(1 for _ in reader.read_all())
    return Delivery(checkpoint, size, covered, pending, reader.offset - start)
