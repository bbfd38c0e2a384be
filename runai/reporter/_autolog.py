"""Keras autologging without Keras: what is reported.

The reporting logic of the autolog callback (mixed into Keras' ``Callback``
class by :mod:`runai.reporter.keras`, the only module that imports Keras) and
its options. How ``fit``'s arguments get the callback is :mod:`._autolog_fit`.
"""

from __future__ import annotations

import bisect
import logging
import threading
from typing import Any, Callable, Mapping

import runai.reporter as _api

from . import _names as names
from ._names import FailureLog, report_name, to_number
from ._reporter import Reporter

__all__ = ["AUTOLOG_DEFAULTS", "AutologCallbackMixin"]

# Autologging's warnings keep the logger users know and filter on (docs/keras.md):
# the Keras module's, not this one's.
logger = logging.getLogger("runai.reporter.keras")

# runai 0.4.1's options and defaults.
AUTOLOG_DEFAULTS: Mapping[str, bool] = {
    "accuracy": True,
    "loss": True,
    "learning_rate": True,
    "epoch": True,
    "step": True,
    "batch_size": True,
    "overall_epochs": True,
    "optimizer_name": True,
    "number_of_layers": True,
    "loss_method": False,
    "epsilon": False,
}


class AutologCallbackMixin:
    """The reporting logic, independent of which Keras' ``Callback`` it is mixed into."""

    # Keras 3 runs batch-end callbacks on a thread pool, off the training
    # loop, only if every callback overriding them says it is safe. This one
    # is: reports are thread-safe, and its own state is behind a lock.
    async_safe = True

    model: Any
    params: dict[str, Any]

    def __init__(
        self,
        reporter: Reporter | None = None,
        *,
        every_n_steps: int = 1,
        batch_size: int | None = None,
        **options: bool,
    ) -> None:
        super().__init__()  # the Keras Callback this is mixed into
        unknown = set(options) - set(AUTOLOG_DEFAULTS)
        if unknown:
            raise TypeError(f"unknown autolog options {sorted(unknown)}; known: {sorted(AUTOLOG_DEFAULTS)}")
        if not isinstance(every_n_steps, int) or isinstance(every_n_steps, bool) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be a positive int, not {every_n_steps!r}")
        self.reporter = reporter
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.options = {**AUTOLOG_DEFAULTS, **options}
        self._lock = threading.Lock()
        self._epoch = 0
        self._first_epoch: int | None = None  # fit(initial_epoch=...) need not start at 0
        # Keras 3 runs batch-end callbacks on a thread pool, so they can arrive
        # out of order. Batch begins come in order, on the training thread:
        # they number the batches, and batch ends are reported in that order.
        self._begins: list[int] = []  # this epoch's batch-begin indexes, in order
        self._waiting: dict[int, tuple[int, Mapping[str, Any]]] = {}  # ordinal -> a batch end that came early
        self._next = 0  # ordinal of the next batch end to report
        self._first_iteration = 0
        self._failures = FailureLog(logger, "runai autologging")

    # -- reporting, guarded: autologging must never break training ---------

    def _metric(self, name: str, value: object) -> None:
        number = to_number(value)
        if number is not None:
            if self.reporter is None:
                _api.reportMetric(name, number)
            else:
                self.reporter.reportMetric(name, number)

    def _parameter(self, name: str, value: object) -> None:
        if self.reporter is None:
            _api.reportParameter(name, str(value))
        else:
            self.reporter.reportParameter(name, str(value))

    def _guard(self, hook: Callable[[], None], where: str) -> None:
        try:
            hook()
        except Exception as exc:  # training goes on
            self._failed(where, exc)

    def _failed(self, where: str, exc: Exception) -> None:
        # Told once per message: a name the reporter refuses is in its message, and a broken or finished
        # reporter, which fails every hook and name alike, is told once.
        self._failures.failed(where, exc, place=f"{type(exc).__name__}: {exc}")

    # -- Keras hooks ---------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._guard(self._train_begin, "on_train_begin")

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._guard(lambda: self._epoch_begin(epoch), "on_epoch_begin")

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        with self._lock:  # the training thread: no I/O here, only a note of the order
            self._begins.append(batch)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._guard(lambda: self._batch_end(batch, logs or {}), "on_train_batch_end")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Keras has waited for this epoch's batch ends by now; any still waiting (a batch that
        # never ended) go out in order before the epoch's logs.
        self._guard(self._flush_batches, "on_epoch_end")
        self._guard(lambda: self._epoch_end(epoch, logs or {}), "on_epoch_end")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # fit returned (not raised): training is done, also when a callback stopped it early.
        self._guard(lambda: self._progress(None), "on_train_end")

    # -- what is reported ------------------------------------------------------

    def _train_begin(self) -> None:
        options, model = self.options, self.model
        optimizer = getattr(model, "optimizer", None)
        if options["overall_epochs"] and self.params.get("epochs") is not None:
            self._metric(names.OVERALL_EPOCHS, self.params["epochs"])
        if options["batch_size"] and self.batch_size is not None:
            self._metric(names.BATCH_SIZE, self.batch_size)
        if options["number_of_layers"]:
            self._metric(names.NUMBER_OF_LAYERS, len(model.layers))
        if options["optimizer_name"] and optimizer is not None:
            self._parameter(names.OPTIMIZER_NAME, type(optimizer).__name__)
        if options["loss_method"] and getattr(model, "loss", None) is not None:
            loss = model.loss
            self._parameter(
                "loss_method",
                loss
                if isinstance(loss, str)
                else getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__),
            )
        epsilon = getattr(optimizer, "epsilon", None)
        if options["epsilon"] and epsilon is not None:
            self._parameter("epsilon", epsilon)
        # One read of the optimizer's step counter here, where a device sync
        # is harmless; per batch, global_step is counted from it.
        iterations = getattr(optimizer, "iterations", None)
        self._first_iteration = int(to_number(iterations) or 0) if iterations is not None else 0
        self._first_epoch = None

    def _epoch_begin(self, epoch: int) -> None:
        with self._lock:
            self._epoch = epoch
            self._begins, self._waiting, self._next = [], {}, 0
            if self._first_epoch is None:
                self._first_epoch = epoch
        if self.options["epoch"]:
            self._metric(names.EPOCH, epoch)
            self._progress(epoch)
        if self.options["learning_rate"]:
            # Evaluated every epoch, after the callbacks before this one (a
            # LearningRateScheduler, say) have set it; schedules are evaluated
            # at the current step.
            optimizer = getattr(self.model, "optimizer", None)
            rate = to_number(getattr(optimizer, "learning_rate", None))
            if rate is not None:
                self._parameter(names.LEARNING_RATE, rate)  # 0.4.1's name and kind
                self._metric(names.LEARNING_RATE, rate)  # and one a graph can plot

    def _batch_end(self, batch: int, logs: Mapping[str, Any]) -> None:
        with self._lock:  # held while reporting, so that reports keep the batches' order
            if not self._begins or batch < self._begins[0]:
                self._report_batch(batch, logs)  # no batch begin seen: nothing to order by
                return
            # With steps_per_execution, a begin and its end carry different indexes.
            self._waiting[bisect.bisect_right(self._begins, batch) - 1] = (batch, logs)
            while self._next in self._waiting:
                waiting = self._waiting.pop(self._next)
                self._next += 1  # first: a report that raises must not hold back the ones after it
                self._report_batch(*waiting)

    def _flush_batches(self) -> None:
        with self._lock:
            for ordinal in sorted(self._waiting):
                self._report_batch(*self._waiting.pop(ordinal))

    def _report_batch(self, batch: int, logs: Mapping[str, Any]) -> None:
        if (batch + 1) % self.every_n_steps:
            return
        steps = self.params.get("steps") or 0
        epochs_done = self._epoch - (self._first_epoch or 0)
        global_step = self._first_iteration + epochs_done * steps + batch + 1 if steps else None
        options = self.options
        if options["step"]:
            self._metric(names.STEP, batch)
        if global_step is not None:
            self._metric(names.GLOBAL_STEP, global_step)
        if options["loss"] and "loss" in logs:
            self._metric(names.LOSS, logs["loss"])
        if options["accuracy"]:
            accuracy = logs.get("accuracy", logs.get("acc"))
            if accuracy is not None:
                self._metric(names.ACCURACY, accuracy)

    def _epoch_end(self, epoch: int, logs: Mapping[str, Any]) -> None:
        # Every entry, validation metrics and the user's own included.
        for key, value in logs.items():
            name = report_name(str(key))
            try:  # one name the reporter refuses (too long, say) must not drop the others
                self._metric(name, value)
            except Exception as exc:
                self._failed(f"reporting {name}", exc)
        if self.options["epoch"]:
            self._progress(epoch + 1)

    def _progress(self, epochs_done: int | None) -> None:
        """training_progress: *epochs_done* of fit's epochs (0-based epochs: the count done), None: all."""
        epochs = self.params.get("epochs")
        if self.options["epoch"] and epochs:
            self._metric(names.TRAINING_PROGRESS, 1.0 if epochs_done is None else min(1.0, epochs_done / epochs))
