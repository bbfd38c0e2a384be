"""What ``Reporter.finish()`` waits for, and its verdict: every report delivered, kept locally, or why not.

The wait reads the checkpoints of the closed writer's files (each fully delivered file once), starts another
uploader if the pod's is gone, and ends with at most one warning naming what is pending and the command that
recovers it.
"""

from __future__ import annotations

import logging
import os
import time

from ._health import DeliveryWatch
from ._launch import ensure_uploader, reap, startup_failure
from ._redact import redact_url
from ._setting_argv import history_command, recover_command
from ._setting_fields import Settings
from ._validate import ENV_GATEWAY_URL, ENV_REMOTE_WRITE_URL
from .spool import GATEWAY, LOG_NAME, REMOTE_WRITE, SpoolWriter, delivery_state

__all__ = ["FinishVerdict"]

logger = logging.getLogger(__name__)


class FinishVerdict:
    """The delivery of one Reporter's closed writer, as finish() judges it; *watch* None: local mode."""

    def __init__(self, settings: Settings, writer: SpoolWriter, watch: DeliveryWatch | None) -> None:
        self.settings = settings
        self._writer = writer
        self._watch = watch
        self._covered: dict[str, tuple[int, int]] = {}  # spool path -> (records, refused) once fully delivered

    def wait(self, timeout: float) -> bool:
        """Wait until the closed writer's files are delivered; the verdict, with one warning if False."""
        writer = self._writer
        if not writer.path:
            logger.warning(
                "%d reports were lost: the spool could not be created in %s", writer.lost, self.settings.pod_dir
            )
            return False
        if self._watch is None:
            return self._kept_locally()
        deadline = time.monotonic() + max(0.0, timeout)
        next_probe = 0.0
        pause = 0.001
        while True:
            # No files yet: another finish() has not finished closing the writer.
            delivered, rejected, done = self._delivery() if writer.files else (0, 0, False)
            if done:
                break
            now = time.monotonic()
            if now >= deadline:
                self._warn_timeout(timeout, delivered)
                return False
            if now >= next_probe:
                if not os.path.isdir(self.settings.pod_dir):
                    logger.warning(
                        "finish(): the spool directory %s was removed; %d reports cannot be delivered",
                        self.settings.pod_dir,
                        writer.records - delivered,
                    )
                    return False
                # The uploader may have died or given up: start another.
                ensure_uploader(self.settings)
                next_probe = now + 0.5
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, 0.02)
        reap()
        if rejected:
            sinks = self.settings.sinks
            who = (
                "the gateway"
                if sinks == (GATEWAY,)
                else "the remote-write receiver"
                if sinks == (REMOTE_WRITE,)
                else "the gateway and the remote-write receiver (each counts its own)"
            )
            logger.warning(
                "%s refused %d of this process's values; uploader.log in %s names them",
                who,
                rejected,
                self.settings.pod_dir,
            )
            return False
        if _lost(writer):
            return False
        return True

    def _kept_locally(self) -> bool:
        """Local mode's verdict: True once the spool is written, said once in the log."""
        writer, settings = self._writer, self.settings
        if _lost(writer):
            return False
        logger.info(
            "%d reports are kept in %s, not delivered: neither %s nor %s is set. To see them, run: %s; "
            "to deliver them later: %s",
            writer.records,
            settings.pod_dir,
            ENV_GATEWAY_URL,
            ENV_REMOTE_WRITE_URL,
            history_command(settings.spool_dir, settings.pod_uuid, settings.own_pod_dir),
            recover_command(settings.spool_dir, settings.pod_uuid, "HOST:PORT", pod_dir=settings.own_pod_dir),
        )
        return True

    def _warn_timeout(self, timeout: float, delivered: int) -> None:
        writer, settings = self._writer, self.settings
        failure = startup_failure(settings.pod_dir)
        uploader = (
            "the uploader keeps trying"
            if failure is None
            else f"the uploader could not start or keep running ({failure}; {LOG_NAME} in {settings.pod_dir} "
            "has the details)"
        )
        lost = (
            "" if not writer.lost else (f"; {writer.lost} more were lost because the spool file could not be written")
        )
        assert self._watch is not None  # local mode never waits
        self._watch.poll(tell=False)  # a failure the job ended too soon to hear of: told in this one warning
        cause = "" if self._watch.last_cause is None else f" (the last failure: {self._watch.last_cause})"
        logger.warning(
            "finish() timed out after %.1f s with %d of %d reports not yet delivered to %s%s%s; they are safe in %s "
            "and %s. To upload them yourself, run: %s",
            timeout,
            writer.records - delivered,
            writer.records,
            " and ".join(redact_url(url) for url in (settings.gateway_url, settings.remote_write_url) if url),
            cause,
            lost,
            writer.path,
            uploader,
            recover_command(
                settings.spool_dir,
                settings.pod_uuid,
                settings.gateway_url,
                settings.remote_write_url,
                settings.own_pod_dir,
            ),
        )

    def _delivery(self) -> tuple[int, int, bool]:
        """(reports delivered, values refused, everything covered) from the checkpoints of this writer's files."""
        delivered = rejected = 0
        done = True
        for spool in self._writer.files:
            if spool.path in self._covered:  # a covered file stays covered: read its checkpoint once
                records, refused = self._covered[spool.path]
                delivered, rejected = delivered + records, rejected + refused
                continue
            # quiet: polled every few ms; the uploader warns of a damaged checkpoint in its own log
            state = delivery_state(spool.path, spool.spool_id, spool.size, sinks=self.settings.sinks, quiet=True)
            delivered += state.records
            rejected += state.refused
            if not state.covered:
                done = False
            elif state.checkpoint is not None:  # not a file retention deleted: the pod directory may go yet
                self._covered[spool.path] = (state.records, state.refused)
        return delivered, rejected, done


def _lost(writer: SpoolWriter) -> bool:
    """Whether reports were lost (the spool file could not be written); said in the log."""
    if writer.lost:
        logger.warning(
            "%d of %d reports were lost because the spool file %s could not be written",
            writer.lost,
            writer.lost + writer.records,
            writer.path,
        )
    return bool(writer.lost)
