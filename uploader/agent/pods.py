"""The node agent (``runai-uploader agent``): deliver every pod of a spool directory that no live uploader holds.

A job's own uploader dies with its pod. The agent, one per node (a DaemonSet),
watches the whole spool directory and delivers what such pods left behind, and
the pods of jobs whose uploader died, with nobody running ``recover``.

Liveness is the pod lock itself (:class:`~runai.reporter.spool.PodLock`, an
``flock``), never a pid: the agent runs in another pid namespace. Per pod:

* *idle*: everything delivered and no writer alive. Nothing can change but a new
  spool file (a writer that comes back writes a new one), so the agent only
  compares the directory's mtime every :data:`IDLE_POLL_SECONDS`: about no CPU
  for a thousand idle pods.
* *active*: reports pending or writers alive. Its lock is probed (a shared lock,
  which never disturbs its holder) every :data:`LOCK_POLL_SECONDS`; once it is
  free, the agent takes the lock and delivers (:class:`PodDelivery`, a thread),
  so it takes over within about a second of an uploader's death. A spool file
  new to the agent whose writer is alive gets :data:`GRACE_SECONDS` for its job
  to start its own uploader first, counted from the file's birth (its header's
  time), not from when the agent noticed it.
* *taken*: the agent's delivery runs until the writers are gone and everything
  is delivered (it retries an unreachable sink for ever), then hands the lock off
  as any uploader does and the pod is judged again.

New pod directories are seen at once through a watch on the spool directory, and
within :data:`ROOT_POLL_SECONDS` without one. Judging a pod reads a bounded block
of it (:mod:`.judge`); a pod that fails in any way is refused (looked at again
every minute), never the agent's end. Timings are in :mod:`.config`.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

from runai.reporter.settings import ConfigError, Settings, check_pod_uuid
from runai.reporter.spool import PodLock, holder_pid, spool_file_names

from ..delivery.intent import intended_sinks, restrict
from ..runtime.wakeup import Wakeup
from .config import (GRACE_SECONDS, IDLE_POLL_SECONDS, LOCK_POLL_SECONDS, MAX_DELIVERIES, MIN_SLEEP_SECONDS,
                     NEW_POD_SECONDS, REFUSED_POLL_SECONDS, REJUDGE_SECONDS, ROOT_POLL_SECONDS, STOP_SECONDS)
from .delivery import PodDelivery
from .judge import Judged, Signature, dir_mtime, judge_pod, listing_signature, pod_dirs
from .metrics import AgentMetrics
from .watch import RootWatch

__all__ = ["Agent"]

logger = logging.getLogger(__name__)

_IDLE, _ACTIVE, _TAKEN, _REFUSED = "idle", "active", "taken", "refused"


@dataclass
class _Pod:
    name: str
    path: str
    found: float  # when the agent found it (monotonic)
    state: str = _ACTIVE  # until judged
    files: frozenset[str] = frozenset()  # its spool files when last judged
    mtime: int = -1  # its directory's mtime (ns) when last listed
    grace_until: float = 0.0
    next_check: float = 0.0
    next_judge: float = 0.0
    signature: Signature | None = None  # its files when last judged (see _held)
    refused: str | None = None  # why it was last refused (logged once per reason)
    sinks: tuple[str, ...] = ()  # the agent's sinks its job named (delivery.intent), when last judged
    skipped: str | None = None  # why it is not delivered here: its job named none of them (logged once)
    delivery: PodDelivery | None = None


class Agent:
    """Follows every pod directory under *spool_dir*; ``run()`` until ``stop()`` (safe in a signal handler).

    *settings_for(pod)* gives a pod's settings (raising ConfigError for a pod that cannot be delivered);
    *sinks* are the configured sinks' names; each pod is judged and delivered for those of them its job named
    (all of them with *any_receiver*, or for a pod written before spool headers said).
    """

    def __init__(self, spool_dir: str, settings_for: Callable[[str], Settings], sinks: tuple[str, ...],
                 metrics: AgentMetrics, *, max_deliveries: int = MAX_DELIVERIES, grace: float = GRACE_SECONDS,
                 use_watchdog: bool = True, any_receiver: bool = False) -> None:
        self.spool_dir = spool_dir
        self.metrics = metrics
        self._settings_for = settings_for
        self._sinks, self._any_receiver = sinks, any_receiver
        self._max_deliveries = max_deliveries  # pods delivered at once (a thread and a connection each)
        self._grace = grace  # seconds a new live writer's job has to start its own uploader
        self._pods: dict[str, _Pod] = {}
        self._wake = Wakeup()
        self._stopping = False
        self._root_changed = True
        self._next_root_scan = 0.0
        self._watch = RootWatch(spool_dir, self._root_event) if use_watchdog else None

    def stop(self) -> None:
        # A plain flag and the self-pipe: a signal handler may call this (see Wakeup).
        self._stopping = True
        self._wake.set()

    def run(self) -> int:
        """Deliver until stopped; 0 (what is not delivered stays on disk, for the next agent or uploader)."""
        self._wake.open()
        logger.info("agent started on %s (sinks: %s)", self.spool_dir, ", ".join(self._sinks))
        try:
            while not self._stopping:
                self._wake.clear()
                now = time.monotonic()
                self._discover(now)
                for pod in list(self._pods.values()):
                    if self._stopping:
                        break
                    self._tend_safely(pod, now)
                self.metrics.refused.set(sum(1 for p in self._pods.values() if p.state == _REFUSED))
                self._wake.wait(self._sleep(time.monotonic()))
        finally:
            self._shutdown()
        return 0

    # -- discovery ---------------------------------------------------------------

    def _root_event(self) -> None:
        self._root_changed = True
        self._wake.set()

    def _discover(self, now: float) -> None:
        if not self._root_changed and now < self._next_root_scan:
            return
        self._root_changed, self._next_root_scan = False, now + ROOT_POLL_SECONDS
        watch = self._watch
        if watch is not None and not (watch.active or watch.failed) and os.path.isdir(self.spool_dir):
            watch.start()
        names = pod_dirs(self.spool_dir)
        for name in names - self._pods.keys():
            pod = self._pods[name] = _Pod(name, os.path.join(self.spool_dir, name), now, next_check=now)
            try:
                check_pod_uuid(name, "the pod directory's name")
            except ConfigError as exc:  # a name is never given series: it could break the metrics page
                self._refuse(pod, now, str(exc))
                pod.next_check = math.inf  # a name does not change
                continue
            logger.debug("pod %s: found", name)
        for name in self._pods.keys() - names:
            if self._pods[name].delivery is None:  # a delivery notices by itself, and ends
                del self._pods[name]
                self.metrics.forget(name)
                logger.info("pod %s: its directory is gone", _printable(name))  # maybe a refused name
        self.metrics.pods.set(len(self._pods))

    # -- each pod ----------------------------------------------------------------

    def _tend_safely(self, pod: _Pod, now: float) -> None:
        try:
            self._tend(pod, now)
        except Exception as exc:  # one pod (whatever its owner planted there) must never end the agent
            self._refuse(pod, now, f"judging it failed: {exc!r}", trace=True)

    def _tend(self, pod: _Pod, now: float) -> None:
        if pod.delivery is not None:
            if pod.delivery.alive:
                return
            failed, pod.delivery, pod.state, pod.next_check = pod.delivery.failed, None, _ACTIVE, now
            if failed:  # its traceback is logged: tried again in a minute, not every second
                self._refuse(pod, now, "its delivery failed")
                return
        if now < pod.next_check:
            return
        if pod.state == _IDLE and not self._listing_changed(pod):
            pod.next_check = now + (LOCK_POLL_SECONDS if now - pod.found < NEW_POD_SECONDS else IDLE_POLL_SECONDS)
            return
        self._check(pod, now)

    def _listing_changed(self, pod: _Pod) -> bool:
        mtime = dir_mtime(pod.path)
        if mtime == pod.mtime:
            return False
        pod.mtime = mtime
        return frozenset(spool_file_names(pod.path)) != pod.files

    def _check(self, pod: _Pod, now: float) -> None:
        """Probe the lock; judge the pod; take it when nobody delivers what it holds."""
        try:
            holder = holder_pid(pod.path)
        except OSError as exc:  # an unsafe lock file (a symlink, a FIFO, a hard link), or directory: its message
            self._refuse(pod, now, f"its lock cannot be probed: {exc}")  # says what to do
            return
        if holder is not None:  # a live uploader serves it
            pod.state, pod.next_check = _ACTIVE, now + LOCK_POLL_SECONDS
            if now >= pod.next_judge:
                self._held(pod, now)
            return
        status = self._judge(pod, now)
        if status is None:
            return
        if not (status.writers_alive or status.reports_pending or status.bytes_pending):
            # A directory just made is often still empty (its job creates its spool file next): look again soon.
            poll = LOCK_POLL_SECONDS if now - pod.found < NEW_POD_SECONDS else IDLE_POLL_SECONDS
            pod.state, pod.next_check, pod.refused = _IDLE, now + poll, None
            return
        pod.state = _ACTIVE
        if status.writers_alive and now < pod.grace_until:
            # Its own uploader may be starting; looked at again every second meanwhile (a writer dying in its
            # grace is taken at once).
            pod.next_check = min(pod.grace_until, now + LOCK_POLL_SECONDS)
            return
        pod.next_check = now + LOCK_POLL_SECONDS
        self._take(pod, status)

    def _held(self, pod: _Pod, now: float) -> None:
        """Judge a pod another uploader serves, for its gauges: only if its files changed since."""
        signature = listing_signature(pod.path)
        if signature == pod.signature:
            pod.next_judge = now + REJUDGE_SECONDS
            return
        if self._judge(pod, now) is not None:
            pod.signature = signature

    def _judge(self, pod: _Pod, now: float) -> Judged | None:
        """Judge the pod from its files and checkpoints (and set its gauges); None if the directory is refused."""
        pod.mtime = dir_mtime(pod.path)  # before listing: a change after it is seen next time
        pod.sinks, skipped = intended_sinks(self._sinks, pod.path, any_receiver=self._any_receiver)
        if skipped:  # idle until its files change (a new job under the same pod may name other receivers)
            if pod.skipped != skipped:
                logger.info("pod %s: %s", pod.name, skipped)
            pod.skipped, pod.files, pod.state = skipped, frozenset(spool_file_names(pod.path)), _IDLE
            pod.next_check = now + IDLE_POLL_SECONDS
            return None
        pod.skipped = None
        status = judge_pod(pod.path, pod.sinks)
        pod.next_judge, pod.signature = now + REJUDGE_SECONDS, None
        if status.refused:
            self._refuse(pod, now, status.refused)
            return None
        if status.writers_alive and status.files - pod.files:
            # Counted from the newest live file's birth, not from now: a pod the agent noticed late (an idle
            # pod is looked at every IDLE_POLL_SECONDS) must not wait a whole grace more.
            born = time.time() if status.newest_birth is None else status.newest_birth
            pod.grace_until = now + self._grace - max(0.0, time.time() - born)
        pod.files = status.files
        self.metrics.set_pending(pod.name, status.reports_pending, status.bytes_pending)
        return status

    def _refuse(self, pod: _Pod, now: float, why: str, trace: bool = False) -> None:
        if pod.refused != why:  # logged once: it is looked at again every minute
            logger.error("pod %s: cannot deliver it: %s", _printable(pod.name), why, exc_info=trace)
        pod.refused, pod.state, pod.next_check = why, _REFUSED, now + REFUSED_POLL_SECONDS

    def _take(self, pod: _Pod, status: Judged) -> None:
        if sum(1 for p in self._pods.values() if p.delivery is not None) >= self._max_deliveries:
            return  # tried again at the next lock poll
        try:
            settings = restrict(self._settings_for(pod.name), pod.sinks)
        except ConfigError as exc:
            self._refuse(pod, time.monotonic(), str(exc))
            return
        lock = PodLock(pod.path)
        try:
            if not lock.acquire():
                return  # its own uploader took it meanwhile
            delivery = PodDelivery(settings, lock, self.metrics, self._wake.set)
        except Exception as exc:  # this pod, not the agent: refused (a traceback a minute, not one a second)
            lock.release()
            self._refuse(pod, time.monotonic(), f"cannot start delivering it: {exc!r}", trace=True)
            return
        logger.info("pod %s: no uploader holds it; delivering %s%d pending reports (%d writers alive)",
                    pod.name, "" if status.counted_all else "at least ", status.reports_pending,
                    status.writers_alive)
        pod.delivery, pod.state, pod.refused = delivery, _TAKEN, None
        delivery.start()

    # -- timing and stopping -----------------------------------------------------------

    def _sleep(self, now: float) -> float:
        due = min((p.next_check for p in self._pods.values() if p.delivery is None), default=self._next_root_scan)
        return max(MIN_SLEEP_SECONDS, min(due, self._next_root_scan) - now)

    def _shutdown(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        deliveries = [p.delivery for p in self._pods.values() if p.delivery is not None]
        for delivery in deliveries:
            delivery.stop()
        deadline = time.monotonic() + STOP_SECONDS
        for delivery in deliveries:
            delivery.join(max(0.0, deadline - time.monotonic()))
        late = [d.pod for d in deliveries if d.alive]
        if late:
            logger.warning("stopping with %d deliveries still ending (%s): their checkpoints are written only "
                           "after a receiver's answer, so nothing is lost", len(late), ", ".join(late))
        self._wake.close()
        logger.info("agent stopped")


def _printable(name: str) -> str:
    """A directory's name as its bytes, escaped where they are not ASCII text (the log stays one clean line)."""
    return os.fsencode(name).decode("ascii", "backslashreplace")
