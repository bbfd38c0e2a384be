"""The process's descriptors shared out: followed spool files get at most a share, the rest stay in reserve.

An uploader (and each delivery of the node agent, all in one process) keeps a
descriptor open per spool file it follows. A pod with more spool files than
the descriptor limit (25,000 over 20,000) left none for checkpoints, sockets
or the metrics server: every one failed with EMFILE, for every pod. Here at
most :func:`DescriptorBudget.limit` files are followed at once, process-wide;
the others wait on disk until delivered ones are retired.
"""

from __future__ import annotations

import errno
import resource
import threading

__all__ = ["FOLLOWED_DESCRIPTORS", "DescriptorBudget", "MIN_RESERVE", "RESERVE_FRACTION", "out_of_descriptors"]

RESERVE_FRACTION = 4  # a quarter of the soft limit is kept for everything but followed files...
MIN_RESERVE = 64  # ...and at least this many: checkpoints (2 each while written), sockets, a pod lock, the log


class DescriptorBudget:
    """Counts the descriptors held for followed files against the soft RLIMIT_NOFILE less the reserve."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = 0

    @staticmethod
    def limit() -> int:
        """Followed files open at once, process-wide (read each time: the uploader raises its soft limit)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 1 << 20
        return max(1, soft - max(MIN_RESERVE, soft // RESERVE_FRACTION))

    def take(self) -> bool:
        """One descriptor for a followed file, if the share allows; False to leave the file for later."""
        with self._lock:
            if self._held >= self.limit():
                return False
            self._held += 1
            return True

    def give(self) -> None:
        with self._lock:
            self._held = max(0, self._held - 1)

    @property
    def held(self) -> int:
        return self._held


FOLLOWED_DESCRIPTORS = DescriptorBudget()


def out_of_descriptors(exc: OSError) -> str | None:
    """What to say of *exc* when it is this process (EMFILE) or the system (ENFILE) out of descriptors: never a
    receiver's or a file's fault. None for any other error."""
    if exc.errno not in (errno.EMFILE, errno.ENFILE):
        return None
    return f"this process is out of file descriptors ({exc.strerror}), not the receiver's fault: raise `ulimit -n`"
