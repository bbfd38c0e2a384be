"""PyTorch Lightning integration: ``Trainer(logger=RunaiLogger())``.

A Lightning ``Logger`` of the ``lightning`` package (``lightning.pytorch``)
where it is installed, else of the older ``pytorch_lightning`` package. The
only module of the package that imports Lightning; what it reports is listed
in ``docs/integrations.md``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # typed against lightning; pytorch_lightning's Logger has the same interface
    from lightning.pytorch.callbacks import Callback as _Callback
    from lightning.pytorch.loggers import Logger as _Logger
    from lightning.pytorch.utilities import rank_zero_only as _rank_zero_only
else:
    try:  # lightning (which also installs pytorch_lightning) first, as the issue asks
        from lightning.pytorch.callbacks import Callback as _Callback
        from lightning.pytorch.loggers import Logger as _Logger
        from lightning.pytorch.utilities import rank_zero_only as _rank_zero_only
    except ModuleNotFoundError as _exc:
        if not (_exc.name or "").startswith("lightning"):
            raise  # Lightning is there, something it needs is not: its own message says what
        try:
            from pytorch_lightning.callbacks import Callback as _Callback
            from pytorch_lightning.loggers import Logger as _Logger
            from pytorch_lightning.utilities import rank_zero_only as _rank_zero_only
        except ModuleNotFoundError as _old:
            if not (_old.name or "").startswith("pytorch_lightning"):
                raise
            raise ModuleNotFoundError(
                "runai.reporter.lightning needs PyTorch Lightning: pip install 'runai[lightning]'", name="lightning"
            ) from _old

from . import _names as names
from ._integration import SHORT_FINISH_S, IntegrationReporter, count_leaf_modules, optimizer_name

__all__ = ["RunaiLogger"]

logger = logging.getLogger(__name__)

_STEP_EVERY_S = 0.5  # step and global_step between epoch ends: at most this often, a clock read per batch


class RunaiLogger(_Logger):
    """A Lightning logger that reports to Run:AI: ``Trainer(logger=RunaiLogger())``.

    Args:
        all_ranks: by default only the global rank zero reports; True makes every
            rank report, rank N > 0 under names ending in ``_rankN``.
        version: the logger's ``version``, which names the checkpoint directory
            (``<default_root_dir>/runai/<version>/checkpoints``); the same for
            every run by default, so that a rescheduled pod (a new podUUID)
            finds ``ckpt_path="last"``.
        **settings: ``Reporter(...)`` keywords (``pod_uuid=``, ``gateway_url=``, ...).
    """

    def __init__(self, *, all_ranks: bool = False, version: str = "0", **settings: Any) -> None:
        super().__init__()
        self._out = IntegrationReporter(logger, "RunaiLogger()", all_ranks, settings)
        self._version = version
        self._trainer: Any = None
        self._batch_size_sent = False
        self._next_step = 0.0  # time.monotonic() after which a batch's end reports the step
        self._total_steps: float | None = None  # the fit's optimizer steps, read at its first epoch's start

    @property
    def name(self) -> str:
        return "runai"

    @property
    def version(self) -> str:
        return self._version

    def _reporting(self) -> bool:
        trainer = self._trainer
        rank = trainer.global_rank if trainer is not None else getattr(_rank_zero_only, "rank", 0)
        return self._out.reports(int(rank))

    def _fitting(self) -> bool:
        trainer = self._trainer
        return trainer is None or trainer.state.fn == "fit"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        # Lightning calls this at the start of every stage: after a fit, validate()
        # or test() does not report them again.
        if self._fitting() and self._reporting():
            self._out.guard(lambda: self._hyperparams(params), "log_hyperparams")

    def _hyperparams(self, params: Any) -> None:
        mapping = vars(params) if not isinstance(params, Mapping) and hasattr(params, "__dict__") else params
        self._out.parameters(mapping or {})

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning calls this at the start of each stage, with the module: the
        # one place a logger is handed the trainer.
        self._out.guard(lambda: self._start(model), "log_graph")

    def _start(self, model: Any) -> None:
        self._trainer = trainer = getattr(model, "_trainer", None)
        self._out.restart()
        if not self._fitting() or not self._reporting():
            return  # validate, test, predict: only what they log
        self._batch_size_sent, self._next_step, self._total_steps = False, 0.0, None
        out = self._out
        out.metric(names.NUMBER_OF_LAYERS, count_leaf_modules(model))
        if trainer is None:
            return
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:  # -1: limited by max_steps only
            out.metric(names.OVERALL_EPOCHS, max_epochs)
        if trainer.optimizers:
            out.parameter(names.OPTIMIZER_NAME, optimizer_name(trainer.optimizers[0]))
        if not any(isinstance(c, _Hooks) and c._owner is self for c in trainer.callbacks):
            # epoch, step and the learning rate come from the loop's own hooks: log_metrics
            # runs only when the module logs, and after an epoch-level scheduler stepped.
            trainer.callbacks.append(_Hooks(self))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if not self._reporting():
            return
        if names.EPOCH in metrics and not self._fitting():
            # Lightning adds its current_epoch, one past the last after a fit: the bar would overrun.
            metrics = {key: value for key, value in metrics.items() if key != names.EPOCH}
        elif self._trainer is not None and self._fitting():
            # The step beside the metrics, so that history's step axis places each at its own step (the batch
            # hook reports it only every _STEP_EVERY_S).
            self._out.guard(lambda: self._steps(self._trainer), "log_metrics")
        self._out.metrics(metrics)

    # -- from _Hooks, on the reporting rank -----------------------------------

    def _epoch_start(self, trainer: Any) -> None:
        out = self._out
        out.metric(names.EPOCH, trainer.current_epoch)  # 0-based, as 0.4.1's Keras autolog
        if self._total_steps is None:
            # Once per fit, with the data loaded: max_steps, or the epochs' batches over the accumulation
            # (inf for data without a length and no max_steps).
            self._total_steps = float(trainer.estimated_stepping_batches)
        self._progress(trainer)
        if not self._batch_size_sent:
            self._batch_size_sent = True
            size = getattr(trainer.train_dataloader, "batch_size", None)
            if isinstance(size, int) and not isinstance(size, bool):
                out.metric(names.BATCH_SIZE, size)
        # Read here: after a checkpoint's restore, before this epoch's scheduler step.
        groups = getattr(trainer.optimizers[0], "param_groups", None) if trainer.optimizers else None
        if groups:
            rate = groups[0].get("lr")
            out.parameter(names.LEARNING_RATE, rate)  # 0.4.1's name and kind
            out.metric(names.LEARNING_RATE, rate)  # and one a graph can plot

    def _steps(self, trainer: Any) -> None:
        step = trainer.global_step  # the optimizer's steps, the framework's global step
        self._out.metric(names.STEP, step)
        self._out.metric(names.GLOBAL_STEP, step)
        self._progress(trainer)

    def _progress(self, trainer: Any) -> None:
        # Steps done of the fit's steps: right for max_epochs and max_steps alike, and after a resume (the
        # restored global step counts); epochs started where the count of steps is unknown.
        total, epochs = self._total_steps, trainer.max_epochs
        if total and math.isfinite(total):
            self._out.metric(names.TRAINING_PROGRESS, min(1.0, trainer.global_step / total))
        elif epochs is not None and epochs > 0:
            self._out.metric(names.TRAINING_PROGRESS, min(1.0, trainer.current_epoch / epochs))

    def finalize(self, status: str) -> None:
        # Also on "failed": what was reported is delivered. Only the end of a fit waits the
        # full reporterFinishTimeout; a failure, validate, test and predict wait briefly.
        if self._reporting():
            trained = status == "success" and self._fitting()  # also stopped early (EarlyStopping, max_time)
            self._out.finish(None if trained else SHORT_FINISH_S, trained=trained)


class _Hooks(_Callback):
    """The loop's hooks for a RunaiLogger, added to the trainer's callbacks by the logger itself."""

    def __init__(self, owner: RunaiLogger) -> None:
        self._owner = owner

    def _call(self, trainer: Any, hook: Callable[[Any], None], where: str) -> None:
        owner = self._owner
        if owner._trainer is trainer and owner._reporting():
            owner._out.guard(lambda: hook(trainer), where)

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._call(trainer, self._owner._epoch_start, "on_train_epoch_start")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Every batch: a clock read, and the step at most every _STEP_EVERY_S.
        owner, now = self._owner, time.monotonic()
        if now >= owner._next_step:
            owner._next_step = now + _STEP_EVERY_S
            self._call(trainer, owner._steps, "on_train_batch_end")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._call(trainer, self._owner._steps, "on_train_epoch_end")  # the exact step at each epoch's end

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._call(trainer, self._owner._steps, "on_exception")  # before finalize("failed")
