"""Keras autologging switched on and off, its options, the user's own callbacks, and fit() failing on either side."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import runai.reporter  # noqa: E402
import runai.reporter.keras as rk  # noqa: E402
from harness import job_env  # noqa: E402
from tests._helpers import spool_records  # noqa: E402
from tests._keras import BATCH, SAMPLES, STEPS, _autolog_off, data, model, records  # noqa: E402,F401 (_autolog_off: an autouse fixture)

pytestmark = pytest.mark.e2e


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
        model().fit(
            x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[rk.ReporterCallback(reporter, batch_size=BATCH)]
        )
    assert records(reporter, "step") == [float(s) for s in range(STEPS)]
    assert records(reporter, "batch_size") == [float(BATCH)]


def test_a_broken_report_path_does_not_stop_fit(
    env: dict[str, str], tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
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


def test_switched_off_options_are_not_sent(env: dict[str, str]) -> None:
    x, y = data()
    with rk.Reporter(autolog=True, accuracy=False, step=False, optimizer_name=False) as reporter:
        model().fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    names = {r.name for r in spool_records(reporter.settings.pod_dir)}
    assert "loss" in names and not {"step", "optimizer_name"} & names
    assert records(reporter, "accuracy") == [records(reporter, "accuracy")[-1]]  # only the epoch-end log entry


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
    done = subprocess.run(
        [sys.executable, "-c", "import runai.reporter.keras"], env=env, capture_output=True, text=True, timeout=120
    )
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

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
        max_queue_size=10,
        workers=1,
        use_multiprocessing=False,
    ):
        self.called = {
            "x": x,
            "batch_size": batch_size,
            "epochs": epochs,
            "callbacks": callbacks,
            "validation_data": validation_data,
        }

    def fit_generator(
        self,
        generator,
        steps_per_epoch=None,
        epochs=1,
        verbose=1,
        callbacks=None,
        validation_data=None,
        validation_steps=None,
        validation_freq=1,
        class_weight=None,
        max_queue_size=10,
        workers=1,
        use_multiprocessing=False,
        shuffle=True,
        initial_epoch=0,
    ):
        self.called = {
            "generator": generator,
            "epochs": epochs,
            "callbacks": callbacks,
            "validation_data": validation_data,
        }


def test_positional_arguments_are_bound_by_each_methods_own_signature(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
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
