"""Delivery trouble, told in the training process's own log while the job runs.

The uploader logs the first failed push of an outage, and its end, in the
pod's ``uploader.log`` (see :mod:`.spool.log`). A Reporter reads what is new
there on its once-a-second tick (never on a report of its own) and repeats
it in its log: one warning naming the receiver and the cause, one info line
when delivery resumes. ``finish()``'s timeout warning names the last cause.
"""

from __future__ import annotations

import logging
import os
import re
import threading

from ._redact import redact_url
from .spool import LOG_FORMAT, LOG_NAME, open_log

__all__ = ["DeliveryWatch"]

logger = logging.getLogger(__name__)

# The uploader's words (uploader/service.py), which tests/test_local_mode.py pins against a real uploader: the
# end of its warning for the first failed push of an outage, and its info line when the receiver answers again.
_FAILING = "; retrying with backoff, nothing is lost"
_RESUMED = " is reachable again after "
_RECEIVERS = ("the gateway", "the remote-write receiver")
# A line split at spaces: asctime's date and time, the level, pid=N, the logger's name, then the message.
_MESSAGE_FIELD = LOG_FORMAT.split(" ").index("%(message)s") + 1
_LEVEL_FIELD = LOG_FORMAT.split(" ").index("%(levelname)s") + 1
_READ_MAX = 64 * 1024  # read per tick at most: a log that grew more than this since is read from its tail
_RELAY_MAX = 300  # characters of a logged failure relayed, cut before any pattern looks at it
# A scheme of at most 32 characters: an unbounded one made a run like "a.a.a..." take quadratic time. No \b
# before it, so that a longer run before "://" still ends in a URL that is redacted.
_URL = re.compile(r"[a-z][a-z0-9+.-]{0,31}://[^\s()]+")
_HTTP = re.compile(r"answered (\d{3})\b")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\]>)]+)")


class DeliveryWatch:
    """Follows the uploader log of *pod_dir* from its current end, and relays failures and recoveries."""

    def __init__(self, pod_dir: str) -> None:
        self.pod_dir = pod_dir
        self.last_cause: str | None = None  # while some receiver fails: the last failure told
        self._failing: set[str] = set()  # the receivers whose outage was told and has not ended
        self._lock = threading.Lock()  # never waited on: a tick that finds it taken skips
        # Lines already there are an earlier run's (a pod name used again), not this job's.
        self._offset = self._size()

    def poll(self, tell: bool = True) -> None:
        """Relay what the uploader logged since the last poll; never raises, never waits.

        *tell* False: only note it (:attr:`last_cause`), for a caller that says it in its own words.
        """
        if not self._lock.acquire(blocking=False):
            return
        try:
            for line in self._new_lines():
                self._note(line, tell)
        except OSError:
            pass  # no log yet (the uploader is starting), or it cannot be read: the next tick tries again
        finally:
            self._lock.release()

    def _size(self) -> int:
        try:
            fd = open_log(self.pod_dir, os.O_RDONLY)
        except OSError:
            return 0
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def _new_lines(self) -> list[str]:
        fd = open_log(self.pod_dir, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < self._offset:
                self._offset = 0  # replaced or cut: a new log
            start = max(self._offset, size - _READ_MAX)
            data = os.pread(fd, size - start, start) if size > start else b""
        finally:
            os.close(fd)
        end = data.rfind(b"\n")
        if end < 0:
            return []  # nothing new, or a line still being written
        lines = data[:end].decode("utf-8", errors="replace").split("\n")
        if start > self._offset:
            lines = lines[1:]  # read from the tail: the first line may be cut
        self._offset = start + end + 1
        return lines

    def _note(self, line: str, tell: bool) -> None:
        fields = line.split(" ", _MESSAGE_FIELD)
        if len(fields) <= _MESSAGE_FIELD:
            return
        level, message = fields[_LEVEL_FIELD], fields[_MESSAGE_FIELD]
        if level == "WARNING" and message.endswith(_FAILING):
            self._failed(message[: -len(_FAILING)], tell)
        elif level == "INFO" and _RESUMED in message:
            self._resumed(message, tell)

    def _failed(self, what: str, tell: bool) -> None:
        what = _cut(what)
        receiver = _receiver(what)
        if receiver in self._failing:
            return
        self._failing.add(receiver)
        who, _, error = what.partition(" (")
        self.last_cause = f"{_URL.sub(lambda m: redact_url(m.group()), who)} ({_cause(error.removesuffix(')'))})"
        if tell:
            logger.warning(
                "delivery is failing: %s; the reports are safe in the spool and the uploader keeps "
                "retrying (%s in %s has the details)",
                self.last_cause,
                LOG_NAME,
                self.pod_dir,
            )

    def _resumed(self, message: str, tell: bool) -> None:
        receiver = _receiver(message)
        if receiver not in self._failing:
            return
        self._failing.discard(receiver)
        if not self._failing:
            self.last_cause = None
        if tell:
            logger.info("delivery resumed: %s", _cut(message))


def _cut(text: str) -> str:
    """*text* cut at :data:`_RELAY_MAX` characters: a garbled line must make neither a tick slow nor a warning huge."""
    return text if len(text) <= _RELAY_MAX else text[:_RELAY_MAX] + "..."


def _receiver(message: str) -> str:
    return next((who for who in _RECEIVERS if message.startswith(who)), "")


def _cause(error: str) -> str:
    """The gist of a push's error: ``HTTP 401``, ``connection refused``, else the error's own text."""
    http = _HTTP.search(error)
    if http is not None:
        return f"HTTP {http.group(1)}"
    errno = _ERRNO.search(error)
    if errno is not None:
        return errno.group(1).strip().lower()
    return error[:200]
