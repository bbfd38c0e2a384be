"""The names of the files in a pod directory, and which of them are spool files.

A pod directory holds one spool file per writing process (``w<pid>-<id>.jsonl``),
a checkpoint beside each (``w<pid>-<id>.ckpt``), the uploader's lock
(``uploader.lock``) and its log (``uploader.log``). Names starting with a dot
are temp files, not yet (or no longer) part of the spool.
"""

from __future__ import annotations

from ..safefs import list_pod_dir

__all__ = [
    "CHECKPOINT_SUFFIX",
    "LOCK_NAME",
    "LOG_NAME",
    "SPOOL_SUFFIX",
    "checkpoint_path",
    "is_spool_file",
    "spool_file_names",
    "writer_pid",
]

SPOOL_SUFFIX = ".jsonl"
CHECKPOINT_SUFFIX = ".ckpt"
LOCK_NAME = "uploader.lock"
LOG_NAME = "uploader.log"  # the uploader's log, one per pod directory (its stderr too)


def is_spool_file(filename: str) -> bool:
    """True for a finished spool file name (temp files start with a dot)."""
    return filename.endswith(SPOOL_SUFFIX) and not filename.startswith(".")


def writer_pid(filename: str) -> int | None:
    """The pid of the process that wrote the spool file *filename* (``w<pid>-<id>.jsonl``), if it says."""
    pid = filename[1:].split("-", 1)[0] if filename.startswith("w") else ""
    # isdigit() alone lets through digits int() refuses, such as "²".
    return int(pid) if pid.isascii() and pid.isdecimal() else None


def spool_file_names(pod_dir: str) -> list[str]:
    """The finished spool files in *pod_dir*, sorted; [] if it cannot be listed (or is not private)."""
    try:
        names = list_pod_dir(pod_dir)
    except OSError:
        return []
    return sorted(n for n in names if is_spool_file(n))


def checkpoint_path(spool_path: str) -> str:
    """Where the checkpoint of the spool file *spool_path* lives."""
    base = spool_path[: -len(SPOOL_SUFFIX)] if spool_path.endswith(SPOOL_SUFFIX) else spool_path
    return base + CHECKPOINT_SUFFIX
