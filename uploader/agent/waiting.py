"""A pod queued with writers alive, looked at again while it waits: it goes to the dead pods' turn once they die.

Dead pods are taken before live ones, and live deliveries never hold every slot (:mod:`.slots`); but a pod
queued while its writers lived would keep its place among the live ones after they died, and a dying pod must
be taken within about a second whatever the live pods of other owners hold. So a live pod that waits is
probed every :data:`~.config.LOCK_POLL_SECONDS`, as cheaply as an active pod is (its lock, and a lock probe
of its files), and judged again (and queued anew) only once that changed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from runai.reporter.spool import SpoolTail, holder_pid

if TYPE_CHECKING:
    from .schedule import Pod

__all__ = ["still_live"]


def still_live(pod: Pod) -> bool:
    """Whether *pod*, queued with writers alive, still waits as such: no uploader holds its lock (its own may
    have come back) and a writer of one of the spool files it was judged with is alive."""
    try:
        if holder_pid(pod.path) is not None:
            return False
    except OSError:
        return False  # judged again, which refuses it and says why
    for name in pod.files:
        try:
            tail = SpoolTail(os.path.join(pod.path, name))
        except OSError:
            continue  # gone meanwhile (rotated, retired): the others say
        with tail:
            if tail.writer_alive():
                return True
    return False
