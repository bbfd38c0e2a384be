"""Keras autolog overhead: ``fit`` with and without autolog, in the same run.

    KERAS_BACKEND=torch python benchmarks/keras_overhead.py [--quick]

A small model whose training steps take a few milliseconds, per-batch
reporting on (every batch reports step, global_step, loss and accuracy), and
a third row with a no-op batch callback: what Keras' own asynchronous dispatch
costs. Runs alternate so drift in machine load hits every row alike. Prints
medians, minimums and their ratios, and the callback's own CPU per batch.
Starts its own Pushgateway on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import runai.reporter.keras as rk  # noqa: E402
from harness import Pushgateway  # noqa: E402


class _TimedCallback(rk.ReporterCallback):
    """The runai callback, counting the CPU time its batch hook takes on Keras' worker thread."""

    cpu = 0.0
    batches = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        t0 = time.thread_time()
        super().on_train_batch_end(batch, logs)
        type(self).cpu += time.thread_time() - t0
        type(self).batches += 1


def build() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


class _NoopAsync(keras.callbacks.Callback):
    """A batch-end callback that does nothing: Keras' own cost of dispatching to its thread pool."""

    async_safe = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args(argv)
    runs = 5 if args.quick else 15
    rng = np.random.default_rng(0)
    x = rng.random((4096, 64), dtype=np.float32)
    y = (x.mean(axis=1) > 0.5).astype("float32")
    fit_args = dict(batch_size=64, epochs=1, verbose=0)
    times: dict[str, list[float]] = {
        "without autolog": [],
        "Keras' thread-pool dispatch alone (no-op callback)": [],
        "with the runai callback, every batch": [],
    }
    with tempfile.TemporaryDirectory(prefix="runai-keras-bench-") as work:
        gateway = Pushgateway(work).start()
        try:
            model = build()
            model.fit(x, y, **fit_args)  # warm-up: first-call costs hit no row
            with rk.Reporter(pod_uuid="keras-bench", gateway_url=gateway.address, spool_dir=work) as reporter:
                makers = [
                    ("without autolog", list),
                    ("Keras' thread-pool dispatch alone (no-op callback)", lambda: [_NoopAsync()]),
                    (
                        "with the runai callback, every batch",
                        lambda: [_TimedCallback(reporter, batch_size=fit_args["batch_size"])],
                    ),
                ]
                for i in range(runs):  # the order alternates, so no row always runs first
                    for label, make in makers if i % 2 == 0 else makers[::-1]:
                        callbacks = make()
                        t0 = time.perf_counter()
                        model.fit(x, y, callbacks=callbacks, **fit_args)
                        times[label].append(time.perf_counter() - t0)
            delivered = reporter.finish()
        finally:
            gateway.stop()
    steps = len(x) // fit_args["batch_size"]
    base_median, base_min = statistics.median(times["without autolog"]), min(times["without autolog"])
    print(f"\n{'fit of ' + str(steps) + ' steps (batch 64, 2x512 Dense)':52s}  {'median':>16s}  {'min':>16s}")
    for label, xs in times.items():
        med, low = statistics.median(xs), min(xs)
        print(f"{label:52s}  {med:7.3f}s {med / base_median:6.3f}x  {low:7.3f}s {low / base_min:6.3f}x")
    per_batch = _TimedCallback.cpu / max(1, _TimedCallback.batches)
    logged = statistics.median(times["with the runai callback, every batch"])
    print(f"\noverhead of autolog (ratio of medians): {logged / base_median:.4f}x, target <= 1.02x; {runs} runs each")
    share = per_batch / (base_median / steps) * 100
    print(
        f"the callback's own CPU per batch: {per_batch * 1e6:.0f} us = {share:.2f}% "
        f"of a step, on Keras' worker thread, off the training loop"
    )
    print(f"all reports delivered: {delivered}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
