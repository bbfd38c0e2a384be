"""The pod's uploader log: where it is, what its lines look like, and reading it back.

One log per pod directory (:data:`~.names.LOG_NAME`): the uploader's own
logging, and its stderr too, so that an uploader that cannot even start says
why there. The CLI configures logging with :data:`LOG_FORMAT`; the training
side quotes the last line after a failed start, and ``runai-uploader status``
shows the last error, and the last refusal of a receiver (:func:`refused_by`
words the start of such a line, for the uploader that writes it and for
``status``, which looks for it).
"""

from __future__ import annotations

import os

from ..safefs import open_in_pod_dir
from .names import LOG_NAME

__all__ = ["LOG_FORMAT", "last_error", "last_line", "last_refusal", "open_log", "read_tail", "refused_by"]

# Its lines: the level is the field after the time (asctime is "date time"),
# which is how last_error() finds the problems.
LOG_FORMAT = "%(asctime)s %(levelname)s pid=%(process)d %(name)s: %(message)s"
# Where the level is in a line split at spaces: asctime's date and time take two fields.
_LEVEL_FIELD = LOG_FORMAT.split(" ").index("%(levelname)s") + 1
_PROBLEMS = ("ERROR", "WARNING")
_LAST_LINE_BYTES = 4096  # read for the last line: a start-up failure's, quoted by finish()
_LAST_ERROR_BYTES = 64 * 1024  # searched for the last error, for `status`


def refused_by(receiver: str) -> str:
    """How a line saying that *receiver* ("the gateway", ...) refused a report begins, after the logger's name."""
    return f"{receiver} rejected"


def open_log(pod_dir: str, flags: int) -> int:
    """A descriptor of *pod_dir*'s uploader log, opened without following a symlink (see safefs)."""
    return open_in_pod_dir(os.path.join(pod_dir, LOG_NAME), flags)


def last_line(pod_dir: str) -> str | None:
    """The last non-blank line of *pod_dir*'s log, stripped and cut at 300 characters; None if it has none.

    Raises OSError if the log cannot be read.
    """
    lines = [line.strip() for line in _tail(pod_dir, _LAST_LINE_BYTES) if line.strip()]
    return lines[-1][:300] if lines else None


def last_error(pod_dir: str) -> str | None:
    """The last ERROR or WARNING line of *pod_dir*'s log; None if there is none, or no readable log."""
    try:
        lines = _tail(pod_dir, _LAST_ERROR_BYTES)
    except OSError:
        return None
    for line in reversed(lines):
        fields = line.split(" ", _LEVEL_FIELD + 1)
        if len(fields) > _LEVEL_FIELD + 1 and fields[_LEVEL_FIELD] in _PROBLEMS:
            return line
    return None


def last_refusal(pod_dir: str, receiver: str, answers: tuple[str, ...]) -> str | None:
    """The last line of *pod_dir*'s log where *receiver* refused a report with one of *answers* (any case),
    cut at 500 characters; None if there is none, or no readable log."""
    try:
        lines = _tail(pod_dir, _LAST_ERROR_BYTES)
    except OSError:
        return None
    start = refused_by(receiver)
    for line in reversed(lines):
        line = line.strip()
        if start in line and any(words in line.lower() for words in answers):
            return line[:500]
    return None


def read_tail(path: str, size: int) -> bytes:
    """The last *size* bytes of the file *path* in a pod directory, opened without following a symlink.

    Raises OSError if it cannot be read.
    """
    fd = open_in_pod_dir(path, os.O_RDONLY)
    try:
        return os.pread(fd, size, max(0, os.fstat(fd).st_size - size))
    finally:
        os.close(fd)


def _tail(pod_dir: str, size: int) -> list[str]:
    """The lines of the last *size* bytes of the log (the first may be cut)."""
    return read_tail(os.path.join(pod_dir, LOG_NAME), size).decode("utf-8", errors="replace").splitlines()
