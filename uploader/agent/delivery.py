"""One pod the node agent delivers: the pod's uploader, run in a thread of the agent, holding the pod's lock.

It is the uploader a Reporter starts (``runai-uploader run``), built by the same
builder and run in follow mode, so a pod whose job still lives keeps being
delivered until its writers are gone. Two differences: it never gives up on an
unreachable sink (the agent is what nobody has to babysit), and it polls the
pod directory instead of watching it (an inotify instance per followed pod would
exhaust the per-user limit, 128 by default, on a busy node).

The pod lock makes the agent and the pod's own uploader exclusive: whoever holds
it delivers. The delivery hands the lock off as ``run``'s does (release, look
again, take it back if work arrived), so a job that starts its own uploader
later gets the pod back, and the two never push at once.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from runai.reporter.settings import Settings
from runai.reporter.spool import PodLock

from ..delivery import build_uploader, follower_options
from ..delivery.service import EXIT_DELIVERED
from .config import POLL_SECONDS
from .metrics import AgentMetrics, PodHooks

if TYPE_CHECKING:
    from .judge import Judged

__all__ = ["PodDelivery", "stop_all", "take_pod"]

logger = logging.getLogger(__name__)


class PodDelivery:
    """Delivers one pod in a thread until its writers are gone and everything is delivered, or until stopped.

    *lock* is the pod's lock, held already; it is released when the thread ends. *on_done* is called last, in
    the thread. Its pushes and deliveries are counted in *metrics* through the delivery's hooks.
    """

    def __init__(self, settings: Settings, lock: PodLock, metrics: AgentMetrics, on_done: Callable[[], None]) -> None:
        self.pod = settings.pod_uuid
        self._lock = lock
        self._metrics = metrics
        self._on_done = on_done
        # Never gives up (retry_timeout), and polls the pod directory (see the module's doc).
        options = replace(
            follower_options(settings), retry_timeout=math.inf, use_watchdog=False, poll_interval=POLL_SECONDS
        )
        self._uploader = build_uploader(
            settings, options, lock=lock, on_progress=self._progress, hooks=PodHooks(metrics, self.pod)
        )
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
            logger.info(
                "pod %s: done (status %d): %d reports delivered by the agent",
                self.pod,
                status,
                self._uploader.delivered_records,
            )
        except Exception:  # one pod's failure must not end the agent; it refuses the pod, tried again later
            self.failed = True
            logger.exception("pod %s: delivery failed", self.pod)
        finally:
            self._lock.release()
            self._on_done()

    def _progress(self, records: int, size: int) -> None:
        """After each commit, in a loop's thread: what is pending as the delivery sees it."""
        try:
            self._metrics.set_pending(self.pod, self._uploader.pending_records(), self._uploader.undelivered_bytes())
        except RuntimeError:
            # Another sink's loop changed its followed files while this one counted them; its own next commit
            # sets the figures.
            pass


def take_pod(
    pod_dir: str, status: Judged, settings: Settings, metrics: AgentMetrics, on_done: Callable[[], None]
) -> PodDelivery | None:
    """Take the pod's lock and make its delivery (not started), announced with what *status* judged; None if its own
    uploader took the lock meanwhile, or its directory was renamed or removed (the next listing forgets it)."""
    lock = PodLock(pod_dir)
    try:
        if not lock.acquire():
            return None
        delivery = PodDelivery(settings, lock, metrics, on_done)
    except FileNotFoundError:
        lock.release()
        return None
    except BaseException:
        lock.release()
        raise
    logger.info(
        "pod %s: no uploader holds it; delivering %s%d pending reports (%d writers alive)",
        delivery.pod,
        "" if status.counted_all else "at least ",
        status.reports_pending,
        status.writers_alive,
    )
    return delivery


def stop_all(deliveries: list[PodDelivery], seconds: float) -> None:
    """Stop *deliveries*, and give them *seconds* in all to end."""
    for delivery in deliveries:
        delivery.stop()
    deadline = time.monotonic() + seconds
    for delivery in deliveries:
        delivery.join(max(0.0, deadline - time.monotonic()))
    late = [d.pod for d in deliveries if d.alive]
    if late:
        logger.warning(
            "stopping with %d deliveries still ending (%s): their checkpoints are written only "
            "after a receiver's answer, so nothing is lost",
            len(late),
            ", ".join(late),
        )
