"""What a pod has left to deliver, counted from disk: the question a handoff and ``recover`` ask.

Read-only, and no lock taken: safe beside a running uploader. ``status`` shows
much more (:mod:`uploader.views.status`); this answers two numbers, and why a
pod directory cannot be used at all.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from runai.reporter.safefs import UnsafePathError, open_pod_dir
from runai.reporter.spool import BadSpoolError, delivery_state, holder_pid, open_spool, other_pod, spool_file_names

__all__ = ["Pending", "lock_refusal", "pending", "refusal"]


class Pending(NamedTuple):
    """A pod's undelivered reports, and its live writers (who may write more)."""

    refused: str | None  # why the directory cannot be used: nothing in it can be counted or sent
    writers_alive: int = 0
    reports: int = 0  # complete, valid reports not yet delivered to every sink judged


def refusal(pod_dir: str) -> str | None:
    """Why the pod directory *pod_dir* cannot be used (see runai.reporter.safefs), or None."""
    try:
        os.close(open_pod_dir(pod_dir))
    except UnsafePathError as exc:
        return str(exc)
    except OSError:
        pass  # missing or unreadable: nothing to show
    return None


def lock_refusal(pod_dir: str) -> tuple[str | None, int | None]:
    """Why *pod_dir* cannot be used, its lock's probe included, and the pid of the uploader holding it."""
    refused = refusal(pod_dir)
    if refused or not os.path.isdir(pod_dir):
        return refused, None
    try:
        return None, holder_pid(pod_dir)
    except OSError as exc:  # a lock file that is a symlink, a FIFO, a hard link...: nobody can take the pod
        return f"its lock cannot be probed: {exc}", None  # UnsafePathError's message says what to do


def pending(pod_dir: str, sinks: tuple[str, ...], pod: str | None = None) -> Pending:
    """The reports of *pod_dir* not yet delivered to one of *sinks*, and its live writers, from disk.

    *pod*: the pod it is delivered as (default: the directory's name; see ``other_pod``)."""
    refused, _ = lock_refusal(pod_dir)
    if refused:
        return Pending(refused)
    writers = reports = 0
    for name in spool_file_names(pod_dir):
        path = os.path.join(pod_dir, name)
        try:
            opened = open_spool(path, resume=False)
        except (BadSpoolError, OSError):
            continue  # never deliverable, or gone meanwhile: nothing pending in it
        if opened is None:
            continue  # no complete header yet: nothing to count
        with opened.tail as tail:
            if other_pod(tail, pod) is not None:
                continue  # another pod's (or forged): never delivered here, so nothing pending
            writers += tail.writer_alive()
            reports += delivery_state(path, tail.spool_id, tail.size(), reader=tail, sinks=sinks).pending
    return Pending(None, writers, reports)
