"""Handing the pod lock off when a delivery is done: release it, look again, take it back if work arrived.

A writer that saw the lock held just before it was released relies on this
uploader, and its file already exists: the look after the release finds it.
One sink's loop looks in memory (a rescan of what it follows); the fan-out over
several looks at the disk, once every loop is done.
"""

from __future__ import annotations

import logging
from typing import Callable

from runai.reporter.spool import PodLock

__all__ = ["hand_off"]

logger = logging.getLogger(__name__)


def hand_off(lock: PodLock, work_arrived: Callable[[], bool], pod_dir: str) -> bool:
    """Release *lock*; True if it stays released, False if *work_arrived()* and the lock is held again."""
    lock.release()
    if not work_arrived():
        return True
    if lock.acquire():
        return False
    logger.info("another uploader took over %s", pod_dir)
    return True
