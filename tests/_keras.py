"""What the Keras tests share: a small model, its data, the reports it left, and autologging switched off
after each test (an autouse fixture: a module imports it to use it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import runai.reporter  # noqa: E402
import runai.reporter.keras as rk  # noqa: E402
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
    m = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
    )
    m.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    return m


def records(reporter: runai.reporter.Reporter, name: str, kind: str = "metric") -> list[Any]:
    """The values reported under *name*, in order, from the local spool."""
    return [r.value for r in spool_records(reporter.settings.pod_dir) if r.name == name and r.kind == kind]
