"""The ``run`` command's work: follow one pod's spool until its writers are gone.

A Reporter starts this in the background. It logs to the pod's log file,
takes the pod's lock (or leaves the pod to the uploader that holds it), and
delivers until done or stopped by a signal.
"""

from __future__ import annotations

import logging

from runai.reporter.settings import Settings, redact_url, warn_insecure_auth
from runai.reporter.spool import PodLock, holder_pid

from .delivery import build_uploader, follower_options
from .runtime.limits import raise_open_files_limit
from .runtime.logsetup import log_to_pod
from .runtime.signals import StopOnSignals

__all__ = ["follow"]

logger = logging.getLogger(__name__)

# Reporters probe the lock with a brief shared lock; a short retry keeps such
# a probe from being mistaken for a running uploader.
_LOCK_WAIT = 0.5  # seconds


def follow(settings: Settings) -> int | None:
    """Deliver *settings*' pod (its directory exists) until done.

    Returns the delivery's exit status (:data:`~uploader.delivery.service.EXIT_DELIVERED`
    or :data:`~uploader.delivery.service.EXIT_PENDING`), or None when another uploader
    serves the pod and this one left it alone.
    """
    log_to_pod(settings.pod_dir)
    raise_open_files_limit()

    lock = PodLock(settings.pod_dir)
    if not lock.acquire(timeout=_LOCK_WAIT):
        logger.info("another uploader (pid %s) serves %s; exiting", holder_pid(settings.pod_dir), settings.pod_dir)
        return None
    warn_insecure_auth(settings)  # now that logging goes to uploader.log
    try:
        uploader = build_uploader(settings, follower_options(settings), lock=lock)
        logger.info(
            "uploader started for pod %s, pushing to %s",
            settings.pod_uuid,
            " and ".join(redact_url(url) for url in (settings.gateway_url, settings.remote_write_url) if url),
        )
        with StopOnSignals() as stopper:
            stopper.watch(uploader)
            status = uploader.run()
        if stopper.signum is not None:
            logger.info("stopped by signal %d", stopper.signum)
        logger.info(
            "uploader exiting with status %d: %d reports delivered, %d pending",
            status,
            uploader.delivered_records,
            uploader.pending_records(),
        )
        return status
    finally:
        lock.release()
