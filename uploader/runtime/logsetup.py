"""Where the uploader's commands log: the pod's log file for ``run``, stderr for the others (one line a record
for the agent).

Only the command line calls these: the library never configures logging.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import TextIO

from runai.reporter.spool import LOG_FORMAT, LOG_NAME, open_log

__all__ = ["drop_watchdog_shutdown_noise", "log_lines_to_stderr", "log_to_pod", "log_to_stderr"]

logger = logging.getLogger(__name__)

_STDERR_FORMAT = "runai-uploader: %(levelname)s: %(message)s"
# One line per event, the container convention (kubectl logs, Fluent Bit): time, level, the pod it is about
# (the agent delivers each pod in a thread named for it), the message.
_LINES_FORMAT = "%(asctime)s %(levelname)s [%(threadName)s] %(message)s"


class _OneLine(logging.Formatter):
    """A record on one line: a traceback's lines joined with ' | ' instead of newlines."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def log_to_pod(pod_dir: str) -> logging.Handler:
    """Send INFO and above to *pod_dir*'s log (stderr when it cannot be opened); return the handler."""
    try:
        # Opened without following a symlink, in a checked private directory (see safefs).
        log: io.TextIOBase | None = open(
            open_log(pod_dir, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a", encoding="utf-8"
        )
    except OSError as exc:
        # A bad log (a directory, symlink or FIFO in its place) must not stop delivery.
        log, log_error = None, exc
    handler = _log_info(log or sys.stderr, logging.Formatter(LOG_FORMAT))
    if log is None:
        logger.warning(
            "cannot write the log %s (%s); logging to stderr instead: remove or replace it",
            os.path.join(pod_dir, LOG_NAME),
            log_error,
        )
    return handler


def log_lines_to_stderr() -> None:
    """The agent's logging: INFO and above to stderr, one line per record (a container's log)."""
    _log_info(sys.stderr, _OneLine(_LINES_FORMAT))


def _log_info(stream: io.TextIOBase | TextIO, formatter: logging.Formatter) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(drop_watchdog_shutdown_noise)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def log_to_stderr(level: int) -> None:
    """The interactive commands' logging: *level* and above to stderr, prefixed with the program's name."""
    logging.basicConfig(level=level, format=_STDERR_FORMAT)


def drop_watchdog_shutdown_noise(record: logging.LogRecord) -> bool:
    """A logging filter: False for the one watchdog message that is no failure."""
    # watchdog's inotify emitter logs this at ERROR when its observer is
    # stopped while a read is in flight: a benign shutdown race, not a failure.
    return not (record.name.startswith("watchdog") and "called when the thread is inactive" in record.msg)
