"""How the node agent judges a pod: from stat, headers and checkpoints, reading at most a bounded block.

``runai-uploader status`` counts every pending report, reading each spool file
to its end. The agent cannot afford that: it judges pods in its main loop, and a
pod whose own uploader has a backlog of gigabytes (or a job that made its spool
file a sparse 20 GiB) would stall every other pod, and SIGTERM, for as long as
the read takes. So here the pending bytes come from the file sizes and the
checkpoints, and reports are counted only in the first :data:`COUNT_BYTES` of a
pod's undelivered lines: exact for the usual few, a lower bound beyond. Likewise
only the first :data:`~.config.MAX_JUDGED_FILES` entries of a pod directory are
read (:mod:`.listing`): a pod holding more is judged "at least", as pending.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runai.reporter.safefs import open_in_pod_dir
from runai.reporter.spool import (
    BadSpoolError,
    End,
    Header,
    SpoolTail,
    decode,
    other_pod,
)

from ..delivery.intent import intended_sinks
from ..delivery.pending import refusal
from ..runtime.ratelog import RateLimitedLog
from .config import REJUDGE_SECONDS
from .listing import Listing, Signature, dir_mtime, list_pod, listing_signature

if TYPE_CHECKING:
    from .metrics import AgentMetrics
    from .schedule import Pod

__all__ = [
    "COUNT_BYTES",
    "Judged",
    "PodJudge",
    "Signature",
    "dir_mtime",
    "judge_pod",
    "listing_signature",
    "pod_dirs",
    "printable",
]

logger = logging.getLogger(__name__)

_LISTING_FAILURES = RateLimitedLog(logger)

COUNT_BYTES = 1 << 20  # a pod's undelivered bytes read to count its reports; past them the count is a lower bound


@dataclass
class Judged:
    """One pod as the agent sees it."""

    refused: str | None = None  # why the directory cannot be used
    files: frozenset[str] = frozenset()  # its spool files
    writers_alive: int = 0
    reports_pending: int = 0  # at least this many (exact unless *counted_all* is False)
    bytes_pending: int = 0
    counted_all: bool = True  # False: more may be pending (a file not read to its end, or not read at all)
    newest_birth: float | None = None  # the header time of the newest file whose writer is alive (Unix time)


def judge_pod(pod_dir: str, sinks: tuple[str, ...], listing: Listing | None = None) -> Judged:
    """Judge the pod directory *pod_dir* (its *listing*, else listed now) for *sinks*: never more than
    :data:`COUNT_BYTES` of its lines read, nor more files than the listing holds."""
    refused = refusal(pod_dir)
    if refused:
        return Judged(refused=refused)
    names, complete = listing or list_pod(pod_dir)
    judged = Judged(files=frozenset(names), counted_all=complete)
    budget = COUNT_BYTES
    for name in names:
        budget -= _judge_file(os.path.join(pod_dir, name), sinks, judged, budget)
        if judged.refused:
            return judged
    return judged


class PodJudge:
    """Judges the agent's pods for *sinks*, keeping on each :class:`~.schedule.Pod` what the next look compares
    (its files, directory mtime, signature, grace), and setting its pending gauges in *metrics*.

    *grace*: the seconds a new live writer's job has to start its own uploader.
    """

    def __init__(self, sinks: tuple[str, ...], metrics: AgentMetrics, grace: float, any_receiver: bool = False) -> None:
        self._sinks, self._any_receiver = sinks, any_receiver
        self._metrics = metrics
        self._grace = grace

    def listing_changed(self, pod: Pod) -> bool:
        """Whether the pod's spool files changed since it was judged (one stat unless its directory did)."""
        mtime = dir_mtime(pod.path)
        if mtime == pod.mtime:
            return False
        pod.mtime = mtime
        if pod.overflow_mtime is not None:  # too many entries to compare: any change since its judgement counts
            return mtime != pod.overflow_mtime
        listing = list_pod(pod.path)
        return not listing.complete or frozenset(listing.names) != pod.files

    def held(self, pod: Pod, now: float) -> Judged | None:
        """Judge a pod another uploader serves, for its gauges: only if its files changed since (else None)."""
        signature = listing_signature(pod.path)
        if signature == pod.signature:
            pod.next_judge = now + REJUDGE_SECONDS
            return None
        status = self.judge(pod, now)
        if not status.refused:
            pod.signature = signature
        return status

    def judge(self, pod: Pod, now: float) -> Judged:
        """Judge the pod from its files and checkpoints, and set its gauges unless it is refused."""
        pod.mtime = dir_mtime(pod.path)  # before listing: a change after it is seen next time
        listing = list_pod(pod.path)
        pod.overflow_mtime = None if listing.complete else pod.mtime
        pod.sinks, skipped = intended_sinks(self._sinks, pod.path, any_receiver=self._any_receiver, names=listing.names)
        if skipped and not listing.complete:  # the files not read may name them: never idle for a look cut short
            pod.sinks, skipped = self._sinks, None
        if skipped:  # idle until its files change (a new job under the same pod may name other receivers)
            if pod.skipped != skipped:
                logger.info("pod %s: %s", printable(pod.name), skipped)
            pod.skipped, pod.files = skipped, frozenset(listing.names)
            return Judged(files=pod.files)
        pod.skipped = None
        status = judge_pod(pod.path, pod.sinks, listing)
        self._metrics.judged.inc()
        pod.next_judge, pod.signature = now + REJUDGE_SECONDS, None
        if status.refused:
            return status
        if status.writers_alive and status.files - pod.files:
            # Counted from the newest live file's birth, not from now: a pod the agent noticed late (an idle
            # pod is looked at every IDLE_POLL_SECONDS) must not wait a whole grace more.
            born = time.time() if status.newest_birth is None else status.newest_birth
            pod.grace_until = now + self._grace - max(0.0, time.time() - born)
        pod.files = status.files
        self._metrics.set_pending(pod.name, status.reports_pending, status.bytes_pending)
        return status


def pod_dirs(spool_dir: str) -> set[str] | None:
    """The pod directories under *spool_dir* (not their symlinks: refusal() refuses those anyway).

    Only a spool directory that is not there (yet) has none. Any other failure (EMFILE, ENFILE, EIO) gives None:
    no listing, so that no pod is forgotten (its series dropped, its delivery never started) because this process
    ran out of descriptors; the caller keeps the pods it has. That failure is logged once a minute. (No copy of
    the last listing is kept for it: 100,000 names are 10 MB.)
    """
    try:
        with os.scandir(spool_dir) as entries:
            names = {e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)}
    except (FileNotFoundError, NotADirectoryError):
        names = set()  # not there yet: it is looked for again at the next poll
    except OSError as exc:
        _LISTING_FAILURES.log(
            logging.ERROR, spool_dir, "cannot list %s (%s): its pods are taken as they were", spool_dir, exc
        )
        return None
    _LISTING_FAILURES.clear(spool_dir)
    return names


def printable(name: str) -> str:
    """A directory's name as its bytes, escaped where they are not ASCII text (the log stays one clean line)."""
    return os.fsencode(name).decode("ascii", "backslashreplace")


def _judge_file(path: str, sinks: tuple[str, ...], judged: Judged, budget: int) -> int:
    """Add the spool file *path* to *judged*; the bytes of it read to count reports."""
    try:
        tail = SpoolTail(path)
    except OSError:
        return 0  # gone meanwhile, or unsafe: the uploader that delivers the pod says why in its log
    with tail:
        try:
            if not tail.read_header():
                return 0  # still being created
        except (BadSpoolError, OSError):
            return 0  # never a spool file: nothing in it can be delivered
        foreign = other_pod(tail)
        if foreign is not None:
            # Refused whole, logged once and counted (runai_uploader_refused_pods): only the directory's
            # owner can write there, so the refusal costs nobody else.
            judged.refused = f"{os.path.basename(path)}: {foreign}"
            return 0
        size, header_end = tail.size(), tail.offset
        if tail.writer_alive():
            judged.writers_alive += 1
            born = _birth(path, header_end)
            if born is not None and (judged.newest_birth is None or born > judged.newest_birth):
                judged.newest_birth = born
        progress = tail.checkpoints(sinks)
        # Delivered to every sink up to the least advanced checkpoint; a sink without one starts over.
        offsets = [progress[sink].offset for sink in sinks if sink in progress]
        start = min(offsets) if len(offsets) == len(sinks) else header_end
    if start >= size:
        return 0
    reports, complete, read = _count(path, start, min(size - start, max(budget, 0)))
    judged.reports_pending += reports
    if read < size - start:  # not read to its end: its bytes from the sizes, its reports a lower bound
        judged.counted_all = False
        judged.bytes_pending += size - start
    else:
        judged.bytes_pending += complete  # a torn or unfinished last line is nothing to deliver
    return read


def _count(path: str, start: int, length: int) -> tuple[int, int, int]:
    """The reports in *length* bytes of *path* from *start*, the bytes of their complete lines, the bytes read."""
    if length <= 0:
        return 0, 0, 0
    try:
        fd = open_in_pod_dir(path, os.O_RDONLY)
    except OSError:
        return 0, 0, 0
    try:
        data = os.pread(fd, length, start)
    except OSError:
        return 0, 0, 0
    finally:
        os.close(fd)
    complete = data.rfind(b"\n") + 1
    reports = 0
    for line in data[:complete].splitlines():
        try:
            record = decode(line)
        except ValueError:
            continue  # damage: skipped by the uploader too
        if not isinstance(record, (Header, End)):
            reports += 1
    return reports, complete, len(data)


def _birth(path: str, header_end: int) -> float | None:
    """When the spool file *path* was made, from its header's time; None if that cannot be read."""
    try:
        fd = open_in_pod_dir(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        record = decode(os.pread(fd, header_end, 0).rstrip(b"\n"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    # A header stamped in the future (a clock stepped back) is taken as made now: the grace is never longer.
    return min(record.ts, time.time()) if isinstance(record, Header) else None
