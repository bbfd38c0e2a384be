"""When the uploader loop pushes, retries, checks its writers, fsyncs, sleeps and gives up.

Bookkeeping on the monotonic times the loop passes in: no clock, no I/O and
no logging of its own (the loop logs), so each rule can be tested with
made-up times.
"""

from __future__ import annotations

import math
import random

__all__ = ["MAX_RETRY_AFTER", "Schedule"]

# The longest a receiver's Retry-After (429, 503) holds the next try, in seconds. A receiver may ask for hours
# (or a date next year): honoured whole, it would hold finish() and ``recover`` for that long, and a receiver
# back sooner would wait for nothing. Past it the loop tries again, and a receiver still busy asks again.
MAX_RETRY_AFTER = 300.0


class Schedule:
    """Push timing, backoff and the give-up rule of one uploader loop.

    Values wait out the push interval: at most one push per interval, except
    for a flush (end-of-stream, a dead writer, recovery), which goes at once.
    A failed push is retried after a backoff that doubles from ``backoff[0]``
    up to ``backoff[1]``, with jitter. Once the receiver has failed for
    ``retry_timeout`` and no writer is alive, the loop gives up.
    """

    def __init__(
        self,
        *,
        push_interval: float = 1.0,
        retry_timeout: float = 600.0,
        poll_interval: float = 0.5,
        backoff: tuple[float, float] = (0.1, 5.0),
        fsync_interval: float | None = None,
    ) -> None:
        self.push_interval = push_interval
        self.retry_timeout = retry_timeout
        self.poll_interval = poll_interval  # the longest sleep, and how often writers' liveness is checked
        self.backoff = backoff
        self.fsync_interval = fsync_interval  # fsync growing spool files this often; None never
        self.last_push = -math.inf  # when values were last pushed
        self.next_try = 0.0  # no push before this (a backoff after a failure)
        self.failures = 0  # failed pushes in a row
        self.failing_since: float | None = None  # the first of them
        self._next_liveness = 0.0
        self._next_fsync = 0.0

    def liveness_due(self, now: float) -> bool:
        """True once a poll interval since the last liveness check; the next one counts from *now*."""
        if now < self._next_liveness:
            return False
        self._next_liveness = now + self.poll_interval
        return True

    def fsync_due(self, now: float) -> bool:
        """True once an fsync interval since the last fsync; the next one counts from *now*."""
        if self.fsync_interval is None or now < self._next_fsync:
            return False
        self._next_fsync = now + self.fsync_interval
        return True

    def push_at(self, flush: bool) -> float:
        """When the next push may go: after any backoff and, unless *flush*, a push interval after the last."""
        if flush:
            return self.next_try
        return max(self.next_try, self.last_push + self.push_interval)

    def succeeded(self, now: float, pushed: bool) -> float | None:
        """A push (or a commit alone) succeeded: how long the receiver had been failing, or None if it had not."""
        outage = None if self.failing_since is None else now - self.failing_since
        self.failing_since, self.failures, self.next_try = None, 0, 0.0
        if pushed:
            self.last_push = now
        return outage

    def failed(self, now: float, retry_after: float | None = None) -> float:
        """A push failed: when to try again.

        *retry_after*: the seconds the receiver asked to wait (its Retry-After), honoured within the retry
        timeout and :data:`MAX_RETRY_AFTER`; the backoff is the least wait even so.
        """
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = now
        delay = self._backoff_delay()
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER, self.retry_timeout))
        self.next_try = now + delay
        return self.next_try

    def quiet_at(self) -> float:
        """When a whole push interval will have passed since the last push."""
        return self.last_push + self.push_interval

    def gives_up(self, now: float, writers_alive: bool) -> bool:
        """The receiver has failed for the retry timeout and no writer is left to wait for.

        While writers are alive the loop never gives up: a live job must not lose its uploader.
        """
        return self.failing_for(now) >= self.retry_timeout and not writers_alive

    def failing_for(self, now: float) -> float:
        """Seconds the receiver has been failing; minus infinity while it is not."""
        return -math.inf if self.failing_since is None else now - self.failing_since

    def sleep(self, now: float, due: float, writers_alive: bool) -> float:
        """How long to sleep until *due*: at most a poll interval, and no later than the next fsync."""
        if self.fsync_interval is not None and writers_alive:
            due = min(due, self._next_fsync)
        return max(0.0, min(self.poll_interval, due - now))

    def _backoff_delay(self) -> float:
        base, cap = self.backoff
        # Jitter keeps many pods that lost one receiver from retrying in step.
        return min(cap, base * 2.0 ** min(self.failures - 1, 30)) * random.uniform(0.5, 1.0)
