"""What the Lightning logger and the Transformers callback share: a rank-aware, never-raising reporter.

Both report through a public :class:`~runai.reporter.Reporter`, created on
first use in the process that reports (so a rank that does not report never
creates a spool file), and finished when the framework says training ended.
Framework-free: the framework modules pass in what they know.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Callable, Iterator, Mapping

from ._names import report_name, to_number
from ._reporter import Reporter
from .settings import Settings, check_keywords, load_settings

__all__ = ["IntegrationReporter", "count_leaf_modules", "flatten_params", "optimizer_name"]

_MAX_DEPTH = 8  # nested hyperparameters deeper than this are reported as their str()


class IntegrationReporter:
    """Reports for one integration object; every failure is logged once on *log* and swallowed.

    *caller* names the integration in messages (``"RunaiLogger()"``); *settings*
    are ``Reporter(...)`` keywords, checked here so that a typo or a missing
    ``podUUID`` raises where the user wrote it, not somewhere in training.
    """

    def __init__(self, log: logging.Logger, caller: str, all_ranks: bool, settings: dict[str, Any]) -> None:
        check_keywords(settings, caller, Reporter.settings_class)
        self.settings: Settings = load_settings(**settings)
        self._overrides = settings
        self._log = log
        self.all_ranks = all_ranks
        self._suffix = ""
        self._reporter: Reporter | None = None
        self._warned = False

    def __getstate__(self) -> dict[str, Any]:
        # ddp_spawn pickles the integration into each rank: the reporter (its open
        # spool file) stays with the process that made it.
        return {**self.__dict__, "_reporter": None}

    # -- which process reports ------------------------------------------------

    def reports(self, rank: int) -> bool:
        """Whether the process of global *rank* reports; with ``all_ranks`` every rank does, under its own names."""
        if rank == 0:
            self._suffix = ""
            return True
        if not self.all_ranks:
            return False
        # The pod's group on the gateway (one podUUID) holds every rank's values:
        # a suffix keeps rank 1's loss from overwriting rank 0's.
        self._suffix = f"_rank{rank}"
        return True

    # -- reporting, guarded ---------------------------------------------------

    def guard(self, hook: Callable[[], None], where: str) -> None:
        """Run *hook*; an exception is logged once (for this object's life) and training goes on."""
        try:
            hook()
        except Exception as exc:  # the integration must never break training
            self._failed(exc, where)

    def _failed(self, exc: Exception, where: str) -> None:
        if not self._warned:
            self._warned = True
            self._log.warning("runai reporting failed in %s (%s: %s); training continues, later failures "
                              "are not logged", where, type(exc).__name__, exc)

    def _open(self) -> Reporter:
        reporter = self._reporter
        if reporter is None or reporter.finished:  # a new fit after finalize() reports again
            reporter = self._reporter = Reporter(**self._overrides)
        return reporter

    def metric(self, name: str, value: object) -> None:
        """Report *value* if it is one real number; names are used as given (sanitize with report_name)."""
        number = to_number(value)
        if number is None:
            return
        # Called several times a step: inlined rather than through guard() and a closure.
        try:
            self._open().reportMetric(name + self._suffix if self._suffix else name, number)
        except Exception as exc:  # the integration must never break training
            self._failed(exc, f"reporting {name}")

    def metrics(self, logs: Mapping[str, Any]) -> None:
        """Every numeric entry of *logs*, under its sanitized key."""
        for key, value in logs.items():
            self.metric(report_name(str(key)), value)

    def parameter(self, name: str, value: object) -> None:
        """Report *value* as a parameter: a str or number as it is, anything else as its str()."""
        text = value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else str(value)
        self.guard(lambda: self._open().reportParameter(name + self._suffix, text), f"reporting {name}")

    def finish(self) -> None:
        """Deliver and end the stream of this process, if it reported anything."""
        reporter, self._reporter = self._reporter, None
        if reporter is not None:
            self.guard(lambda: _finish(reporter), "finish")


def _finish(reporter: Reporter) -> None:
    reporter.finish()  # its verdict is logged by finish() itself when False


def flatten_params(params: Mapping[str, Any], prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    """(sanitized name, value) of every leaf of nested *params*: ``{"opt": {"lr": 1}}`` -> ``opt_lr``."""
    for key, value in params.items():
        name = report_name(f"{prefix}{key}")
        nested = vars(value) if isinstance(value, argparse.Namespace) else value
        if isinstance(nested, Mapping) and nested and depth < _MAX_DEPTH:
            yield from flatten_params(nested, f"{name}_", depth + 1)
        else:
            yield name, value


def count_leaf_modules(module: Any) -> int:
    """The number of modules without children: a torch model's layers, however deeply nested."""
    return sum(1 for m in module.modules() if next(iter(m.children()), None) is None)


def optimizer_name(optimizer: Any) -> str:
    """The class name of the optimizer inside framework wrappers (``AcceleratedOptimizer`` -> ``AdamW``)."""
    for _ in range(4):  # wrappers keep the real one as .optimizer
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return type(optimizer).__name__
