"""The Reporter: validate a report, append it to the spool, and finish.

The hot path is ``reportMetric`` -> validate -> ``SpoolWriter.write_metric``:
no network, no threads, no buffering. Everything else (reading the spool,
pushing, retrying) happens in the uploader process.
"""

from __future__ import annotations

import atexit
import threading
from functools import partial
from types import TracebackType
from typing import Any, ClassVar

from ._checks import CHECKED_NAMES, check_name, checked_metric, parameter_value
from ._finish import FinishVerdict
from ._health import DeliveryWatch
from ._launch import ensure_uploader
from ._local import announce
from ._setting_fields import Settings, check_keywords
from .settings import load_settings, warn_insecure_auth
from .spool import SpoolWriter

__all__ = ["Reporter"]

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
        self._writer = SpoolWriter(
            settings.pod_dir,
            settings.pod_uuid,
            max_bytes=settings.spool_file_bytes,
            fsync=settings.fsync == "always",
            on_tick=None if self._watch is None else partial(_tick, settings, self._watch),
            check=checked_metric,
            names=CHECKED_NAMES,
            closed_error=_FINISHED,
            receivers=settings.sinks,
        )
        # A report is one Python call, not two (~3% of a report): the writer checks a metric through
        # checked_metric (for a new name or a non-float) and raises _FINISHED once closed, as reportMetric
        # would. A subclass's own reportMetric stays in the path.
        for alias in ("reportMetric", "report_metric"):
            if getattr(type(self), alias) is _REPORT_METRIC:
                setattr(self, alias, self._writer.write_metric)
        self._result: bool | None = None
        self._finish_lock = threading.Lock()  # never waited on: see finish()
        self._verdict = FinishVerdict(settings, self._writer, self._watch)
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
            return result if result is not None else self._verdict.wait(seconds)
        try:
            if self._result is None:
                self._writer.close()
                self._result = self._verdict.wait(seconds)
                _untrack(self)
            return self._result
        finally:
            self._finish_lock.release()

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
