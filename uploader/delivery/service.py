"""One sink's loop: follow a pod's spool files and deliver them to one receiver.

One loop, woken by ``watchdog`` file events and by a poll timer (so that
correctness never depends on events arriving):

1. read the complete new lines of every spool file;
2. keep what the sink takes: the latest value of each name (the gateway), or every report (remote write);
3. push them (at most once per push interval; at once after a quiet spell);
4. after the receiver's 2xx, write each file's checkpoint for this sink: the commit point.

In ``follow`` mode (``runai-uploader run``) it exits once every writer is
gone and everything is delivered; in recovery mode it exits once everything
that is on disk now is delivered. :class:`~.loops.SinkLoops` runs one such
loop per sink; the pod's lock is this loop's when it is the only one.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable

from runai.reporter.safefs import UnsafePathError
from runai.reporter.spool import PodLock

from ..runtime.ratelog import RateLimitedLog
from ..runtime.wakeup import Wakeup
from ..sinks import Sink
from .followed import TORN_LINE, FollowedFiles
from .handoff import hand_off
from .hooks import NO_HOOKS, DeliveryHooks
from .listing import PodListing
from .options import FOLLOWER, DeliveryOptions
from .push import Pushing
from .scan import MAX_PENDING_VALUES, Scanner
from .schedule import Schedule
from .watch import SpoolWatch

__all__ = ["Uploader", "EXIT_DELIVERED", "EXIT_PENDING", "MAX_PENDING_VALUES", "TORN_LINE"]

logger = logging.getLogger(__name__)

EXIT_DELIVERED = 0
EXIT_PENDING = 1  # gave up with reports still pending; they stay on disk


class Uploader(Pushing):
    """Delivers one pod directory's spool files to one sink, as *options* say.

    *all_sinks*: every sink of the pod (a delivered file is deleted only once each has it); *on_progress* is
    called with (delivered_records, delivered_bytes) after each commit; *hooks* are told of pushes and commits;
    *lock*: the pod's lock, held, when this is the pod's only loop (it hands the lock off before it exits);
    *pod*: the pod whose files alone it delivers (default: the directory's name; see ``other_pod``).
    ``stop()`` may be called from any thread (or a signal handler), and twice.
    """

    def __init__(
        self,
        pod_dir: str,
        sink: Sink,
        options: DeliveryOptions = FOLLOWER,
        *,
        all_sinks: tuple[str, ...] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        hooks: DeliveryHooks = NO_HOOKS,
        lock: PodLock | None = None,
        pod: str | None = None,
    ) -> None:
        super().__init__(sink, on_progress, hooks)
        self.pod_dir = pod_dir
        self.lock = lock
        self.follow = options.follow
        self.use_watchdog = options.use_watchdog
        # This loop reads and writes the sink's own checkpoint entries.
        self._files = FollowedFiles(pod_dir, options.history_bytes, sink=sink.name, all_sinks=all_sinks, pod=pod)
        self.ignored_files = self._files.ignored  # spool files that cannot be read at all -> why
        self._list_failures = RateLimitedLog(logger)  # a listing that fails every poll: a line a minute
        self._listing = PodListing(pod_dir)  # listed again only when the directory changed

        self._schedule = Schedule(
            push_interval=options.push_interval,
            retry_timeout=options.retry_timeout,
            poll_interval=options.poll_interval,
            backoff=options.backoff,
            fsync_interval=options.fsync_interval,
        )
        self._wake = Wakeup()
        self._stopping = False  # a plain flag: stop() runs in signal handlers
        self._scanner = Scanner(
            self._files,
            lambda: self._stopping,
            self._wake.set,
            scan_bytes=options.scan_bytes,
            max_pending=options.max_pending,
            coalesce=sink.coalesces,
            hold_open=options.follow,
        )
        self._watch = SpoolWatch(pod_dir, self._wake.set)

    # -- control ----------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        # Never waits for a lock (see Wakeup): safe in a signal handler. Cuts a push in
        # flight, so that stopping never waits for a slow receiver.
        self._stopping = True
        self.sink.abort()
        self._wake.set()

    def skip_reasons(self) -> Counter[str]:
        """Lines skipped as corrupt (never pushed) by this run, counted by reason."""
        return self._files.skip_reasons()

    def undelivered_bytes(self) -> int:
        """Bytes of the followed files that no checkpoint covers yet (the first scan opens every file)."""
        return self._files.pending_bytes()

    def pending_records(self) -> int:
        """Reports read or on disk that no checkpoint covers yet (a lower bound while reading)."""
        return self._files.pending_records()

    def run(self) -> int:
        """Deliver until done; return :data:`EXIT_DELIVERED` or :data:`EXIT_PENDING`."""
        self._wake.open()
        try:
            if self.use_watchdog:
                self._watch.start()
            return self._loop()
        finally:
            self._watch.stop()
            self._wake.close()
            self._files.close()
            self.sink.close()

    # -- the loop ---------------------------------------------------------

    def _loop(self) -> int:
        schedule = self._schedule
        while not self._stopping:
            self._wake.clear()
            now = time.monotonic()
            drained = self._scan(schedule.liveness_due(now))
            if schedule.fsync_due(now):
                self._files.sync()
            if self._undelivered():
                due = self._push_when_due(now)
            elif drained and self._done():
                if self._handoff():
                    return EXIT_DELIVERED
                continue
            else:
                due = self._streaming_due(now)
            if due is None:
                continue  # more may have arrived meanwhile: rescan at once
            writers_alive = self._files.writers_alive()
            if schedule.gives_up(now, writers_alive):
                # A follower's reports are left for `recover`; recover itself says what to do next.
                logger.error(
                    "giving up after %.0f s without reaching %s (%s); %d reports stay in %s%s",
                    schedule.failing_for(now),
                    self.sink.receiver,
                    self.last_error,
                    self.pending_records(),
                    self.pod_dir,
                    ": run `runai-uploader recover` to upload them" if self.follow else "",
                )
                return EXIT_PENDING
            self._wake.wait(schedule.sleep(now, due, writers_alive))
        return EXIT_PENDING if self._undelivered() else EXIT_DELIVERED

    def _push_when_due(self, now: float) -> float | None:
        """Push and commit if it is time; when to come back, or None to go round at once after a push."""
        # Values wait out the push interval; end-of-stream and recovery
        # flush at once so that finish() and recover return quickly.
        due = self._schedule.push_at(flush=not self._scanner.latest or self._flush_wanted())
        if now < due:
            return due
        pushed = bool(self._scanner.latest)
        if not self._deliver():
            return self._schedule.failed(now, self._retry_after)
        outage = self._schedule.succeeded(now, pushed)
        if outage is not None:
            logger.info("%s is reachable again after %.1f s", self.sink.receiver, outage)
        if pushed:
            # More reports will wait out the interval anyway:
            # read them on a timer, not on an event per write.
            self._watch.set_streaming(self.follow)
        return None

    def _streaming_due(self, now: float) -> float | None:
        """Nothing to deliver: when to come back, or None after leaving the streaming watch."""
        held = self._scanner.held_due(now)  # a millisecond's lines, read once it is over
        if not self._watch.streaming:
            return held
        if now >= self._schedule.quiet_at():
            # A whole interval without reports: back to waking on
            # every write, and rescan for any that raced the switch.
            self._watch.set_streaming(False)
            return None
        return min(held, self._schedule.quiet_at())

    # -- reading ----------------------------------------------------------

    def _scan(self, check_liveness: bool) -> bool:
        """Read what is new; False if the read budget ran out before the end."""
        names = self._list_pod_dir()
        return names is not None and self._scanner.scan(names, check_liveness)

    def _list_pod_dir(self) -> list[str] | None:
        try:
            names = self._listing.names(self._files.done)
        except FileNotFoundError:
            # Nothing left to deliver from, nor to wait for.
            logger.error("the pod directory %s was removed; exiting", self.pod_dir)
            self.stop()
        except UnsafePathError as exc:  # swapped for a symlink, or made unsafe: never listed through
            logger.error("cannot list %s: %s; exiting", self.pod_dir, exc)
            self.stop()  # what it held is where it was moved to, for recover (docs/operations.md)
        except OSError as exc:  # out of descriptors, say: tried each poll
            self._list_failures.log(logging.ERROR, "list", "cannot list %s: %s", self.pod_dir, exc)
        else:
            self._list_failures.clear("list")
            return names
        return None

    # -- delivering -------------------------------------------------------

    def _undelivered(self) -> bool:
        return bool(self._scanner.latest) or self._files.uncommitted()

    def _flush_wanted(self) -> bool:
        return not self.follow or self._files.ending()

    # -- finishing --------------------------------------------------------

    def _done(self) -> bool:
        return not self.follow or not self._files.writers_alive()

    def _handoff(self) -> bool:
        """Hand the pod lock off before exiting, if this loop holds it; False if work arrived meanwhile."""
        if self.lock is None or not self.follow or self._stopping:
            return True
        return hand_off(self.lock, self._work_arrived, self.pod_dir)

    def _work_arrived(self) -> bool:
        drained = self._scan(check_liveness=True)
        return not (drained and not self._undelivered() and not self._files.writers_alive())
