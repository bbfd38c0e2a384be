"""Keras autologging: real training of a small model (Keras 3, torch backend) against a real Pushgateway."""
from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
import threading
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import runai.reporter  # noqa: E402
import runai.reporter.keras as rk  # noqa: E402
from harness import Pushgateway, job_env, metric_name, parameter_name  # noqa: E402
from tests._helpers import spool_records  # noqa: E402

SAMPLES, BATCH, EPOCHS = 64, 16, 3
STEPS = SAMPLES // BATCH


@pytest.fixture(autouse=True)
def _autolog_off() -> Any:
    original = keras.Model.__dict__.get("fit")
    yield
    rk.disableAutolog()
    assert keras.Model.__dict__.get("fit") is original


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, 4), dtype=np.float32)
    return x, (x.sum(axis=1) > 2).astype("float32")


def model(learning_rate: Any = 0.01) -> Any:
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    return m


def records(reporter: runai.reporter.Reporter, name: str, kind: str = "metric") -> list[Any]:
    """The values reported under *name*, in order, from the local spool."""
    return [r.value for r in spool_records(reporter.settings.pod_dir) if r.name == name and r.kind == kind]


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
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=8)
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


def test_disable_autolog_stops_reporting_and_restores_fit(env: dict[str, str]) -> None:
    original = keras.Model.fit
    x, y = data()
    m = model()
    with rk.Reporter() as reporter:
        reporter.autolog()
        reporter.autolog()  # twice: still one wrapper, one callback
        assert rk.autologged() and keras.Model.fit is not original
        m.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        assert records(reporter, "step") == [float(s) for s in range(STEPS)]
        rk.disableAutolog()
        assert keras.Model.fit is original and not rk.autologged()
        before = len(spool_records(reporter.settings.pod_dir))
        m.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        assert len(spool_records(reporter.settings.pod_dir)) == before
    assert rk.disableAutoLog is rk.disableAutolog  # 0.4.1's spelling


def test_leaving_the_keras_reporter_disables_autolog(env: dict[str, str]) -> None:
    original = keras.Model.fit
    with rk.Reporter(autolog=True):
        assert rk.autologged()
    assert not rk.autologged() and keras.Model.fit is original


def test_the_users_callbacks_are_left_alone(env: dict[str, str]) -> None:
    x, y = data()
    m = model()
    compiled = m.get_compile_config()
    mine: list[Any] = [keras.callbacks.History()]
    with rk.Reporter(autolog=True) as reporter:
        m.fit(x, y, batch_size=BATCH, epochs=1, callbacks=mine, verbose=0)
        assert len(mine) == 1 and isinstance(mine[0], keras.callbacks.History)
        m.fit(x, y, BATCH, 1, 0, None)  # callbacks=None, positionally
        m.fit(x, y, BATCH, 1, 0, mine)  # a list, positionally
        assert len(mine) == 1
    assert records(reporter, "step") == [float(s) for s in range(STEPS)] * 3
    assert m.get_compile_config() == compiled  # no metric added, nothing changed


def test_an_explicit_callback_is_not_logged_twice(env: dict[str, str]) -> None:
    x, y = data()
    with rk.Reporter(autolog=True) as reporter:
        model().fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                    callbacks=[rk.ReporterCallback(reporter, batch_size=BATCH)])
    assert records(reporter, "step") == [float(s) for s in range(STEPS)]
    assert records(reporter, "batch_size") == [float(BATCH)]


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
        callback = rk.ReporterCallback(reporter, batch_size=None, overall_epochs=False, number_of_layers=False,
                                       optimizer_name=False, epoch=False, learning_rate=False)
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


def test_a_broken_report_path_does_not_stop_fit(env: dict[str, str], tmp_path: Any,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    x, y = data()
    with rk.Reporter(autolog=True, spool_dir=str(blocker)) as reporter:
        history = model().fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert reporter.finish() is False
    # An exception inside the callback itself: one warning, training goes on.
    caplog.clear()
    finished = runai.reporter.Reporter()
    finished.finish()
    history = model().fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[rk.ReporterCallback(finished)])
    assert len(history.history["loss"]) == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "runai.reporter.keras"]
    assert len(warnings) == 1 and "training continues" in warnings[0]


def test_exceptions_from_fit_propagate_unchanged(env: dict[str, str]) -> None:
    bad_x = np.zeros((SAMPLES, 7), dtype="float32")  # the model takes 4 features
    with pytest.raises(Exception) as plain:
        model().fit(bad_x, data()[1], verbose=0)
    with rk.Reporter(autolog=True):
        with pytest.raises(type(plain.value)):
            model().fit(bad_x, data()[1], verbose=0)


def test_options_are_checked(env: dict[str, str]) -> None:
    with rk.Reporter() as reporter:
        with pytest.raises(TypeError, match="unknown autolog options"):
            reporter.autolog(accuracyy=False)
        with pytest.raises(ValueError, match="every_n_steps"):
            reporter.autolog(every_n_steps=0)
    assert not rk.autologged()
    assert dict(rk.AUTOLOG_DEFAULTS) == {
        "accuracy": True, "loss": True, "learning_rate": True, "epoch": True, "step": True, "batch_size": True,
        "overall_epochs": True, "optimizer_name": True, "number_of_layers": True, "loss_method": False,
        "epsilon": False,
    }


def test_switched_off_options_are_not_sent(env: dict[str, str]) -> None:
    x, y = data()
    with rk.Reporter(autolog=True, accuracy=False, step=False, optimizer_name=False) as reporter:
        model().fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    names = {r.name for r in spool_records(reporter.settings.pod_dir)}
    assert "loss" in names and not {"step", "optimizer_name"} & names
    assert records(reporter, "accuracy") == [records(reporter, "accuracy")[-1]]  # only the epoch-end log entry


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
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SEED_KERAS)], env=job_env(**env), text=True,
                          capture_output=True, timeout=180, stdin=subprocess.DEVNULL)
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


@pytest.mark.parametrize("case", ["no-keras", "no-backend"])
def test_a_missing_keras_or_backend_says_what_to_do(tmp_path: Any, case: str) -> None:
    env = job_env()
    env.pop("KERAS_BACKEND", None)  # Keras' default backend, tensorflow, is not installed here
    if case == "no-keras":
        shadow = tmp_path / "keras"  # first on the path: importing Keras fails as if it were absent
        shadow.mkdir()
        (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'keras'\", name='keras')\n")
        env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    elif importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed: Keras' default backend loads")
    done = subprocess.run([sys.executable, "-c", "import runai.reporter.keras"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    if case == "no-keras":
        assert last == "ModuleNotFoundError: runai.reporter.keras needs Keras 3: pip install 'runai[keras]'"
    else:
        assert last.startswith("ModuleNotFoundError: Keras cannot load its backend (No module named 'tensorflow')")
        assert "KERAS_BACKEND=torch" in last


class _Keras2Model:
    """fit and fit_generator with tf_keras' own signatures (tf_keras 2.21.0, tf_keras/src/engine/training.py),
    recording what they are called with; beside the real tf_keras test, which needs TensorFlow."""

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, class_weight=None, sample_weight=None,
            initial_epoch=0, steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
            validation_freq=1, max_queue_size=10, workers=1, use_multiprocessing=False):
        self.called = {"x": x, "batch_size": batch_size, "epochs": epochs, "callbacks": callbacks,
                       "validation_data": validation_data}

    def fit_generator(self, generator, steps_per_epoch=None, epochs=1, verbose=1,
                      callbacks=None, validation_data=None, validation_steps=None, validation_freq=1,
                      class_weight=None, max_queue_size=10, workers=1, use_multiprocessing=False, shuffle=True,
                      initial_epoch=0):
        self.called = {"generator": generator, "epochs": epochs, "callbacks": callbacks,
                       "validation_data": validation_data}


def test_positional_arguments_are_bound_by_each_methods_own_signature(env: dict[str, str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """tf_keras' fit_generator takes callbacks as its 5th argument, not 6th, and has no batch_size: by position,
    the callback replaced validation_data and epochs was taken for the batch size."""
    state = rk._Autolog(None, 1, {})
    for name in ("fit", "fit_generator"):
        rk._patch(state, _Keras2Model, name, rk.ReporterCallback)
    monkeypatch.setattr(rk, "_active", state)
    try:
        mine = keras.callbacks.History()
        model = _Keras2Model()
        model.fit_generator(iter([]), 10, 3, 0, [mine], "validation")
        called = model.called
        assert called["epochs"] == 3 and called["validation_data"] == "validation", called
        assert called["callbacks"][0] is mine and len(called["callbacks"]) == 2
        (ours,) = [c for c in called["callbacks"] if isinstance(c, rk.ReporterCallback)]
        assert ours.batch_size is None  # a generator's batch size is unknown, never its epochs

        model.fit(np.zeros((8, 2)), np.zeros(8), 4, 2, 0, [mine], 0.0, "validation")
        called = model.called
        assert called["batch_size"] == 4 and called["epochs"] == 2 and called["validation_data"] == "validation"
        (ours,) = [c for c in called["callbacks"] if isinstance(c, rk.ReporterCallback)]
        assert ours.batch_size == 4 and called["callbacks"][0] is mine
    finally:
        for (cls, attr), original in state.originals.items():
            setattr(cls, attr, original)
