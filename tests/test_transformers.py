"""Hugging Face Transformers: a tiny BERT built from a config (nothing downloaded), trained on CPU with
RunaiCallback against a real Pushgateway."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
)

from harness import Pushgateway, job_env, metric_name, parameter_name  # noqa: E402
from runai.reporter.transformers import RunaiCallback  # noqa: E402
from tests._helpers import spool_records  # noqa: E402

pytestmark = pytest.mark.e2e

SAMPLES, BATCH, EPOCHS = 32, 8, 2
STEPS = SAMPLES // BATCH


class _Synthetic(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x = torch.randint(0, 32, (SAMPLES, 8), generator=torch.Generator().manual_seed(0))
        self.y = self.x.sum(1) % 2

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def _model() -> Any:
    config = BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def _trainer(output_dir: str, callbacks: list[Any], data: Any = None, **arguments: Any) -> Any:
    args = TrainingArguments(
        **{"num_train_epochs": EPOCHS, **arguments},
        output_dir=output_dir,
        per_device_train_batch_size=BATCH,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    return Trainer(
        model=_model(),
        args=args,
        train_dataset=_Synthetic() if data is None else data,
        eval_dataset=_Synthetic(),
        callbacks=callbacks,
    )


def test_two_epochs_report_the_ui_names(env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path: Any) -> None:
    trainer = _trainer(str(tmp_path / "out"), [RunaiCallback()])
    trainer.train()
    # on_train_end finished the reporter: everything is on the gateway when train() returns.
    series = gateway.series(pod)
    value = {name: v for name, (_, v) in series.items()}
    label = {name: labels.get("param_value") for name, (labels, _) in series.items()}
    assert value[metric_name("overall_epochs")] == EPOCHS
    assert value[metric_name("epoch")] / value[metric_name("overall_epochs")] == 1.0  # the UI's bar, full
    assert value[metric_name("step")] == value[metric_name("global_step")] == EPOCHS * STEPS
    assert trainer.state.global_step == EPOCHS * STEPS
    assert value[metric_name("batch_size")] == BATCH
    leaves = sum(1 for m in trainer.model.modules() if not list(m.children()))
    assert value[metric_name("number_of_layers")] == leaves > 10
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(history) == EPOCHS * STEPS  # logging_steps=1
    assert value[metric_name("loss")] == pytest.approx(history[-1]["loss"])
    assert value[metric_name("learning_rate")] == pytest.approx(history[-1]["learning_rate"])
    assert metric_name("grad_norm") in value and metric_name("train_runtime") in value
    assert label[parameter_name("optimizer_name")] == "AdamW"  # inside accelerate's wrapper
    assert float(label[parameter_name("learning_rate")]) == pytest.approx(trainer.args.learning_rate)
    epochs = [r.value for r in spool_records(os.path.join(env["reporterSpoolDir"], pod)) if r.name == "epoch"]
    assert epochs[:STEPS] == pytest.approx([(i + 1) / STEPS for i in range(STEPS)])  # fractional, as the Trainer counts
    # Where epoch / overall_epochs needs the convention, training_progress is the fraction done itself.
    progress = [
        r.value for r in spool_records(os.path.join(env["reporterSpoolDir"], pod)) if r.name == "training_progress"
    ]
    assert progress[: EPOCHS * STEPS] == pytest.approx([(i + 1) / (EPOCHS * STEPS) for i in range(EPOCHS * STEPS)])
    assert value[metric_name("training_progress")] == 1.0


def test_training_arguments_are_reported_as_parameters_once(
    env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path: Any
) -> None:
    trainer = _trainer(str(tmp_path / "out"), [RunaiCallback()], hub_token="hf_sekrit", seed=7)
    trainer.train()
    reported = [r for r in spool_records(os.path.join(env["reporterSpoolDir"], pod)) if r.kind == "parameter"]
    values = {r.name: r.value for r in reported}
    # Under their own names, as W&B and MLflow log them: numbers, strings, booleans (str() of each on the wire).
    assert values["per_device_train_batch_size"] == str(BATCH) and float(values["num_train_epochs"]) == EPOCHS
    assert values["seed"] == "7" and values["use_cpu"] == "True" and values["output_dir"] == str(tmp_path / "out")
    assert values["lr_scheduler_type"] == "linear"  # an enum, as its value
    args = trainer.args.to_dict()
    scalars = {k for k, v in args.items() if isinstance(v, (str, int, float, bool)) and not k.endswith("_token")}
    assert scalars <= set(values)
    assert not {k for k, v in args.items() if v is None} & set(values)  # None skipped
    assert not {"hub_token", "report_to", "accelerator_config"} & set(values)  # a secret; a list; a dict
    assert all(r.value != "hf_sekrit" for r in reported)
    # Once, at train begin (learning_rate too: the callback's own, not again from the arguments).
    assert len(reported) == len(values)
    labels, _ = gateway.series(pod)[parameter_name("gradient_accumulation_steps")]
    assert labels["param_value"] == "1"


class _BadKey(TrainerCallback):
    """Adds a key too long for a report name to what the Trainer logs, before RunaiCallback sees it."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs is not None:
            logs["x" * 300] = 1.0


def test_a_failure_inside_the_callback_is_logged_once(
    env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    trainer = _trainer(str(tmp_path / "out"), [_BadKey(), RunaiCallback()])
    trainer.train()
    assert trainer.state.global_step == EPOCHS * STEPS  # training went on
    warnings = [r.getMessage() for r in caplog.records if r.name == "runai.reporter.transformers"]
    assert len(warnings) == 1 and "training continues" in warnings[0]
    assert gateway.value(pod, metric_name("epoch")) == EPOCHS  # and the rest still arrived


def _state(world_zero: bool) -> Any:
    state = TrainerState(is_world_process_zero=world_zero, is_local_process_zero=world_zero)
    state.global_step, state.num_train_epochs = 3, 2
    return state


def test_only_world_process_zero_reports(env: dict[str, str], tmp_path: Any) -> None:
    """The hooks as the Trainer calls them on process 1 of 2: no report, no spool file; all_ranks=True: _rank1."""
    args = SimpleNamespace(
        process_index=1,
        num_train_epochs=2,
        max_steps=-1,
        per_device_train_batch_size=4,
        learning_rate=0.1,
        optim="adamw_torch",
    )
    pod_dir = os.path.join(env["reporterSpoolDir"], env["podUUID"])
    quiet = RunaiCallback()
    for hook in (quiet.on_train_begin, quiet.on_log, quiet.on_train_end):
        hook(args, _state(False), None, logs={"loss": 1.0, "epoch": 0.5}, model=_model())
    assert not os.path.exists(pod_dir) or not [n for n in os.listdir(pod_dir) if n.endswith(".jsonl")]
    every = RunaiCallback(all_ranks=True)
    every.on_train_begin(args, _state(False), None, model=_model())
    every.on_log(args, _state(False), None, logs={"loss": 1.0, "epoch": 0.5})
    every.on_train_end(args, _state(False), None)
    reported = {r.name: r.value for r in spool_records(pod_dir) if r.kind in ("metric", "parameter")}
    assert reported["loss_rank1"] == 1.0 and reported["epoch_rank1"] == 0.5 and reported["step_rank1"] == 3.0
    assert reported["overall_epochs_rank1"] == 2.0 and reported["optimizer_name_rank1"] == "adamw_torch"
    assert not {"loss", "epoch", "step"} & set(reported)


class _Stream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]  # torch's class is generic
    """Data without a length: the Trainer's own count of epochs is sys.maxsize."""

    def __iter__(self) -> Iterator[dict[str, Any]]:
        data = _Synthetic()
        return iter(data[i] for i in range(SAMPLES))


@pytest.mark.parametrize(
    "bound",
    [{"max_steps": 6}, {"num_train_epochs": 1.5}, {"max_steps": 6, "data": "stream"}],
    ids=["max_steps", "fractional_epochs", "max_steps_without_length"],
)
def test_the_progress_bar_ends_at_one(
    env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path: Any, bound: dict[str, Any]
) -> None:
    data = _Stream() if bound.pop("data", None) else None
    trainer = _trainer(str(tmp_path / "out"), [RunaiCallback()], data, **bound)
    trainer.train()
    epoch, overall = gateway.value(pod, metric_name("epoch")), gateway.value(pod, metric_name("overall_epochs"))
    assert trainer.state.global_step == 6 and overall is not None and overall < 10
    assert epoch / overall == 1.0
    # Known from the first step on, not only at the end: 1.5 epochs of 4 steps, or 6 steps of data without a length.
    first = [r.value for r in spool_records(os.path.join(env["reporterSpoolDir"], pod)) if r.name == "overall_epochs"]
    assert first[0] == (1.0 if data is not None else 1.5)


def test_evaluate_after_train_ends_its_stream(
    env: dict[str, str], gateway: Pushgateway, pod: str, tmp_path: Any
) -> None:
    trainer = _trainer(str(tmp_path / "out"), [RunaiCallback()], eval_strategy="epoch")
    trainer.train()
    metrics = trainer.evaluate()
    reported = spool_records(os.path.join(env["reporterSpoolDir"], pod))
    assert [r.kind for r in reported].count("end") == 2 and reported[-1].kind == "end"  # train's, evaluate's
    assert gateway.value(pod, metric_name("eval_loss")) == pytest.approx(metrics["eval_loss"])
    assert gateway.value(pod, metric_name("epoch")) == EPOCHS


def test_importing_without_transformers_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'transformers':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _Block())\n"
        "import runai.reporter.transformers\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=job_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        "ModuleNotFoundError: runai.reporter.transformers needs Hugging Face Transformers: "
        "pip install 'runai[transformers]'"
    )
