"""The node agent (``runai-uploader agent``): deliver every pod of a spool directory that no live uploader holds.

A job's own uploader dies with its pod. The agent, one per node (a DaemonSet),
watches the whole spool directory and delivers what such pods left behind, and
the pods of jobs whose uploader died, with nobody running ``recover``.

Liveness is the pod lock itself (:class:`~runai.reporter.spool.PodLock`, an
``flock``), never a pid: the agent runs in another pid namespace. Per pod:

* *idle*: everything delivered, no writer alive. Only a new spool file can change
  that: its directory is watched (:mod:`.idle`), its mtime compared every
  :data:`IDLE_POLL_SECONDS` where it cannot be.
* *active*: reports pending or writers alive. Its lock is probed (shared: its
  holder is never disturbed) every :data:`LOCK_POLL_SECONDS`. A new live writer
  gets :data:`GRACE_SECONDS` from its file's birth to start its own uploader.
* *queued*: free to take, waiting for a slot: dead pods first, owners in turn, each owner's slots bounded
  (:mod:`.slots`); judged once (taking its lock is the probe), a live one probed while it waits (:mod:`.waiting`).
* *taken*: delivered (:class:`PodDelivery`, a thread) until its writers are gone
  and everything is delivered (an unreachable sink is retried for ever); the lock
  is handed off as any uploader does, and the pod is idle (unjudged) if all was
  delivered, else judged again.

New pod directories are seen at once through one inotify watch on the spool
directory, and within :data:`ROOT_POLL_SECONDS` without it. Each pass looks only
at the pods due (:mod:`.schedule`): a catch-up costs each pod a bounded
amount of work. Judging reads a bounded block at most (:mod:`.judge`); a
pod that fails in any way is refused (looked at again every minute). The
timings named here are in :mod:`.config`.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from runai.reporter.settings import ConfigError, Settings, check_pod_uuid
from runai.reporter.spool import holder_pid

from ..delivery.intent import restrict
from ..runtime.ratelog import RateLimitedLog
from ..runtime.wakeup import Wakeup
from .bound import OwnedStates, PodBound
from .config import (
    GRACE_SECONDS,
    IDLE_POLL_SECONDS,
    LOCK_POLL_SECONDS,
    MAX_DELIVERIES,
    MAX_PODS_PER_OWNER,
    MIN_SLEEP_SECONDS,
    NEW_POD_SECONDS,
    REFUSED_POLL_SECONDS,
    STOP_SECONDS,
)
from .delivery import stop_all, take_pod
from .discover import Discovery
from .idle import IdleWatch
from .judge import Judged, PodJudge, printable
from .metrics import AgentMetrics
from .passes import Passes
from .schedule import ACTIVE, IDLE, QUEUED, REFUSED, TAKEN, DueTimes, Pod
from .slots import Slots
from .waiting import still_live

__all__ = ["Agent"]

logger = logging.getLogger(__name__)


class Agent:
    """Follows every pod directory under *spool_dir*; ``run()`` until ``stop()`` (safe in a signal handler).

    *settings_for(pod)* gives a pod's settings (ConfigError: it cannot be delivered); *sinks* are the configured
    sinks' names: each pod goes to those its job named (every one with *any_receiver*, or for a pod written before
    spool headers said).
    """

    def __init__(
        self,
        spool_dir: str,
        settings_for: Callable[[str], Settings],
        sinks: tuple[str, ...],
        metrics: AgentMetrics,
        *,
        max_deliveries: int = MAX_DELIVERIES,
        max_deliveries_per_owner: int = 0,  # 0: a quarter of max_deliveries (see .slots)
        grace: float = GRACE_SECONDS,
        use_watchdog: bool = True,
        any_receiver: bool = False,
        max_idle_watches: int | None = None,
        max_pods_per_owner: int = MAX_PODS_PER_OWNER,
    ) -> None:
        self.spool_dir, self.metrics, self._settings_for, self._sinks = spool_dir, metrics, settings_for, sinks
        self._judging = PodJudge(sinks, metrics, grace, any_receiver)  # grace: for a new writer's own uploader
        self._pods: dict[str, Pod] = {}
        self._wake = Wakeup()
        # A pass looks only at the pods due, the deliveries that ended, and the queue (see .schedule).
        self._due, self._states = DueTimes(), OwnedStates()  # (the pods in each state: for the gauges)
        self._bound = PodBound(spool_dir, self._states, self._drop, max_pods_per_owner)
        self._slots = Slots(max_deliveries, self._wake.set, max_deliveries_per_owner)  # a thread, a connection each
        self._passes = Passes(self._due)  # each owner's share of the loop's time
        self._stopping = False
        self._dirs = Discovery(spool_dir, self._wake.set, use_watchdog)
        # max_idle_watches: None, the system's cap (see .idle.watch_cap)
        self._idle_watch = IdleWatch(self._wake.set, enabled=use_watchdog, max_watches=max_idle_watches)
        self._gone = RateLimitedLog(logger)  # a directory renamed in a loop must not flood the log

    def stop(self) -> None:
        # A plain flag and the self-pipe: a signal handler may call this (see Wakeup).
        self._stopping = True
        self._wake.set()

    def run(self) -> int:
        """Deliver until stopped; 0 (what is not delivered stays on disk, for the next agent or uploader)."""
        self._wake.open()
        self._idle_watch.start()
        logger.info("agent started on %s (sinks: %s)", self.spool_dir, ", ".join(self._sinks))
        try:
            while not self._stopping:
                self._wake.clear()
                self.metrics.heartbeat.beat()  # /healthz: the loop turns
                now = time.monotonic()
                self._discover(now)
                for name in self._idle_watch.changed():  # a new entry in an idle pod's directory (only idle
                    self._due.set(name, now)  # pods are watched: see _tend_safely): looked at now
                behind = self._passes.run(now, self._pods, self._tend_next, lambda: self._stopping)
                self._take_queued()
                self.metrics.set_states(self._states, self._idle_watch.count)
                self.metrics.sweep(now)
                due = min(self._due.next_due(), self._dirs.next_due)
                self._wake.wait(0 if behind else max(MIN_SLEEP_SECONDS, due - time.monotonic()))
        finally:
            self._shutdown()
        return 0

    # -- discovery ---------------------------------------------------------------

    def _discover(self, now: float) -> None:
        names = self._dirs.listing(now)
        if names is None:
            return
        for name in self._bound.gone(names, self._pods):
            if self._pods[name].delivery is None:  # a delivery notices by itself, and ends
                self._drop(name)
                self._gone.log(logging.INFO, "gone", "pod %s: its directory is gone", printable(name))
        for pod in self._bound.admit(names, self._pods, now):  # (at most --max-pods-per-owner of each uid)
            self._pods[pod.name] = self._states.add(pod)
            try:
                check_pod_uuid(pod.name, "the pod directory's name")
            except ConfigError as exc:  # a name is never given series: it could break the metrics page
                self._refuse(pod, now, str(exc))
                self._due.discard(pod.name)  # a name does not change
                continue
            self._due.set(pod.name, now)
            logger.debug("pod %s: found", pod.name)
        self.metrics.pods.set(len(self._pods))
        self.metrics.untracked.set(self._bound.untracked)

    def _drop(self, name: str) -> None:
        """Stop following *name* (its directory is gone, or it was displaced: see .bound)."""
        self._states.remove(self._pods.pop(name))
        self._due.discard(name)
        self._slots.drop(name)
        self._idle_watch.unwatch(name)
        self.metrics.forget(name)

    # -- each pod ----------------------------------------------------------------

    def _tend_next(self, pod: Pod) -> None:
        # Deliveries start (and slots free) while a pass goes on: a first pass over 10,000 pods must not judge
        # them all before the first delivery.
        self._take_queued()
        self._tend_safely(pod, time.monotonic())

    def _tend_safely(self, pod: Pod, now: float) -> None:
        try:
            if pod.state == QUEUED and still_live(pod):  # a live pod waiting for a slot (see .waiting)
                self._due.set(pod.name, now + LOCK_POLL_SECONDS)
            elif pod.state == IDLE and not self._judging.listing_changed(pod):
                self._idle(pod, now)
            else:
                self._check(pod, now)
        except Exception as exc:  # one pod (whatever its owner planted there) must never end the agent
            self._refuse(pod, now, f"judging it failed: {exc!r}", trace=True)
        if pod.state != IDLE:
            self._idle_watch.unwatch(pod.name)

    def _idle(self, pod: Pod, now: float) -> None:
        # A directory just made is often still empty (its job creates its spool file next): looked at sooner.
        self._states.move(pod, IDLE)
        self.metrics.pod_idle(pod.name, now)  # its delivered series go a while later: see .metrics
        later = self._idle_watch.next_look(pod.name, pod.path, IDLE_POLL_SECONDS)
        self._due.set(pod.name, now + (LOCK_POLL_SECONDS if now - pod.found < NEW_POD_SECONDS else later))

    def _reap(self) -> None:
        """The pods whose delivery ended: their slots free; each idle if all was delivered, else looked at now."""
        for pod in filter(None, map(self._pods.get, self._slots.pop_ended())):
            if pod.delivery is None:
                continue
            delivery, pod.delivery, now = pod.delivery, None, time.monotonic()
            if delivery.failed:  # its traceback is logged: tried again in a minute, not every second
                self._refuse(pod, now, "its delivery failed")
            elif delivery.delivered:  # not judged again: its next idle look lists it (mtime -1: unknown)
                self._idle(pod, now)
                pod.mtime = -1
            else:
                self._states.move(pod, ACTIVE)
                self._due.set(pod.name, now)

    def _check(self, pod: Pod, now: float) -> None:
        """Probe the lock; judge the pod; take it when nobody delivers what it holds."""
        try:
            holder = holder_pid(pod.path)
        except OSError as exc:  # an unsafe lock file (a symlink, a FIFO, a hard link), or directory: its message
            self._refuse(pod, now, f"its lock cannot be probed: {exc}")  # says what to do
            return
        if holder is not None:  # a live uploader serves it
            self._states.move(pod, ACTIVE)
            self._due.set(pod.name, now + LOCK_POLL_SECONDS)
            if now >= pod.next_judge:
                self._judge(pod, now, held=True)
            return
        status = self._judge(pod, now)
        if status is None:
            return
        if status.counted_all and not (status.writers_alive or status.reports_pending or status.bytes_pending):
            self._idle(pod, now)
            pod.refused = None
            return
        self._states.move(pod, ACTIVE)
        if status.writers_alive and now < pod.grace_until:
            # Its own uploader may be starting: looked at every second meanwhile (a writer dying in it is taken).
            self._due.set(pod.name, min(pod.grace_until, now + LOCK_POLL_SECONDS))
            return
        # Queued for a delivery slot (.slots), and not judged again while it waits: re-judging every waiting pod
        # each second made a catch-up quadratic. Taking its lock, when its turn comes, is the probe.
        pod.queued = status
        self._states.move(pod, QUEUED)
        self._slots.queue(pod.name, pod.owner, status.writers_alive > 0)
        if status.writers_alive:  # probed while it waits: once they die, it goes among the dead (.waiting)
            self._due.set(pod.name, now + LOCK_POLL_SECONDS)

    def _judge(self, pod: Pod, now: float, held: bool = False) -> Judged | None:
        """Judge the pod (a held one only if its files changed); None if it is refused, or held and unchanged."""
        status = self._judging.held(pod, now) if held else self._judging.judge(pod, now)
        if status is not None and status.refused:
            self._refuse(pod, now, status.refused)
            return None
        return status

    def _refuse(self, pod: Pod, now: float, why: str, trace: bool = False) -> None:
        if pod.refused != why:  # logged once: it is looked at again every minute
            logger.error("pod %s: cannot deliver it: %s", printable(pod.name), why, exc_info=trace)
        pod.refused = why
        self._states.move(pod, REFUSED)
        self._due.set(pod.name, now + REFUSED_POLL_SECONDS)

    def _take_queued(self) -> None:
        """Free the slots of ended deliveries; start delivering queued pods, in turn (.slots), into free ones."""
        self._reap()
        while not self._stopping and (name := self._slots.next_queued()) is not None:
            pod = self._pods.get(name)
            if pod is None or pod.state != QUEUED or pod.queued is None:
                continue  # gone, or judged again, meanwhile
            status, pod.queued = pod.queued, None
            self._states.move(pod, ACTIVE)
            self._due.set(pod.name, time.monotonic() + LOCK_POLL_SECONDS)  # unless taken, looked at again then
            try:
                self._take(pod, status)
            except Exception as exc:  # as in _tend_safely: one pod must never end the agent
                self._refuse(pod, time.monotonic(), f"taking it failed: {exc!r}", trace=True)

    def _take(self, pod: Pod, status: Judged) -> None:
        now = time.monotonic()
        try:
            settings = restrict(self._settings_for(pod.name), pod.sinks)
        except ConfigError as exc:
            self._refuse(pod, now, str(exc))
            return
        try:
            delivery = take_pod(pod.path, status, settings, self.metrics, lambda: self._slots.ended(pod.name))
        except Exception as exc:  # this pod, not the agent: refused (a traceback a minute, not one a second)
            self._refuse(pod, now, f"cannot start delivering it: {exc!r}", trace=True)
            return
        if delivery is None:
            return  # its own uploader took it meanwhile, or it is gone
        pod.delivery, pod.refused = delivery, None
        self._states.move(pod, TAKEN)
        self._due.discard(pod.name)  # looked at again when its delivery ends
        delivery.start()
        self._slots.hold(pod.name)

    def _shutdown(self) -> None:
        self._idle_watch.stop()
        self._dirs.stop()
        stop_all([p.delivery for p in self._pods.values() if p.delivery is not None], STOP_SECONDS)
        self._wake.close()
        logger.info("agent stopped")
