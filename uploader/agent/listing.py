"""A pod directory as the node agent's main loop reads it: at most :data:`~.config.MAX_JUDGED_FILES` entries.

A job may put any number of files in its own pod directory. Listing, sorting,
opening and statting them all on the main loop made one pod of 200,000 empty
spool-named files cost 7.9 s per judgement, and every other pod (and SIGTERM)
waited behind it. Here each look reads a bounded number of entries (in the
directory's own order, through its checked descriptor) and says whether that
was all of them; a pod holding more is judged "at least" from those, and treated
as pending, so that a cut-short look never makes a pod idle: its delivery (the
uploader, in its own thread) reads it whole.
"""

from __future__ import annotations

import itertools
import os
from typing import NamedTuple

from runai.reporter.safefs import open_pod_dir
from runai.reporter.spool import checkpoint_path, is_spool_file

from .config import MAX_JUDGED_FILES

__all__ = ["Listing", "Signature", "dir_mtime", "list_pod", "listing_signature"]

Signature = tuple[tuple[str, int, int, int], ...]  # each spool file: name, size, mtime, its checkpoint's mtime


class Listing(NamedTuple):
    """The spool files among the first entries of a pod directory, sorted, and whether those were all of them."""

    names: tuple[str, ...]
    complete: bool


def list_pod(pod_dir: str, limit: int = MAX_JUDGED_FILES) -> Listing:
    """The spool files among *pod_dir*'s first *limit* entries (of any kind); none if it cannot be listed."""
    try:
        dir_fd = open_pod_dir(pod_dir)
    except FileNotFoundError:
        return Listing((), True)  # gone: the next listing of the spool directory forgets it
    except OSError:
        return Listing((), False)  # unsafe (its refusal says so), or EMFILE, EIO: never "nothing pending"
    try:
        with os.scandir(dir_fd) as entries:  # (reads the directory a block at a time: never all of it)
            names = [entry.name for entry in itertools.islice(entries, limit + 1)]
    except OSError:
        return Listing((), False)
    finally:
        os.close(dir_fd)
    complete = len(names) <= limit
    return Listing(tuple(sorted(filter(is_spool_file, names[:limit]))), complete)


def listing_signature(pod_dir: str) -> Signature:
    """What must change before a judgment can: each spool file's name, size and mtime, and its checkpoint's.

    Of the files :func:`list_pod` reads; past them, the directory's mtime stands for the rest (a new file, not
    another's growth: the figures of a pod that large are "at least" anyway).
    """
    listing = list_pod(pod_dir)
    out = []
    for name in listing.names:
        path = os.path.join(pod_dir, name)
        out.append((name, *_size_and_mtime(path), _size_and_mtime(checkpoint_path(path))[1]))
    if not listing.complete:
        out.append(("", -1, dir_mtime(pod_dir), -1))
    return tuple(out)


def dir_mtime(path: str) -> int:
    """*path*'s mtime (ns), -1 if it cannot be read."""
    return _size_and_mtime(path)[1]


def _size_and_mtime(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return -1, -1
    return info.st_size, info.st_mtime_ns
