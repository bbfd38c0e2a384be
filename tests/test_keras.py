"""Keras autologging: real training of a small model (Keras 3, torch backend) against a real Pushgateway."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

keras = pytest.importorskip("keras")

import runai.reporter  # noqa: E402
import runai.reporter.keras as rk  # noqa: E402
from harness import Pushgateway, job_env, metric_name, parameter_name  # noqa: E402
from tests._helpers import spool_records  # noqa: E402
from tests._keras import BATCH, EPOCHS, SAMPLES, STEPS, _autolog_off, data, model, records  # noqa: E402,F401 (_autolog_off: an autouse fixture)

pytestmark = pytest.mark.e2e


def test_every_name_arrives_with_the_right_value(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    x, y = data()
    m = model()
    with rk.Reporter(autolog=True, loss_method=True, epsilon=True) as reporter:
        history = m.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_split=0.25, verbose=0)
    assert reporter.finish() is True
    series = gateway.series(pod)
    value = {name: v for name, (_, v) in series.items()}
    label = {name: labels.get("param_value") for name, (labels, _) in series.items()}
    train_steps = (SAMPLES * 3 // 4) // BATCH
    assert value[metric_name("overall_epochs")] == EPOCHS
    assert value[metric_name("batch_size")] == BATCH
    assert value[metric_name("number_of_layers")] == len(m.layers) == 2
    assert value[metric_name("epoch")] == EPOCHS - 1
    assert value[metric_name("step")] == train_steps - 1
    assert value[metric_name("global_step")] == EPOCHS * train_steps == int(m.optimizer.iterations)
    assert value[metric_name("loss")] == pytest.approx(history.history["loss"][-1], rel=1e-5)
    assert value[metric_name("accuracy")] == pytest.approx(history.history["accuracy"][-1], rel=1e-5)
    assert value[metric_name("val_loss")] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    assert value[metric_name("val_accuracy")] == pytest.approx(history.history["val_accuracy"][-1], rel=1e-5)
    assert value[metric_name("learning_rate")] == pytest.approx(0.01)
    assert label[parameter_name("optimizer_name")] == "Adam"
    assert float(label[parameter_name("learning_rate")]) == pytest.approx(0.01)
    assert label[parameter_name("loss_method")] == "binary_crossentropy"
    assert float(label[parameter_name("epsilon")]) == pytest.approx(m.optimizer.epsilon)
    # Per batch: one step report per batch, none twice.
    assert records(reporter, "step") == [float(s) for s in range(train_steps)] * EPOCHS
    # Epochs done over fit's epochs, at each epoch's start and end, then 1.0 when fit returns.
    assert records(reporter, "training_progress") == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 1, 1])
    assert value[metric_name("training_progress")] == 1.0


def test_progress_is_1_when_fit_stops_early_and_stays_below_when_it_raises(env: dict[str, str]) -> None:
    class Stop(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.model.stop_training = True

    class Break(keras.callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if batch == 1:
                raise RuntimeError("the model broke")

    x, y = data()
    with rk.Reporter(autolog=True) as reporter:
        model().fit(x, y, batch_size=BATCH, epochs=EPOCHS, callbacks=[Stop()], verbose=0)
        # Stopped after its first epoch: done, as EarlyStopping's end is.
        assert records(reporter, "training_progress") == pytest.approx([0, 1 / 3, 1])
        with pytest.raises(RuntimeError, match="the model broke"):
            model().fit(x, y, batch_size=BATCH, epochs=EPOCHS, callbacks=[Break()], verbose=0)
        assert records(reporter, "training_progress")[3:] == [0.0]  # not done


def test_global_step_continues_across_fits(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    x, y = data()
    m = model()
    with rk.Reporter(autolog=True):
        m.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
        m.fit(x, y, batch_size=BATCH, epochs=4, initial_epoch=2, verbose=0)
    assert gateway.value(pod, metric_name("global_step")) == 4 * STEPS == int(m.optimizer.iterations)
    assert gateway.value(pod, metric_name("epoch")) == 3


def test_batch_size_defaults_to_32_on_arrays(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    x, y = data()
    with rk.Reporter(autolog=True):
        model().fit(x, y, epochs=1, verbose=0)
    assert gateway.value(pod, metric_name("batch_size")) == 32
    assert gateway.value(pod, metric_name("step")) == SAMPLES // 32 - 1


def test_batch_size_of_a_dataset_is_inferred(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    torch = pytest.importorskip("torch")
    x, y = data()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=8
    )
    with rk.Reporter(autolog=True):
        model().fit(loader, epochs=1, verbose=0, shuffle=False)  # a DataLoader shuffles itself
    assert gateway.value(pod, metric_name("batch_size")) == 8


def test_a_learning_rate_schedule_is_reported_every_epoch(env: dict[str, str]) -> None:
    x, y = data()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=STEPS, decay_rate=0.5, staircase=True)
    with rk.Reporter(autolog=True) as reporter:
        model(schedule).fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0)
    assert records(reporter, "learning_rate") == pytest.approx([0.1, 0.05, 0.025])
    params = records(reporter, "learning_rate", kind="parameter")
    assert [float(p) for p in params] == pytest.approx([0.1, 0.05, 0.025])


def test_a_rate_changed_by_a_callback_is_seen(env: dict[str, str]) -> None:
    x, y = data()
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.5 / (epoch + 1))
    with rk.Reporter(autolog=True) as reporter:
        model().fit(x, y, batch_size=BATCH, epochs=EPOCHS, callbacks=[scheduler], verbose=0)
    # Reported at each epoch's start, and again from the scheduler's epoch-end log entry.
    assert records(reporter, "learning_rate") == pytest.approx([0.5, 0.5, 0.25, 0.25, 0.5 / 3, 0.5 / 3])


def test_every_n_steps(env: dict[str, str]) -> None:
    x, y = data()
    with rk.Reporter(autolog=True, every_n_steps=2) as reporter:
        model().fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert records(reporter, "step") == [1.0, 3.0]


def test_batch_callbacks_stay_asynchronous(env: dict[str, str]) -> None:
    threads: list[int] = []

    class Recording(rk.ReporterCallback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            threads.append(threading.get_ident())
            super().on_train_batch_end(batch, logs)

    x, y = data()
    with runai.reporter.Reporter() as reporter:
        callback = Recording(reporter)
        callback_list = keras.callbacks.CallbackList([callback], model=model())
        assert callback_list._async_train  # Keras' own verdict: dispatch on its thread pool
        model().fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[callback])
    assert len(threads) == STEPS
    assert threading.get_ident() not in threads  # never on the training thread


def test_batch_ends_out_of_order_are_reported_in_order_and_none_is_lost(env: dict[str, str]) -> None:
    """Keras 3's thread pool may finish batch 2's callback before batch 1's: both are reported, in order."""
    with runai.reporter.Reporter() as reporter:
        callback = rk.ReporterCallback(
            reporter,
            batch_size=None,
            overall_epochs=False,
            number_of_layers=False,
            optimizer_name=False,
            epoch=False,
            learning_rate=False,
        )
        callback.set_params({"epochs": 2, "steps": 6})
        for epoch, arrival in ((0, [2, 0, 1, 5, 3, 4]), (1, [0, 1, 2, 3, 4, 5])):
            callback.on_epoch_begin(epoch)
            for batch in range(6):  # begins: on the training thread, in order
                callback.on_train_batch_begin(batch)
            for batch in arrival:  # ends: as the pool finishes them
                callback.on_train_batch_end(batch, {"loss": float(10 * epoch + batch)})
            callback.on_epoch_end(epoch, {})
        # steps_per_execution=3: begins at 0 and 3, ends at 2 and 5; the end of 5 comes first.
        callback.set_params({"epochs": 1, "steps": 6})
        callback.on_epoch_begin(2)
        callback.on_train_batch_begin(0)
        callback.on_train_batch_begin(3)
        callback.on_train_batch_end(5, {"loss": 25.0})
        callback.on_train_batch_end(2, {"loss": 22.0})
        callback.on_epoch_end(2, {})
    assert records(reporter, "loss") == [float(b) for b in range(6)] + [10.0 + b for b in range(6)] + [22.0, 25.0]
    assert records(reporter, "global_step") == [float(s) for s in range(1, 13)] + [15.0, 18.0]


SEED_KERAS = """
import numpy as np, keras
import runai.reporter
import runai.reporter.keras

def fit(epochs):
    x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
    m.fit(x, (x.sum(1) > 2).astype("float32"), epochs=epochs, verbose=0)

with runai.reporter.keras.Reporter(autolog=True) as reporter:
    fit(1)

with runai.reporter.keras.Reporter() as reporter:
    reporter.autolog()
    fit(2)

runai.reporter.keras.autolog()
fit(3)
runai.reporter.keras.disableAutolog()
fit(9)  # not reported
runai.reporter.finish()
"""


def test_the_seed_keras_examples_run_verbatim(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SEED_KERAS)],
        env=job_env(**env),
        text=True,
        capture_output=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    series = gateway.series(pod)
    assert series[metric_name("overall_epochs")][1] == 3  # the last reported fit, not the unlogged one
    assert series[metric_name("epoch")][1] == 2
    assert series[parameter_name("optimizer_name")][0]["param_value"] == "SGD"
    for name in ("batch_size", "number_of_layers", "step", "loss", "accuracy", "learning_rate", "global_step"):
        assert metric_name(name) in series, name
    reported = sorted(spool_records(os.path.join(env["reporterSpoolDir"], pod)), key=lambda r: r.ts)
    assert [r.value for r in reported if r.name == "overall_epochs"] == [1.0, 2.0, 3.0]


def test_tf_keras_fit_and_fit_generator_are_wrapped_and_restored(env: dict[str, str]) -> None:
    tf_keras = pytest.importorskip("tf_keras", reason="tf_keras (Keras 2 on TensorFlow) is not installed")
    originals = {name: tf_keras.Model.__dict__.get(name) for name in ("fit", "fit_generator")}
    with rk.Reporter(autolog=True) as reporter:
        assert getattr(tf_keras.Model.fit, "__runai_autolog__", False)
        m = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(4,))])
        m.compile(optimizer="sgd", loss="mse")
        x, y = data()
        m.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert records(reporter, "step") == [float(s) for s in range(STEPS)]
    assert {name: tf_keras.Model.__dict__.get(name) for name in originals} == originals
