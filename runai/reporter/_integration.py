"""What the Lightning logger and the Transformers callback share: a rank-aware, never-raising reporter.

Both report through a public :class:`~runai.reporter.Reporter`, created on
first use in the process that reports (so a rank that does not report never
creates a spool file), and finished when the framework says training ended.
Framework-free: the framework modules pass in what they know.
"""

from __future__ import annotations

import argparse
import logging
import math
from typing import Any, Callable, Iterator, Mapping

from . import _names as names
from ._names import FailureLog, report_name, to_number
from ._reporter import Reporter
from ._setting_fields import Settings, check_keywords
from .settings import load_settings

__all__ = [
    "SHORT_FINISH_S",
    "IntegrationReporter",
    "count_leaf_modules",
    "flatten_params",
    "optimizer_name",
    "parameter_value",
]

_MAX_DEPTH = 8  # nested hyperparameters deeper than this are reported as their str()
# finish() outside the end of training (an evaluation, a failed run): the spool
# is durable and the uploader keeps delivering after it, so a gateway that is
# down must not hold the user's program for reporterFinishTimeout.
SHORT_FINISH_S = 2.0


class IntegrationReporter:
    """Reports for one integration object; every failure is logged once on *log* and swallowed.

    *caller* names the integration in messages (``"RunaiLogger()"``); *settings*
    are ``Reporter(...)`` keywords, checked here so that a typo or a missing
    ``podUUID`` raises where the user wrote it, not somewhere in training.
    """

    def __init__(self, log: logging.Logger, caller: str, all_ranks: bool, settings: dict[str, Any]) -> None:
        check_keywords(settings, caller, Reporter.settings_class)
        self.settings: Settings = load_settings(local=True, **settings)
        self._overrides = settings
        self._log = log
        self.all_ranks = all_ranks
        self._suffix = ""
        self._reporter: Reporter | None = None
        self._failures = FailureLog(log, "runai reporting")
        self._cannot_open = False  # Reporter() failed: not retried on every report until restart()

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
        """Run *hook*; an exception is logged once per *where* (for this object's life) and training goes on."""
        try:
            hook()
        except Exception as exc:  # the integration must never break training
            self._failed(exc, where)

    def _failed(self, exc: Exception, where: str) -> None:
        self._failures.failed(where, exc)

    def restart(self) -> None:
        """A new stage (fit, evaluate, ...) begins: a Reporter that could not be created is tried again."""
        self._cannot_open = False

    def _open(self) -> Reporter | None:
        reporter = self._reporter
        if reporter is None or reporter.finished:  # a new fit after finalize() reports again
            if self._cannot_open:
                return None
            self._cannot_open = True  # until Reporter() returns: its failure is not retried each report
            reporter = self._reporter = Reporter(**self._overrides)
            self._cannot_open = False
        return reporter

    def metric(self, name: str, value: object) -> None:
        """Report *value* if it is one real number; names are used as given (sanitize with report_name)."""
        number = to_number(value)
        if number is None:
            return
        # Called several times a step: inlined rather than through guard() and a closure.
        try:
            reporter = self._open()
            if reporter is not None:
                reporter.reportMetric(name + self._suffix if self._suffix else name, number)
        except Exception as exc:  # the integration must never break training
            self._failed(exc, f"reporting {name}")

    def metrics(self, logs: Mapping[str, Any]) -> None:
        """Every numeric entry of *logs*, under its sanitized key."""
        for key, value in logs.items():
            self.metric(report_name(str(key)), value)

    def parameter(self, name: str, value: object) -> None:
        """Report *value* as a parameter: a str or number as it is, a scalar tensor as its number, else its str()."""
        self.guard(lambda: self._parameter(name, value), f"reporting {name}")

    def parameters(self, params: Mapping[str, Any]) -> None:
        """Every leaf of nested *params* as a parameter, under its flattened, sanitized name (flatten_params)."""
        for name, value in flatten_params(params):
            self.parameter(name, value)

    def _parameter(self, name: str, value: object) -> None:
        reporter = self._open()
        if reporter is not None:
            reporter.reportParameter(name + self._suffix, parameter_value(value))

    def finish(self, timeout: float | None = None, *, trained: bool = False) -> None:
        """Deliver and end the stream of this process, if it reported anything (*timeout*: see Reporter.finish).

        *trained*: a training ended without an error, also when it stopped early: ``training_progress``
        is 1.0 first.
        """
        if trained and self._reporter is not None and not self._reporter.finished:
            self.metric(names.TRAINING_PROGRESS, 1.0)
        reporter, self._reporter = self._reporter, None
        if reporter is not None:
            self.guard(lambda: _finish(reporter, timeout), "finish")


def _finish(reporter: Reporter, timeout: float | None) -> None:
    reporter.finish(timeout)  # its verdict is logged by finish() itself when False


# A float dtype's name -> its binary format: (significant bits, frexp exponent of the least normal
# number, frexp exponent of 2 ** emax, past which it overflows). bfloat16 has float32's exponent range and 8 bits.
_FLOAT_FORMATS = {"float32": (24, -125, 128), "float16": (11, -13, 16), "bfloat16": (8, -125, 128)}


def _narrow(x: float, bits: int, min_exp: int, max_exp: int) -> float:
    """*x* rounded to the nearest (ties to even) number of that binary format, as a cast to it does."""
    if x == 0 or not math.isfinite(x):
        return x
    quantum = math.ldexp(1.0, max(math.frexp(x)[1], min_exp) - bits)  # one unit in the last place (subnormals too)
    rounded = round(x / quantum) * quantum  # x / quantum is exact: a power of two
    return rounded if abs(rounded) < math.ldexp(1.0, max_exp) else math.copysign(math.inf, x)


def parameter_value(value: object) -> str | int | float:
    """*value* as a parameter: a str, int or float as it is; a scalar tensor or numpy number as the number it
    holds (a float32 ``0.01`` as ``"0.01"``, not ``0.009999999776482582`` nor ``tensor(0.0100)``); else its str().

    A float32, float16 or bfloat16 is the shortest decimal that reads back as the same number of its own dtype
    (a bfloat16 0.1 is ``"0.1"``, not half precision's ``"0.1001"``)."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return value
    number = None if isinstance(value, bool) else to_number(value)
    if number is None:
        return str(value)
    dtype = str(getattr(value, "dtype", ""))
    form = _FLOAT_FORMATS.get(dtype.rsplit(".", 1)[-1])  # "torch.bfloat16", numpy's "float32"
    if form is None:
        return int(number) if number.is_integer() and "int" in dtype else number
    if number != number:  # NaN equals no text read back: the search below would never end
        return "nan"
    narrow = _narrow(number, *form)
    return next(
        text for text in (f"{number:.{digits}g}" for digits in range(1, 18)) if _narrow(float(text), *form) == narrow
    )


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
