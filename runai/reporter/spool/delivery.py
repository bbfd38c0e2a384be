"""How far a spool file is delivered: opening it with its checkpoint, and judging its delivery.

The checkpoint is the single commit point (see :mod:`.checkpoint`): every
reader of the spool that asks "what is delivered, what is pending" asks it
here. The uploader opens files with :func:`open_spool`; ``finish()``,
``runai-uploader status`` and ``recover``'s count of what is left judge them
with :func:`delivery_state`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple

from .checkpoint import GATEWAY, Checkpoint, load_progress
from .names import spool_file_names
from .reader import BadSpoolError, SpoolTail

__all__ = ["Delivery", "OpenSpool", "delivery_state", "foreign_spool", "open_spool", "other_pod", "receiver_kinds"]

FOREIGN_CHECK_FILES = 1000  # headers a writer reads to tell its pod directory is its own (a restart has a few)


class OpenSpool(NamedTuple):
    """A spool file open after its header, or after its checkpoint."""

    tail: SpoolTail
    checkpoint: Checkpoint | None  # None: deliver from the start (none, or none that fits this file)


def open_spool(path: str, *, resume: bool = True, sink: str = GATEWAY) -> OpenSpool | None:
    """Open the spool file *path*, read its header and, with *resume*, move past *sink*'s checkpoint.

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
        return OpenSpool(tail, tail.resume_at_checkpoint(sink) if resume else None)
    except BaseException:
        tail.close()
        raise


def receiver_kinds(pod_dir: str, names: Iterable[str] | None = None) -> frozenset[str] | None:
    """The kinds of receiver (GATEWAY, REMOTE_WRITE) the jobs of *pod_dir* were configured with, from the
    headers of its spool files (those *names*, if given): empty for a job that kept its reports locally; None when
    unknown (some file was written before headers said so, or no file could be read), where a caller delivers as
    it always did."""
    kinds: set[str] = set()
    known = False
    for name in spool_file_names(pod_dir) if names is None else names:
        try:
            opened = open_spool(os.path.join(pod_dir, name), resume=False)
        except (OSError, BadSpoolError):
            continue  # gone meanwhile, or not a spool: it holds nothing to send anywhere
        if opened is None:
            continue  # still being created
        with opened.tail as tail:
            if tail.receivers is None:
                return None
            kinds.update(tail.receivers)
            known = True
    return frozenset(kinds) if known else None


def other_pod(tail: SpoolTail, pod: str | None = None) -> str | None:
    """Why the spool file *tail* (its header read) is not the pod *pod*'s, or None if it is.

    *pod* is the podUUID every report of the directory is delivered under; None: the directory's name (a pod
    directory under the spool root; one given directly, ``reporterPodDir``, may have any name). A file whose
    header names another pod (or none) was written for another pod, or forged, and is never delivered as this one.
    """
    whose = "this pod's UUID" if pod is not None else "its directory's name"
    pod = os.path.basename(os.path.dirname(tail.path)) if pod is None else pod
    if tail.pod_uuid == pod:
        return None
    named = "no pod" if tail.pod_uuid is None else f"pod {tail.pod_uuid[:100]!r}"
    return (
        f"its header names {named}, not {pod!r} ({whose}): written for another pod or forged, "
        "it is never delivered under this pod's name; remove it"
    )


def foreign_spool(pod_dir: str, pod: str | None = None) -> str | None:
    """Why *pod_dir* is not the pod *pod*'s own (a spool file in it names another pod), or None.

    *pod*: as for :func:`other_pod`. The first :data:`FOREIGN_CHECK_FILES` spool files are read, their header only.
    """
    for name in spool_file_names(pod_dir)[:FOREIGN_CHECK_FILES]:
        try:
            opened = open_spool(os.path.join(pod_dir, name), resume=False)
        except (OSError, BadSpoolError):
            continue  # gone, or no spool: nothing in it is delivered anyway
        if opened is None:
            continue
        with opened.tail as tail:
            why = other_pod(tail, pod)
        if why is not None:
            return f"{name}: {why}"
    return None


@dataclass(frozen=True)
class Delivery:
    """What the checkpoint of one spool file says, for the sinks it was judged for."""

    checkpoint: Checkpoint | None  # the least advanced sink's; None: some sink has nothing delivered yet
    size: int  # the bytes of the file it was judged against
    covered: bool  # nothing of the file is left to deliver to any of the sinks
    pending: int = 0  # complete reports after the checkpoint (counted only when asked)
    pending_bytes: int = 0  # the bytes of the lines after the checkpoint (likewise)
    sinks: Mapping[str, Checkpoint | None] = field(default_factory=dict)  # each sink judged: its own checkpoint

    @property
    def records(self) -> int:
        """Reports delivered to every sink (header and end marker excluded)."""
        return 0 if self.checkpoint is None else self.checkpoint.records

    @property
    def refused(self) -> int:
        """Values the receivers refused by name, summed over the sinks (logged by name in the pod's log)."""
        return sum(ckpt.rejected for ckpt in self.sinks.values() if ckpt is not None)

    @property
    def bytes_delivered(self) -> int:
        """Bytes delivered to every sink."""
        return 0 if self.checkpoint is None else self.checkpoint.offset


def delivery_state(
    path: str,
    spool_id: str,
    size: int,
    *,
    reader: SpoolTail | None = None,
    sinks: Iterable[str] = (GATEWAY,),
    quiet: bool = False,
) -> Delivery:
    """How far the spool file *path* (header id *spool_id*, *size* bytes) is delivered to *sinks*.

    A file is covered once the checkpoint of every one of *sinks* reaches
    *size*. A spool file that is gone while its pod directory is still there
    counts as covered: history retention deletes single files, and only once
    they are delivered and their writer is gone. A vanished pod directory is
    another matter.

    With *reader*, the file open just after its header, the checkpoints are
    checked against the file as the uploader checks them, and the complete
    reports after the least advanced one are counted, reading the file to its
    last complete line. *quiet*: an unusable checkpoint is not warned of
    (a caller that polls; the uploader warns of it in its log).
    """
    sinks = tuple(sinks)
    if not sinks:
        raise ValueError("delivery_state needs the sinks to judge delivery to (at least one)")
    if reader is None:
        progress = load_progress(path, spool_id, sinks=sinks, quiet=quiet)
    else:
        progress = reader.checkpoints(sinks)
    by_sink = {sink: progress.get(sink) for sink in sinks}
    checkpoint = _least_advanced(by_sink.values())
    if checkpoint is None:
        covered = reader is None and not os.path.exists(path) and os.path.isdir(os.path.dirname(path))
    else:
        covered = checkpoint.offset >= size
    if reader is None:
        return Delivery(checkpoint, size, covered, sinks=by_sink)
    if checkpoint is not None:
        reader.resume_at(checkpoint)
    start = reader.offset  # after the checkpoint, or after the header
    pending = sum(1 for _ in reader.read_all())
    return Delivery(checkpoint, size, covered, pending, reader.offset - start, by_sink)


def _least_advanced(checkpoints: Iterable[Checkpoint | None]) -> Checkpoint | None:
    """The checkpoint that covers least; None if one of them is None (or there are none)."""
    least: Checkpoint | None = None
    for ckpt in checkpoints:
        if ckpt is None:
            return None
        if least is None or ckpt.offset < least.offset:
            least = ckpt
    return least
