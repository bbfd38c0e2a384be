"""One pod the node agent delivers: the pod's uploader, run in a thread of the agent, holding the pod's lock.

It is the uploader a Reporter starts (``runai-uploader run``), built by the same
factory and run in follow mode, so a pod whose job still lives keeps being
delivered until its writers are gone. Two differences: it never gives up on an
unreachable sink (the agent is what nobody has to babysit), and it polls the
pod directory instead of watching it (an inotify instance per followed pod would
exhaust the per-user limit, 128 by default, on a busy node).

The pod lock makes the agent and the pod's own uploader exclusive: whoever holds
it delivers. The Uploader hands the lock off as ``run`` does (release, look again,
take it back if work arrived), so a job that starts its own uploader later gets
the pod back, and the two never push at once.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from runai.reporter.settings import Settings
from runai.reporter.spool import GATEWAY, REMOTE_WRITE, PodLock

from .agent_metrics import AgentMetrics
from .factory import build_uploader
from .loops import SinkLoops
from .push import Pusher
from .service import EXIT_DELIVERED

if TYPE_CHECKING:
    from .service import Uploader
    from .sink import Sink

__all__ = ["PodDelivery", "stop_all"]

logger = logging.getLogger(__name__)

_POLL_SECONDS = 0.5  # how often a delivered pod's directory is read (it is not watched: see the module's doc)


class PodDelivery:
    """Delivers one pod in a thread until its writers are gone and everything is delivered, or until stopped.

    *lock* is the pod's lock, held already; it is released when the thread ends. *on_done* is called last, in
    the thread.
    """

    def __init__(self, settings: Settings, lock: PodLock, metrics: AgentMetrics,
                 on_done: Callable[[], None]) -> None:
        self.pod = settings.pod_uuid
        self._lock = lock
        self._metrics = metrics
        self._on_done = on_done
        self._seen: dict[int, int] = {}  # id of a loop -> its delivered_records already counted
        self._counting = threading.Lock()  # each sink's loop calls _progress from its own thread
        self._uploader = build_uploader(
            settings, retry_timeout=math.inf, follow=True, lock=lock, use_watchdog=False,
            poll_interval=_POLL_SECONDS, history_bytes=settings.history_bytes, on_progress=self._progress,
            fsync_interval=settings.fsync_interval if settings.fsync == "interval" else None)
        for loop in _loops(self._uploader):
            _count_pushes(loop.pusher, self.pod, metrics)
        _count_later_rounds(self._uploader, self.pod, metrics)
        self._thread = threading.Thread(target=self._run, name=f"pod {self.pod}", daemon=True)
        self.failed = False  # its run raised (set before the thread ends)
        # Everything delivered and every writer gone when it ended (not stopped): the pod is idle, and the agent
        # need not judge it again (its next idle look lists it, and judges only what changed).
        self.delivered = False

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop delivering (safe from any thread, and twice); what is not delivered stays on disk."""
        self._uploader.stop()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            status = self._uploader.run()
            self.delivered = status == EXIT_DELIVERED
            self._count_delivered()
            logger.info("pod %s: done (status %d): %d reports delivered by the agent", self.pod, status,
                        self._uploader.delivered_records)
        except Exception:  # one pod's failure must not end the agent; it refuses the pod, tried again later
            self.failed = True
            logger.exception("pod %s: delivery failed", self.pod)
        finally:
            self._lock.release()
            self._on_done()

    def _progress(self, records: int, size: int) -> None:
        """After each commit, in a loop's thread: the counters, and what is pending as the uploader sees it."""
        self._count_delivered()
        try:
            self._metrics.set_pending(self.pod, self._uploader.pending_records(), self._uploader.undelivered_bytes())
        except RuntimeError:
            # SinkLoops: another sink's loop changed its followed files while this one counted them; its own
            # next commit sets the figures.
            pass

    def _count_delivered(self) -> None:
        with self._counting:
            for loop in _loops(self._uploader):
                counted, now = self._seen.get(id(loop), 0), loop.delivered_records
                if now > counted:
                    self._metrics.add_delivered(self.pod, _sink_of(loop.pusher), now - counted)
                    self._seen[id(loop)] = now


def stop_all(deliveries: list[PodDelivery], seconds: float) -> None:
    """Stop *deliveries*, and give them *seconds* in all to end."""
    for delivery in deliveries:
        delivery.stop()
    deadline = time.monotonic() + seconds
    for delivery in deliveries:
        delivery.join(max(0.0, deadline - time.monotonic()))
    late = [d.pod for d in deliveries if d.alive]
    if late:
        logger.warning("stopping with %d deliveries still ending (%s): their checkpoints are written only "
                       "after a receiver's answer, so nothing is lost", len(late), ", ".join(late))


def _loops(uploader: Uploader | SinkLoops) -> list[Uploader]:
    # A SinkLoops' loops of its current round (a later round, after work arrived during a handoff, builds new
    # ones: _count_later_rounds counts their pushes too).
    return list(uploader.loops) if isinstance(uploader, SinkLoops) else [uploader]


def _sink_of(pusher: Sink) -> str:
    return GATEWAY if isinstance(pusher, Pusher) else REMOTE_WRITE


def _count_later_rounds(uploader: Uploader | SinkLoops, pod: str, metrics: AgentMetrics) -> None:
    """Count the pushes of the loops a SinkLoops builds for each later round, as its first round's are."""
    if not isinstance(uploader, SinkLoops):
        return  # one sink: one loop, whose pusher serves every round
    build = uploader._build

    def counted() -> list[Uploader]:
        loops = build()
        for loop in loops:
            _count_pushes(loop.pusher, pod, metrics)
        return loops

    uploader._build = counted  # its builder, on the instance: the factory has no hook for this (as for push)


def _count_pushes(pusher: Sink, pod: str, metrics: AgentMetrics) -> None:
    """Count *pusher*'s failed pushes and time its last success.

    The factory builds the sinks inside the uploader, with no hook for this, so the bound ``push`` is
    wrapped on the instance (the Uploader only ever calls ``pusher.push``).
    """
    sink, push = _sink_of(pusher), pusher.push

    def counted(records: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        try:
            refused = push(records, *args, **kwargs)
        except OSError:
            metrics.push_failed(sink)
            raise
        if records:
            metrics.push_succeeded(pod, sink)
        return refused

    pusher.push = counted  # type: ignore[method-assign]  # an instance attribute shadowing the method, on purpose
