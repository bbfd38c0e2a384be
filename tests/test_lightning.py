"""PyTorch Lightning: real training of a tiny module on CPU with RunaiLogger, against a real Pushgateway."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from harness import Pushgateway, job_env, metric_name, parameter_name, wait_for  # noqa: E402
from runai.reporter.lightning import RunaiLogger  # noqa: E402
from tests._helpers import spool_records  # noqa: E402
from tests._lightning import BATCH, EPOCHS, MODULE, QUIET, STEPS, Tiny, loader, records  # noqa: E402

pytestmark = pytest.mark.e2e


def test_two_epochs_report_the_ui_names(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    module = Tiny(opt={"momentum": 0.0, "nesterov": False})
    run_logger = RunaiLogger()
    trainer = pl.Trainer(max_epochs=EPOCHS, logger=run_logger, default_root_dir=env["reporterSpoolDir"], **QUIET)
    trainer.fit(module, loader())
    # finalize() finished the reporter: everything is on the gateway when fit returns.
    series = gateway.series(pod)
    value = {name: v for name, (_, v) in series.items()}
    label = {name: labels.get("param_value") for name, (labels, _) in series.items()}
    assert value[metric_name("epoch")] == EPOCHS - 1 == trainer.current_epoch - 1  # 0-based, as Keras'
    assert value[metric_name("overall_epochs")] == EPOCHS
    assert value[metric_name("train_loss")] == pytest.approx(float(trainer.callback_metrics["train/loss"]))
    assert value[metric_name("step")] == value[metric_name("global_step")] == EPOCHS * STEPS == trainer.global_step
    assert value[metric_name("batch_size")] == BATCH
    assert value[metric_name("number_of_layers")] == 3  # Linear, ReLU, Linear
    assert value[metric_name("learning_rate")] == pytest.approx(0.05)
    assert label[parameter_name("learning_rate")] == "0.05"
    assert label[parameter_name("optimizer_name")] == "SGD"
    assert label[parameter_name("lr")] == "0.05" and label[parameter_name("hidden")] == "8"
    assert label[parameter_name("opt_momentum")] == "0.0" and label[parameter_name("opt_nesterov")] == "False"
    pod_dir = os.path.join(env["reporterSpoolDir"], pod)
    assert sorted(set(records(pod_dir, "epoch"))) == [0.0, 1.0]
    # Steps done over the fit's steps, with each step report, and 1.0 once fit ended.
    progress = records(pod_dir, "training_progress")
    assert progress[0] == 0.0 and progress == sorted(progress) and progress[-1] == 1.0
    assert STEPS / (EPOCHS * STEPS) in progress  # the first epoch's end
    assert value[metric_name("training_progress")] == 1.0
    assert records(pod_dir, "learning_rate") == [0.05, 0.05]  # once per epoch
    # A version that outlives the pod: a rescheduled pod (a new podUUID) finds the same checkpoints.
    assert run_logger.name == "runai" and run_logger.version == "0"
    # A second fit of the same trainer: the logger's loop hooks are not added twice.
    trainer.fit_loop.max_epochs = EPOCHS + 1
    trainer.fit(module, loader())
    assert [type(c).__name__ for c in trainer.callbacks].count("_Hooks") == 1
    assert gateway.value(pod, metric_name("epoch")) == EPOCHS


def test_a_failed_run_still_delivers_what_was_reported(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    trainer = pl.Trainer(max_epochs=EPOCHS, logger=RunaiLogger(), **QUIET)
    with pytest.raises(RuntimeError, match="the model broke"):
        trainer.fit(Tiny(fail_at=STEPS + 1), loader())  # fails in the second epoch
    # Lightning called finalize("failed"): the stream was ended and delivered before fit's exception reached us.
    reported = spool_records(os.path.join(env["reporterSpoolDir"], pod))
    assert reported[-1].kind == "end"
    # The step where it failed (reported on the exception), one batch into the second epoch.
    wait_for(
        lambda: gateway.value(pod, metric_name("global_step")) == trainer.global_step == STEPS + 1,
        10,
        "the failed run's last step on the gateway",
    )
    assert gateway.value(pod, metric_name("epoch")) == 1
    # A failed run is not done: its progress stays where it failed (the RunaiTrainingStalled alert's cue).
    assert gateway.value(pod, metric_name("training_progress")) == (STEPS + 1) / (EPOCHS * STEPS)
    assert gateway.value(pod, metric_name("train_loss")) == pytest.approx(
        [r.value for r in reported if r.name == "train_loss"][-1]
    )


def test_a_failure_inside_the_logger_is_logged_once(
    env: dict[str, str], gateway: Pushgateway, pod: str, caplog: pytest.LogCaptureFixture
) -> None:
    class TooLong(Tiny):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("x" * 300, 1.0)  # longer than a report name may be: the reporter refuses it
            return super().training_step(batch, batch_idx)

    caplog.set_level(logging.WARNING, logger="runai")
    trainer = pl.Trainer(max_epochs=EPOCHS, logger=RunaiLogger(), **QUIET)
    trainer.fit(TooLong(), loader())
    assert trainer.global_step == EPOCHS * STEPS  # training went on
    warnings = [r.getMessage() for r in caplog.records if r.name == "runai.reporter.lightning"]
    assert len(warnings) == 1 and "training continues" in warnings[0]
    assert gateway.value(pod, metric_name("epoch")) == EPOCHS - 1  # and the rest still arrived


DDP_SCRIPT = (
    MODULE
    + """
import json, os, sys
import lightning.pytorch as pl
from runai.reporter.lightning import RunaiLogger

if __name__ == "__main__":
    loggers = [RunaiLogger(), RunaiLogger(all_ranks=True, pod_uuid=os.environ["ALL_RANKS_POD"])]
    trainer = pl.Trainer(max_epochs=2, logger=loggers, strategy="ddp", devices=2, **QUIET)
    trainer.fit(make_module(pl.LightningModule)(), loader())
    with open(os.path.join(os.environ["MARKS"], f"rank{trainer.global_rank}.json"), "w") as f:
        json.dump({"pid": os.getpid(), "rank": trainer.global_rank, "world": trainer.world_size}, f)
"""
)


def _pod_families(gateway: Pushgateway, pod: str) -> dict[str, int]:
    """{family name: number of series} of the pod's group."""
    (group,) = [g for g in gateway.groups() if g["labels"].get("podUUID") == pod]
    return {
        name: len(f["metrics"])
        for name, f in group.items()
        if isinstance(f, dict) and "metrics" in f and name.startswith("reporter_")
    }


def test_ddp_reports_once_per_pod_from_rank_zero(
    env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path: Any
) -> None:
    script, marks = tmp_path / "train_ddp.py", tmp_path / "marks"
    script.write_text(DDP_SCRIPT)
    marks.mkdir()
    all_ranks_pod = pod + "-all"
    done = subprocess.run(
        [sys.executable, str(script)],
        env=job_env(**env, MARKS=str(marks), ALL_RANKS_POD=all_ranks_pod),
        cwd=tmp_path,
        text=True,
        capture_output=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = {json.loads(p.read_text())["rank"]: json.loads(p.read_text()) for p in marks.iterdir()}
    assert sorted(ranks) == [0, 1] and ranks[0]["world"] == 2 and ranks[0]["pid"] != ranks[1]["pid"]
    # Rank zero alone reported: one series per name, and rank 1 never opened a spool file.
    families = _pod_families(gateway, pod)
    assert families[metric_name("epoch")] == 1 and set(families.values()) == {1}
    assert not any("rank1" in name for name in families)
    assert gateway.value(pod, metric_name("epoch")) == 1
    assert gateway.value(pod, metric_name("overall_epochs")) == 2
    spool_files = [n for n in os.listdir(os.path.join(env["reporterSpoolDir"], pod)) if n.endswith(".jsonl")]
    assert spool_files and all(n.startswith(f"w{ranks[0]['pid']}-") for n in spool_files), spool_files
    # all_ranks=True: rank 1 reports too, under its own names, in the same pod's group.
    every = gateway.series(all_ranks_pod)
    assert every[metric_name("epoch")][1] == every[metric_name("epoch_rank1")][1] == 1
    assert metric_name("train_loss_rank1") in every


BLOCK = """
import sys

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, _Block())
"""


def test_pytorch_lightning_alone(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    """With only the older pytorch_lightning package, RunaiLogger is one of its loggers and reports."""
    code = (
        BLOCK
        + MODULE
        + textwrap.dedent("""
        import pytorch_lightning as old
        from runai.reporter.lightning import RunaiLogger
        assert issubclass(RunaiLogger, old.loggers.Logger), RunaiLogger.__mro__
        trainer = old.Trainer(max_epochs=1, logger=RunaiLogger(), **QUIET)
        trainer.fit(make_module(old.LightningModule)(), loader())
        assert "lightning" not in sys.modules and "lightning.pytorch" not in sys.modules
    """)
    )
    done = subprocess.run(
        [sys.executable, "-c", "BLOCKED = {'lightning'}\n" + code],
        env=job_env(**env),
        text=True,
        capture_output=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert gateway.value(pod, metric_name("epoch")) == 0
    assert gateway.value(pod, metric_name("overall_epochs")) == 1
    assert gateway.value(pod, metric_name("global_step")) == STEPS


def test_importing_without_lightning_says_what_to_install() -> None:
    code = "BLOCKED = {'lightning', 'pytorch_lightning'}\n" + BLOCK + "import runai.reporter.lightning\n"
    done = subprocess.run([sys.executable, "-c", code], env=job_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        "ModuleNotFoundError: runai.reporter.lightning needs PyTorch Lightning: pip install 'runai[lightning]'"
    )
    assert isinstance(ModuleNotFoundError(), ImportError)  # what `except ImportError` catches


class _Stages(Tiny):
    def _loss(self, batch: Any) -> Any:
        return torch.nn.functional.mse_loss(self.net(batch[0]).squeeze(-1), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test_loss", self._loss(batch))

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        return self.net(batch[0])


def test_validate_test_and_predict_after_fit(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    """They report what they log, never an epoch past the fit's last, and do not report the fit's names again."""
    module, trainer = _Stages(), pl.Trainer(max_epochs=EPOCHS, logger=RunaiLogger(), **QUIET)
    trainer.fit(module, loader(), loader())
    trainer.validate(module, loader())
    trainer.test(module, loader())
    trainer.predict(module, loader())
    assert trainer.current_epoch == EPOCHS  # Lightning's, which it adds to what validate() and test() log
    assert gateway.value(pod, metric_name("epoch")) == EPOCHS - 1
    assert gateway.value(pod, metric_name("test_loss")) is not None
    pod_dir = os.path.join(env["reporterSpoolDir"], pod)
    assert max(records(pod_dir, "epoch")) == EPOCHS - 1
    assert len(records(pod_dir, "number_of_layers")) == 1 and len(records(pod_dir, "lr", "parameter")) == 1


def test_with_the_gateway_down_only_a_finished_fit_waits(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], pod: str
) -> None:
    """A failed fit and a validate() end their stream in about 2 s, not reporterFinishTimeout; predict() at once."""
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    monkeypatch.setenv("reporterGatewayURL", f"127.0.0.1:{port}")  # nothing listens there
    monkeypatch.setenv("reporterFinishTimeout", "30")
    monkeypatch.setenv("reporterRetryTimeout", "1")
    module, trainer = _Stages(fail_at=1), pl.Trainer(max_epochs=1, logger=RunaiLogger(), **QUIET)
    seconds = {}
    for stage, call in (
        ("fit", lambda: trainer.fit(module, loader())),
        ("validate", lambda: trainer.validate(module, loader())),
        ("predict", lambda: trainer.predict(module, loader())),
    ):
        start = time.monotonic()
        with pytest.raises(RuntimeError) if stage == "fit" else contextlib.nullcontext():
            call()
        seconds[stage] = time.monotonic() - start
    assert seconds["fit"] < 10 and seconds["validate"] < 10 and seconds["predict"] < 2, seconds


def test_each_logged_metric_follows_its_own_step(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    # The batch hook reports the step at most every 0.5 s: a metric logged every step also gets it beside it, so that
    # history's step axis places each loss at its own step (tiny steps take far less than 0.5 s).
    class StepLogged(Tiny):  # type: ignore[misc, valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = super().training_step(batch, batch_idx)
            self.log("step_loss", loss, on_step=True, on_epoch=False)
            return loss

    trainer = pl.Trainer(max_epochs=EPOCHS, logger=RunaiLogger(), **QUIET)
    trainer.fit(StepLogged(), loader())
    step, at = None, []
    for record in spool_records(os.path.join(env["reporterSpoolDir"], pod)):
        if record.name == "global_step":
            step = record.value
        elif record.name == "step_loss":
            at.append(step)
    assert at == list(range(1, EPOCHS * STEPS + 1))
