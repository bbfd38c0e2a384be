"""A pod's delivery: one loop per configured sink (one, usually), in threads of the one uploader process.

Each loop (an :class:`~.service.Uploader`) has its own read position, its own
checkpoint entries, its own schedule and backoff, so one sink being down delays
neither the other nor the other's checkpoints. They are stopped together (a
signal stops them all). With several, the pod lock is handed off only once every
loop is done (:func:`~.handoff.hand_off`, looking at the disk; then fresh loops
run if work arrived); a single loop holds the lock and hands it off itself.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import TYPE_CHECKING, Callable

from runai.reporter.settings import redact_url
from runai.reporter.spool import PodLock

from .handoff import hand_off

if TYPE_CHECKING:
    from .service import Uploader  # imports watchdog's users: built by the caller's *build*

__all__ = ["SinkLoops"]

logger = logging.getLogger(__name__)

_JOIN_STEP = 0.2  # seconds: the main thread joins in steps, so that a signal's handler runs at once


class SinkLoops:
    """One :class:`Uploader` per sink, run together; it answers what an Uploader answers, summed over the sinks.

    *build* makes a fresh set of loops; *lock* is the pod's lock when this holds it for several loops (None
    when the only loop holds it); *pending_on_disk* says whether a writer is alive, or a report is not yet with
    every sink. ``stop()`` may be called from any thread or a
    signal handler, and twice.
    """

    def __init__(
        self,
        build: Callable[[], list[Uploader]],
        *,
        lock: PodLock | None,
        follow: bool,
        pending_on_disk: Callable[[], bool],
    ) -> None:
        self._new_loops = build
        self.lock = lock
        self.follow = follow
        self._pending_on_disk = pending_on_disk  # a writer is alive, or a report is not yet with every sink
        self.loops = build()
        self._done: list[Uploader] = []  # loops of earlier rounds (work arrived during a handoff)
        self._stopping = False

    # -- control ------------------------------------------------------------

    def wake(self) -> None:
        for loop in self.loops:
            loop.wake()

    def stop(self) -> None:
        self._stopping = True
        for loop in self.loops:
            loop.stop()

    def run(self) -> int:
        """Run every loop until each is done; :data:`EXIT_PENDING` if any gave up or was stopped with work left."""
        while True:
            status = self._run_round()
            if status != 0 or self._handoff():
                return status
            self._done.extend(self.loops)
            self.loops = self._new_loops()
            if self._stopping:  # a signal between the rounds
                self.stop()

    def _run_round(self) -> int:
        results: dict[int, int] = {}

        def run(i: int, loop: Uploader) -> None:
            try:
                results[i] = loop.run()
            except BaseException:
                logger.exception("the uploader loop for %s failed", redact_url(loop.sink.url))
                results[i] = 1
                self.stop()  # never leave the other loops running unwatched
                raise

        threads = [
            threading.Thread(target=run, args=(i, loop), name=f"uploader-{i}", daemon=True)
            for i, loop in enumerate(self.loops)
            if i > 0
        ]
        for thread in threads:
            thread.start()
        run(0, self.loops[0])  # in the main thread
        for thread in threads:
            while thread.is_alive():
                thread.join(_JOIN_STEP)
        return max(results.get(i, 1) for i in range(len(self.loops)))

    def _handoff(self) -> bool:
        """Release the pod lock once every loop is done; False if work arrived meanwhile (and the lock is back)."""
        if self.lock is None or not self.follow or self._stopping:
            return True
        return hand_off(self.lock, self._pending_on_disk, self.loops[0].pod_dir)

    # -- what it did ----------------------------------------------------------

    def _all(self) -> list[Uploader]:
        return self._done + self.loops

    @property
    def delivered_records(self) -> int:
        """Reports delivered to every sink by this run (the least of the sinks' counts)."""
        return min(sum(u.delivered_records for u in self._all()[i :: len(self.loops)]) for i in range(len(self.loops)))

    @property
    def delivered_bytes(self) -> int:
        return sum(u.delivered_bytes for u in self._all())

    @property
    def rejected(self) -> dict[str, str]:
        return {name: why for u in self._all() for name, why in u.rejected.items()}

    @property
    def ignored_files(self) -> dict[str, str]:
        return {path: why for u in self._all() for path, why in u.ignored_files.items()}

    @property
    def last_error(self) -> str:
        return "; ".join(u.last_error for u in self.loops if u.last_error)

    def skip_reasons(self) -> Counter[str]:
        # Each loop reads every file: one sink's count is the pod's (the first loop of each round is the first sink).
        return sum((u.skip_reasons() for u in self._all()[:: len(self.loops)]), Counter())

    def undelivered_bytes(self) -> int:
        # Each loop's count as of its last commit: its followed files are opened, retired and closed
        # in its own thread, and this runs in another's (the progress callback).
        return sum(u.undelivered_at_commit for u in self.loops)

    def pending_records(self) -> int:
        """Reports not yet delivered to some sink (the most any one sink has pending)."""
        return max(u.pending_records() for u in self.loops)
