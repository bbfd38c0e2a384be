"""PyTorch Lightning integration: ``Trainer(logger=RunaiLogger())``.

A Lightning ``Logger`` of the ``lightning`` package (``lightning.pytorch``)
where it is installed, else of the older ``pytorch_lightning`` package. The
only module of the package that imports Lightning; what it reports is listed
in ``docs/integrations.md``.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:  # typed against lightning; pytorch_lightning's Logger has the same interface
    from lightning.pytorch.loggers import Logger as _Logger
    from lightning.pytorch.utilities import rank_zero_only as _rank_zero_only
else:
    try:  # lightning (which also installs pytorch_lightning) first, as the issue asks
        from lightning.pytorch.loggers import Logger as _Logger
        from lightning.pytorch.utilities import rank_zero_only as _rank_zero_only
    except ModuleNotFoundError as _exc:
        if not (_exc.name or "").startswith("lightning"):
            raise  # Lightning is there, something it needs is not: its own message says what
        try:
            from pytorch_lightning.loggers import Logger as _Logger
            from pytorch_lightning.utilities import rank_zero_only as _rank_zero_only
        except ModuleNotFoundError as _old:
            if not (_old.name or "").startswith("pytorch_lightning"):
                raise
            raise ModuleNotFoundError(
                "runai.reporter.lightning needs PyTorch Lightning: pip install 'runai[lightning]'",
                name="lightning") from _old

from . import _names as names
from ._integration import IntegrationReporter, count_leaf_modules, flatten_params, optimizer_name

__all__ = ["RunaiLogger"]

logger = logging.getLogger(__name__)


class RunaiLogger(_Logger):
    """A Lightning logger that reports to Run:AI: ``Trainer(logger=RunaiLogger())``.

    Args:
        all_ranks: by default only the global rank zero reports; True makes every
            rank report, rank N > 0 under names ending in ``_rankN``.
        **settings: ``Reporter(...)`` keywords (``pod_uuid=``, ``gateway_url=``, ...).
    """

    def __init__(self, *, all_ranks: bool = False, **settings: Any) -> None:
        super().__init__()
        self._out = IntegrationReporter(logger, "RunaiLogger()", all_ranks, settings)
        self._trainer: Any = None
        self._epoch: object = None  # the epoch whose learning rate was last reported
        self._batch_size_sent = False

    @property
    def name(self) -> str:
        return "runai"

    @property
    def version(self) -> str:
        return self._out.settings.pod_uuid

    def _reporting(self) -> bool:
        trainer = self._trainer
        rank = trainer.global_rank if trainer is not None else getattr(_rank_zero_only, "rank", 0)
        return self._out.reports(int(rank))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if not self._reporting():
            return
        mapping = vars(params) if not isinstance(params, Mapping) and hasattr(params, "__dict__") else params
        for name, value in flatten_params(mapping or {}):
            self._out.parameter(name, value)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning calls this once at the start of fit, with the module: the
        # one place a logger is handed the trainer.
        self._out.guard(lambda: self._start(model), "log_graph")

    def _start(self, model: Any) -> None:
        self._trainer = trainer = getattr(model, "_trainer", None)
        self._epoch, self._batch_size_sent = None, False
        if not self._reporting():
            return
        out = self._out
        out.metric(names.NUMBER_OF_LAYERS, count_leaf_modules(model))
        if trainer is None:
            return
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0:  # -1: limited by max_steps only
            out.metric(names.OVERALL_EPOCHS, max_epochs)
        if trainer.optimizers:
            out.parameter(names.OPTIMIZER_NAME, optimizer_name(trainer.optimizers[0]))
        self._learning_rate(trainer.current_epoch)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if not self._reporting():
            return
        out, trainer = self._out, self._trainer
        if trainer is not None:
            if not self._batch_size_sent:
                self._batch_size_sent = True
                out.guard(lambda: self._batch_size(trainer), "batch_size")
            # Lightning adds "epoch" to what it logs; a new one gets its learning rate.
            self._learning_rate(metrics.get(names.EPOCH, trainer.current_epoch))
            step = trainer.global_step  # the optimizer's steps, the framework's global step
        out.metrics(metrics)
        if step is not None:
            out.metric(names.STEP, step)
            out.metric(names.GLOBAL_STEP, step)

    def _learning_rate(self, epoch: object) -> None:
        if epoch == self._epoch or not self._trainer.optimizers:
            return
        self._epoch = epoch
        groups = getattr(self._trainer.optimizers[0], "param_groups", None)
        if groups:
            rate = groups[0].get("lr")
            self._out.parameter(names.LEARNING_RATE, rate)  # 0.4.1's name and kind
            self._out.metric(names.LEARNING_RATE, rate)  # and one a graph can plot

    def _batch_size(self, trainer: Any) -> None:
        size = getattr(trainer.train_dataloader, "batch_size", None)
        if isinstance(size, int) and not isinstance(size, bool):
            self._out.metric(names.BATCH_SIZE, size)

    def finalize(self, status: str) -> None:
        # Also on "failed": what was reported is delivered.
        if self._reporting():
            self._out.finish()
