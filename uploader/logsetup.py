"""Where the uploader's commands log: the pod's log file for ``run``, stderr for the others.

Only the command line calls these: the library never configures logging.
"""
from __future__ import annotations

import io
import logging
import os
import sys

from runai.reporter.spool import LOG_FORMAT, LOG_NAME, open_log

__all__ = ["drop_watchdog_shutdown_noise", "log_to_pod", "log_to_stderr"]

logger = logging.getLogger(__name__)

_STDERR_FORMAT = "runai-uploader: %(levelname)s: %(message)s"


def log_to_pod(pod_dir: str) -> logging.Handler:
    """Send INFO and above to *pod_dir*'s log (stderr when it cannot be opened); return the handler."""
    try:
        # Opened without following a symlink, in a checked private directory (see safefs).
        log: io.TextIOBase | None = open(open_log(pod_dir, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a",
                                         encoding="utf-8")
    except OSError as exc:
        # A bad log (a directory, symlink or FIFO in its place) must not stop delivery.
        log, log_error = None, exc
    handler = logging.StreamHandler(log or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(drop_watchdog_shutdown_noise)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if log is None:
        logger.warning("cannot write the log %s (%s); logging to stderr instead: remove or replace it",
                       os.path.join(pod_dir, LOG_NAME), log_error)
    return handler


def log_to_stderr(level: int) -> None:
    """The interactive commands' logging: *level* and above to stderr, prefixed with the program's name."""
    logging.basicConfig(level=level, format=_STDERR_FORMAT)


def drop_watchdog_shutdown_noise(record: logging.LogRecord) -> bool:
    """A logging filter: False for the one watchdog message that is no failure."""
    # watchdog's inotify emitter logs this at ERROR when its observer is
    # stopped while a read is in flight: a benign shutdown race, not a failure.
    return not (record.name.startswith("watchdog") and "called when the thread is inactive" in record.msg)
