"""Report metrics and parameters of a training job to a Prometheus Pushgateway.

Scoped use (recommended)::

    with runai.reporter.Reporter() as reporter:
        reporter.reportMetric('batch_size', 100)

Non-scoped use: ``runai.reporter.reportMetric(...)`` and
``runai.reporter.reportParameter(...)`` report through a global Reporter made
on first use; ``runai.reporter.finish()`` delivers and ends it.

Importing this package is cheap: it starts no thread and no process, and does
not import ``prometheus_client`` or ``watchdog``.
"""

from __future__ import annotations

import threading

from ._reporter import Reporter
from ._version import __version__
from .settings import ConfigError

__all__ = [
    "ConfigError",
    "Reporter",
    "__version__",
    "finish",
    "reportMetric",
    "reportParameter",
    "report_metric",
    "report_parameter",
]

_global: Reporter | None = None
# The global reporter finish() is ending, so that a finish() made meanwhile (in
# a SIGTERM handler, say) waits for that delivery rather than answering True.
_finishing: Reporter | None = None
# Reentrant: finish() may run in a signal handler that interrupted its holder.
_global_lock = threading.RLock()


def _global_reporter() -> Reporter:
    reporter = _global
    if reporter is not None and not reporter.finished:
        return reporter
    return _new_global()


def _new_global() -> Reporter:
    global _global
    with _global_lock:
        if _global is None or _global.finished:
            _global = Reporter()  # ConfigError surfaces here, at the first report
        return _global


def reportMetric(name: str, value: float) -> None:  # 0.4.1's name
    """Report a metric through the global reporter (created on first use)."""
    _global_reporter().reportMetric(name, value)


def reportParameter(name: str, value: str | int | float) -> None:  # 0.4.1's name
    """Report a parameter through the global reporter (created on first use)."""
    _global_reporter().reportParameter(name, value)


def finish(timeout: float | None = None) -> bool:
    """Deliver everything the global reporter holds and end it.

    Returns True when everything reached the gateway (also when nothing was
    reported). A report made afterwards starts a new global reporter.
    """
    global _global, _finishing
    with _global_lock:
        reporter, _global = _global, None
        if reporter is None:
            reporter = _finishing
        else:
            _finishing = reporter
    if reporter is None:
        return True
    try:
        return reporter.finish(timeout)
    finally:
        if _finishing is reporter and reporter.finished:
            _finishing = None


report_metric = reportMetric
report_parameter = reportParameter
