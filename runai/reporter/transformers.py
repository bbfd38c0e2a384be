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
    raise ModuleNotFoundError(
        "runai.reporter.transformers needs Hugging Face Transformers: pip install 'runai[transformers]'",
        name="transformers",
    ) from _exc

from . import _names as names
from ._integration import SHORT_FINISH_S, IntegrationReporter, count_leaf_modules, optimizer_name
from ._names import to_number

__all__ = ["RunaiCallback"]

logger = logging.getLogger(__name__)


class RunaiCallback(_TrainerCallback):
    """A Trainer callback that reports to Run:AI: ``Trainer(callbacks=[RunaiCallback()])``.

    Only the world process zero reports unless *all_ranks* is True (process N > 0
    then adds ``_rankN`` to its names); *settings* are ``Reporter(...)`` keywords.
    """

    def __init__(self, *, all_ranks: bool = False, **settings: Any) -> None:
        self._out = IntegrationReporter(logger, "RunaiCallback()", all_ranks, settings)
        self._training = False  # between on_train_begin and on_train_end
        self._overall_known = True  # False: overall_epochs is derived at the first step's end

    def _reporting(self, args: Any, state: Any) -> bool:
        rank = 0 if state.is_world_process_zero else max(1, int(getattr(args, "process_index", 1)))
        return self._out.reports(rank)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._training = True
        if self._reporting(args, state):
            self._out.guard(lambda: self._start(args, kwargs), "on_train_begin")

    def _start(self, args: Any, kwargs: dict[str, Any]) -> None:
        out = self._out
        out.restart()
        # Bounded by epochs, the argument is the count, fractional ones included (the
        # Trainer's state.num_train_epochs rounds it up). Bounded by max_steps, the
        # Trainer's count is rounded, or sys.maxsize for data without a length: it
        # is derived from the first step instead.
        self._overall_known = not (args.max_steps is not None and args.max_steps > 0)
        if self._overall_known:
            out.metric(names.OVERALL_EPOCHS, args.num_train_epochs)
        out.metric(names.BATCH_SIZE, args.per_device_train_batch_size)
        out.parameter(names.LEARNING_RATE, args.learning_rate)
        out.parameters(_scalar_arguments(args))
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is not None:
            out.metric(names.NUMBER_OF_LAYERS, count_leaf_modules(model))
        out.parameter(names.OPTIMIZER_NAME, optimizer_name(optimizer) if optimizer is not None else args.optim)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._overall_known:
            return  # every step but the first: one attribute read
        self._overall_known = True
        if self._reporting(args, state) and state.global_step > 0 and state.epoch and state.max_steps > 0:
            # state.epoch grows by the same fraction each step: at max_steps it is this.
            self._out.metric(names.OVERALL_EPOCHS, state.max_steps * state.epoch / state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not self._reporting(args, state):
            return
        out, logs = self._out, logs or {}
        # loss, learning_rate, grad_norm, eval_*, the closing train_* summary, and
        # epoch: the Trainer's fractional count of epochs done.
        out.metrics(logs)
        out.metric(names.STEP, state.global_step)
        out.metric(names.GLOBAL_STEP, state.global_step)
        if state.max_steps > 0:  # the Trainer's count of steps, whether bounded by epochs or by max_steps
            out.metric(names.TRAINING_PROGRESS, min(1.0, state.global_step / state.max_steps))
        if 0 < state.max_steps <= state.global_step:
            # Training is complete: the bar ends at exactly 1.0, whatever the rounding of the counts.
            epoch = to_number(logs.get(names.EPOCH))
            if epoch:
                out.metric(names.OVERALL_EPOCHS, epoch)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._training = False
        if self._reporting(args, state):
            self._out.finish(trained=True)  # train() returned: done, also when a callback stopped it early

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._stage_end(args, state)

    def on_predict(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        self._stage_end(args, state)

    def _stage_end(self, args: Any, state: Any) -> None:
        # evaluate() or predict() outside train(): what it logged is delivered, without
        # waiting long for a gateway that is down (the uploader keeps delivering).
        if not self._training and self._reporting(args, state):
            self._out.finish(SHORT_FINISH_S)
            self._out.restart()


def _scalar_arguments(args: Any) -> dict[str, Any]:
    """TrainingArguments' scalar fields (numbers, strings, booleans; enums as their values), as W&B and MLflow
    log them: None, lists and dicts are left out, so are secrets (``hub_token``) and what _start reports itself."""
    fields = args.to_dict() if hasattr(args, "to_dict") else dict(vars(args))
    return {
        name: value
        for name, value in fields.items()
        if isinstance(value, (str, int, float, bool)) and not name.endswith("_token") and name != names.LEARNING_RATE
    }
