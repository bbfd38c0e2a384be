"""A failure that repeats on every try, logged once per interval: a log that grows by a line a minute, not a line
a poll (a pod directory renamed back and forth wrote 5,783 lines in 30 s; descriptors run out wrote 76 MB in 70 s).
"""

from __future__ import annotations

import logging
import time

__all__ = ["LOG_INTERVAL_SECONDS", "RateLimitedLog"]

LOG_INTERVAL_SECONDS = 60.0
_MAX_KEYS = 1000  # distinct keys remembered: a flood of names never grows it past this


class RateLimitedLog:
    """Logs a message at most once per *interval* for each key, saying how many were held back since."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, tuple[float, int]] = {}  # key -> (when last logged, lines held back since)

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log *msg* % *args* at *level* unless *key*'s last line is younger than the interval; True if logged."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self._interval:
            self._last[key] = (last[0], last[1] + 1)
            return False
        if last is None and len(self._last) >= _MAX_KEYS:
            self._last.pop(next(iter(self._last)))  # the oldest key: its next line comes a little early
        held = last[1] if last is not None else 0
        suffix = f" ({held} more like it in the last {self._interval:.0f} s)" if held else ""
        self._logger.log(level, msg + suffix, *args)
        self._last[key] = (now, 0)
        return True

    def clear(self, key: str) -> None:
        """*key*'s failure is over: its next one is logged at once."""
        self._last.pop(key, None)
