"""RunaiLogger's hyperparameters, learning rates and epochs, a gateway that is down, and a rescheduled pod."""

from __future__ import annotations

import logging
import os
from typing import Any, Iterator, Mapping

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from harness import Pushgateway, metric_name, parameter_name  # noqa: E402
from runai.reporter.lightning import RunaiLogger  # noqa: E402
from tests._lightning import BATCH, QUIET, STEPS, Tiny, loader, records  # noqa: E402

pytestmark = pytest.mark.e2e


class _Scheduled(Tiny):
    """Logs nothing itself; its learning rate drops tenfold after each epoch."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)}


def test_epoch_step_and_learning_rate_without_self_log(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    """A module that never calls self.log still reports epoch and step; each epoch's rate is the one it trains with."""
    trainer = pl.Trainer(max_epochs=3, logger=RunaiLogger(), **QUIET)
    trainer.fit(_Scheduled(), loader())
    assert gateway.value(pod, metric_name("epoch")) == 2
    assert gateway.value(pod, metric_name("step")) == gateway.value(pod, metric_name("global_step")) == 3 * STEPS
    assert gateway.value(pod, metric_name("batch_size")) == BATCH
    pod_dir = os.path.join(env["reporterSpoolDir"], pod)
    assert records(pod_dir, "epoch") == [0, 1, 2]  # at each epoch's start
    assert records(pod_dir, "learning_rate") == pytest.approx([0.1, 0.01, 0.001])  # before the scheduler steps


def test_resumed_fit_reports_the_restored_learning_rate(
    env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path: Any
) -> None:
    first = pl.Trainer(
        max_epochs=2, logger=False, default_root_dir=str(tmp_path), **{**QUIET, "enable_checkpointing": True}
    )
    first.fit(_Scheduled(), loader())
    resumed = pl.Trainer(max_epochs=3, logger=RunaiLogger(), default_root_dir=str(tmp_path), **QUIET)
    resumed.fit(_Scheduled(), loader(), ckpt_path=first.checkpoint_callback.best_model_path)
    pod_dir = os.path.join(env["reporterSpoolDir"], pod)
    assert records(pod_dir, "learning_rate") == pytest.approx([0.001])  # the checkpoint's, not the module's 0.1
    assert records(pod_dir, "epoch") == [2]


def test_a_tensor_learning_rate_is_reported_as_its_number(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    class TensorRate(Tiny):
        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=torch.tensor(0.01))

    pl.Trainer(max_epochs=1, logger=RunaiLogger(), **QUIET).fit(TensorRate(), loader())
    assert gateway.series(pod)[parameter_name("learning_rate")][0]["param_value"] == "0.01"


def test_odd_hyperparameters_never_break_training(
    env: dict[str, str], gateway: Pushgateway, pod: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Unresolvable(Mapping[str, Any]):  # as an OmegaConf DictConfig with an interpolation that fails
        def __getitem__(self, key: str) -> Any:
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            return iter(["data_dir"])

        def __len__(self) -> int:
            return 1

        def items(self) -> Any:
            raise RuntimeError("interpolation ${oc.env:DATA} cannot be resolved")

    caplog.set_level(logging.WARNING, logger="runai")
    module, trainer = Tiny(), pl.Trainer(max_epochs=1, logger=RunaiLogger(), **QUIET)
    module.save_hyperparameters({"cfg": Unresolvable(), "lr": 0.05})
    trainer.fit(module, loader())
    assert trainer.global_step == STEPS
    warnings = [r.getMessage() for r in caplog.records if r.name == "runai.reporter.lightning"]
    assert len(warnings) == 1 and "cannot be resolved" in warnings[0]
    assert gateway.value(pod, metric_name("epoch")) == 0


def test_a_rescheduled_pod_resumes_from_last(
    env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path: Any
) -> None:
    """The checkpoint directory does not depend on the podUUID: a new pod of the job finds ckpt_path="last"."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(epochs: int, pod_uuid: str, **kwargs: Any) -> Any:
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=RunaiLogger(pod_uuid=pod_uuid),
            default_root_dir=str(tmp_path),
            callbacks=[ModelCheckpoint(save_last=True)],
            **{**QUIET, "enable_checkpointing": True},
        )
        trainer.fit(Tiny(), loader(), **kwargs)
        return trainer

    fit(1, pod)
    rescheduled = fit(2, pod + "-rescheduled", ckpt_path="last")
    assert rescheduled.ckpt_path is not None and rescheduled.ckpt_path.endswith("last.ckpt")
    assert set(records(os.path.join(env["reporterSpoolDir"], pod + "-rescheduled"), "epoch")) == {1}
