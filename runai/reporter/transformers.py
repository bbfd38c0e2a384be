"""Hugging Face Transformers integration: ``Trainer(callbacks=[RunaiCallback()])``.

A ``TrainerCallback``; it works whatever ``report_to`` says (``"none"``
included), since the Trainer calls the callbacks it is given either way. The
only module of the package that imports Transformers; what it reports is
listed in ``docs/integrations.md``.
"""
from __future__ import annotations

import logging
from typing import Any

try:
    from transformers import TrainerCallback as _TrainerCallback
except ModuleNotFoundError as _exc:
    if _exc.name != "transformers":
        raise  # Transformers is there, something it needs is not: its own message says what
    raise ModuleNotFoundError("runai.reporter.transformers needs Hugging Face Transformers: "
                              "pip install 'runai[transformers]'", name="transformers") from _exc

from . import _names as names
from ._integration import IntegrationReporter, count_leaf_modules, optimizer_name

__all__ = ["RunaiCallback"]

logger = logging.getLogger(__name__)


class RunaiCallback(_TrainerCallback):
    """A Trainer callback that reports to Run:AI: ``Trainer(callbacks=[RunaiCallback()])``.

    Only the world process zero reports unless *all_ranks* is True (process N > 0
    then adds ``_rankN`` to its names); *settings* are ``Reporter(...)`` keywords.
    """

    def __init__(self, *, all_ranks: bool = False, **settings: Any) -> None:
        self._out = IntegrationReporter(logger, "RunaiCallback()", all_ranks, settings)

    def _reporting(self, args: Any, state: Any) -> bool:
        rank = 0 if state.is_world_process_zero else max(1, int(getattr(args, "process_index", 1)))
        return self._out.reports(rank)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._reporting(args, state):
            self._out.guard(lambda: self._start(args, state, kwargs), "on_train_begin")

    def _start(self, args: Any, state: Any, kwargs: dict[str, Any]) -> None:
        out = self._out
        # The Trainer's own count (it derives it from max_steps when that is set), else the argument.
        out.metric(names.OVERALL_EPOCHS, getattr(state, "num_train_epochs", None) or args.num_train_epochs)
        out.metric(names.BATCH_SIZE, args.per_device_train_batch_size)
        out.parameter(names.LEARNING_RATE, args.learning_rate)
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is not None:
            out.metric(names.NUMBER_OF_LAYERS, count_leaf_modules(model))
        out.parameter(names.OPTIMIZER_NAME, optimizer_name(optimizer) if optimizer is not None else args.optim)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        if not self._reporting(args, state):
            return
        out = self._out
        # loss, learning_rate, grad_norm, eval_*, the closing train_* summary, and
        # epoch: the Trainer's fractional count of epochs done.
        out.metrics(logs or {})
        out.metric(names.STEP, state.global_step)
        out.metric(names.GLOBAL_STEP, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._reporting(args, state):
            self._out.finish()
