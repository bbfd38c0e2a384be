"""The Reporter: validate a report, append it to the spool, and finish.

The hot path is ``reportMetric`` -> validate -> ``SpoolWriter.write_metric``:
no network, no threads, no buffering. Everything else (reading the spool,
pushing, retrying) happens in the uploader process.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from functools import partial
from types import TracebackType
from typing import Any, ClassVar

from ._checks import CHECKED_NAMES, check_name, checked_metric, parameter_value
from ._health import DeliveryWatch
from ._launch import ensure_uploader, reap, startup_failure
from ._local import announce
from ._setting_argv import history_command, recover_command
from ._setting_fields import Settings, check_keywords
from ._validate import ENV_GATEWAY_URL, ENV_REMOTE_WRITE_URL
from .settings import load_settings, warn_insecure_auth
from .spool import GATEWAY, LOG_NAME, REMOTE_WRITE, SpoolWriter, delivery_state

__all__ = ["Reporter"]

logger = logging.getLogger(__name__)

_FINISHED = "this Reporter is finished: create a new Reporter to report again"  # a report after finish()

# Reporters not yet finished; the atexit hook finishes them, so that a program
# that never calls finish() still delivers everything (0.4.1 lost it all).
_unfinished: set[Reporter] = set()
_unfinished_lock = threading.RLock()  # reentrant: finish() may run in a signal handler that interrupted its holder
_atexit_registered = False


class Reporter:
    """Reports metrics and parameters of one pod to its Pushgateway.

    Use it as a context manager; leaving the ``with`` block calls
    :meth:`finish`. Keyword arguments (``pod_uuid=``, ``gateway_url=``, ...:
    the fields of :class:`~runai.reporter.settings.Settings` but the
    credentials) override the environment variables (``podUUID``,
    ``reporterGatewayURL``, ...); a missing or invalid setting raises
    :class:`~runai.reporter.ConfigError` here, at creation.
    """

    # The settings it reads: a subclass may name a subclass of Settings with more of them.
    settings_class: ClassVar[type[Settings]] = Settings

    def __init__(self, **overrides: Any) -> None:
        # Every keyword is a setting, named as its field of Settings (docs/api.md lists them).
        check_keywords(overrides, "Reporter.__init__()", self.settings_class)
        self.settings = settings = load_settings(settings_class=self.settings_class, local=True, **overrides)
        warn_insecure_auth(settings)
        announce(settings)
        # Local mode (no receiver): no uploader, no tick. Otherwise the writer's tick (about once a second, from
        # a report) starts a new uploader if the pod's died during the job, and relays delivery trouble.
        self._watch = DeliveryWatch(settings.pod_dir) if settings.sinks else None
        self._writer = SpoolWriter(settings.pod_dir, settings.pod_uuid,
                                   max_bytes=settings.spool_file_bytes, fsync=settings.fsync == "always",
                                   on_tick=None if self._watch is None else partial(_tick, settings, self._watch),
                                   check=checked_metric, names=CHECKED_NAMES, closed_error=_FINISHED,
                                   receivers=settings.sinks)
        # A report is one Python call, not two (~3% of a report): the writer checks a metric through
        # checked_metric (for a new name or a non-float) and raises _FINISHED once closed, as reportMetric
        # would. A subclass's own reportMetric stays in the path.
        for alias in ("reportMetric", "report_metric"):
            if getattr(type(self), alias) is _REPORT_METRIC:
                setattr(self, alias, self._writer.write_metric)
        self._result: bool | None = None
        self._finish_lock = threading.Lock()  # never waited on: see finish()
        self._covered: dict[str, tuple[int, int]] = {}  # spool path -> (records, refused) once fully delivered
        _track(self)
        if self._writer.path and self._watch is not None:
            ensure_uploader(settings)

    # -- reporting --------------------------------------------------------

    def reportMetric(self, name: str, value: float) -> None:  # 0.4.1's name
        """Report a numeric metric; raises TypeError/ValueError for bad input, ValueError once finished.

        An instance's ``reportMetric`` is its writer's ``write_metric``, bound in
        ``__init__`` (one Python frame a report) unless a subclass overrides
        this method, or the class's method is patched before the instance is
        made; a patch made afterwards does not reach existing instances.
        """
        self._writer.write_metric(name, value)

    def reportParameter(self, name: str, value: str | int | float) -> None:  # 0.4.1's name
        """Report a parameter (a str, or a number sent as its str())."""
        writer = self._writer
        if writer.closed:
            raise ValueError(_FINISHED)
        name = check_name(name)
        writer.write_parameter(name, parameter_value(name, value))

    report_metric = reportMetric
    report_parameter = reportParameter

    # -- finishing --------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._result is not None

    def finish(self, timeout: float | None = None) -> bool:
        """End this process's stream and wait until the uploader delivered it.

        Returns True when every report reached the gateway (in local mode, once
        the spool is written: the reports are kept, not delivered). After *timeout*
        seconds (default: ``reporterFinishTimeout``) it returns False and logs
        one warning with the number of pending reports and the command that
        recovers them. It never raises because the gateway is down, and
        calling it again returns the first answer. A call made while another
        is running (in another thread, or in a signal handler that interrupted
        it) waits for the delivery itself, never for the other call.
        """
        seconds = self.settings.finish_timeout if timeout is None else timeout
        # Never wait for the lock: a SIGTERM handler that calls finish() may
        # have interrupted finish() in this very thread, which cannot go on
        # until the handler returns.
        if not self._finish_lock.acquire(blocking=False):
            result = self._result
            return result if result is not None else self._wait(seconds)
        try:
            if self._result is None:
                self._writer.close()
                self._result = self._wait(seconds)
                _untrack(self)
            return self._result
        finally:
            self._finish_lock.release()

    def _wait(self, timeout: float) -> bool:
        """Wait until the closed writer's files are delivered; the verdict, with one warning if False."""
        writer = self._writer
        if not writer.path:
            logger.warning("%d reports were lost: the spool could not be created in %s",
                           writer.lost, self.settings.pod_dir)
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
                    logger.warning("finish(): the spool directory %s was removed; %d reports cannot be delivered",
                                   self.settings.pod_dir, writer.records - delivered)
                    return False
                # The uploader may have died or given up: start another.
                ensure_uploader(self.settings)
                next_probe = now + 0.5
            time.sleep(min(pause, deadline - now))
            pause = min(pause * 2, 0.02)
        reap()
        if rejected:
            sinks = self.settings.sinks
            who = ("the gateway" if sinks == (GATEWAY,) else "the remote-write receiver" if sinks == (REMOTE_WRITE,)
                   else "the gateway and the remote-write receiver (each counts its own)")
            logger.warning("%s refused %d of this process's values; uploader.log in %s names them",
                           who, rejected, self.settings.pod_dir)
            return False
        if writer.lost:
            logger.warning("%d of %d reports were lost because the spool file %s could not be written",
                           writer.lost, writer.lost + writer.records, writer.path)
            return False
        return True

    def _kept_locally(self) -> bool:
        """Local mode's verdict: True once the spool is written, said once in the log."""
        writer, settings = self._writer, self.settings
        if writer.lost:
            logger.warning("%d of %d reports were lost because the spool file %s could not be written",
                           writer.lost, writer.lost + writer.records, writer.path)
            return False
        logger.info("%d reports are kept in %s, not delivered: neither %s nor %s is set. To see them, run: %s; "
                    "to deliver them later: %s", writer.records, settings.pod_dir, ENV_GATEWAY_URL,
                    ENV_REMOTE_WRITE_URL, history_command(settings.spool_dir, settings.pod_uuid),
                    recover_command(settings.spool_dir, settings.pod_uuid, "HOST:PORT"))
        return True

    def _warn_timeout(self, timeout: float, delivered: int) -> None:
        writer, settings = self._writer, self.settings
        failure = startup_failure(settings.pod_dir)
        uploader = ("the uploader keeps trying" if failure is None else
                    f"the uploader could not start or keep running ({failure}; {LOG_NAME} in {settings.pod_dir} "
                    "has the details)")
        lost = "" if not writer.lost else (f"; {writer.lost} more were lost because the spool file could not be "
                                           "written")
        assert self._watch is not None  # local mode never waits
        self._watch.poll(tell=False)  # a failure the job ended too soon to hear of: told in this one warning
        cause = "" if self._watch.last_cause is None else f" (the last failure: {self._watch.last_cause})"
        logger.warning(
            "finish() timed out after %.1f s with %d of %d reports not yet delivered to %s%s%s; they are safe in %s "
            "and %s. To upload them yourself, run: %s",
            timeout, writer.records - delivered, writer.records,
            " and ".join(url for url in (settings.gateway_url, settings.remote_write_url) if url), cause, lost,
            writer.path,
            uploader, recover_command(settings.spool_dir, settings.pod_uuid, settings.gateway_url,
                                      settings.remote_write_url),
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

    def __enter__(self) -> Reporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish()

    def __repr__(self) -> str:
        state = "finished" if self.finished else "open"
        return f"<Reporter pod={self.settings.pod_uuid!r} spool={self._writer.path!r} {state}>"


# Reporter.reportMetric as defined, so that a class-level patch or wrapper (mock.patch.object, tracing)
# made before a Reporter is created stays in its path.
_REPORT_METRIC = Reporter.reportMetric


def _tick(settings: Settings, watch: DeliveryWatch) -> None:
    """The writer's once-a-second tick (never blocks, never raises): an uploader running, trouble told."""
    ensure_uploader(settings)
    watch.poll()


def _track(reporter: Reporter) -> None:
    global _atexit_registered
    with _unfinished_lock:
        _unfinished.add(reporter)
        if not _atexit_registered:
            atexit.register(_finish_all)
            _atexit_registered = True


def _untrack(reporter: Reporter) -> None:
    with _unfinished_lock:
        _unfinished.discard(reporter)


def _finish_all() -> None:
    with _unfinished_lock:
        pending = list(_unfinished)
    for reporter in pending:
        reporter.finish()
