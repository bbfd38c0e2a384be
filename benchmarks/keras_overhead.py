"""Keras autolog overhead: ``fit`` with and without autolog, in the same run.

    KERAS_BACKEND=torch python benchmarks/keras_overhead.py [--quick]

A small model whose training steps take a few milliseconds, per-batch
reporting on (every batch reports step, global_step, loss and accuracy), runs
interleaved so drift in machine load hits both alike. Prints the medians and
their ratio. Starts its own Pushgateway on 127.0.0.1.
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
from tests._helpers import Pushgateway  # noqa: E402


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
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512, activation="relu"),
                              keras.layers.Dense(512, activation="relu"), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args(argv)
    runs = 4 if args.quick else 10
    rng = np.random.default_rng(0)
    x = rng.random((8192, 64), dtype=np.float32)
    y = (x.mean(axis=1) > 0.5).astype("float32")
    fit_args = dict(batch_size=64, epochs=1, verbose=0)
    with tempfile.TemporaryDirectory(prefix="runai-keras-bench-") as work:
        gateway = Pushgateway(work).start()
        try:
            plain, logged = [], []
            model = build()
            model.fit(x, y, **fit_args)  # warm-up: first-call costs hit neither side
            with rk.Reporter(pod_uuid="keras-bench", gateway_url=gateway.address, spool_dir=work) as reporter:
                def timed(autolog: bool) -> None:
                    callbacks = [_TimedCallback(reporter, batch_size=fit_args["batch_size"])] if autolog else []
                    t0 = time.perf_counter()
                    model.fit(x, y, callbacks=callbacks, **fit_args)
                    (logged if autolog else plain).append(time.perf_counter() - t0)

                for i in range(runs):  # ABBA order: whichever runs second in a pair gets no edge
                    for autolog in ((False, True) if i % 2 == 0 else (True, False)):
                        timed(autolog)
            delivered = reporter.finish()
        finally:
            gateway.stop()
    steps = len(x) // fit_args["batch_size"]
    a, b = statistics.median(plain), statistics.median(logged)
    per_batch = _TimedCallback.cpu / max(1, _TimedCallback.batches)
    print(f"\n{'fit of ' + str(steps) + ' steps (batch 64, 2x512 Dense)':42s}  {'median':>8s}  {'min':>8s}  "
          f"{'per step':>9s}")
    for label, xs in (("without autolog", plain), ("with the runai callback (every batch)", logged)):
        med = statistics.median(xs)
        print(f"{label:42s}  {med:7.3f}s  {min(xs):7.3f}s  {med / steps * 1e3:7.2f}ms")
    print(f"\nwall-clock ratio: median {b / a:.4f}x, min {min(logged) / min(plain):.4f}x "
          f"(target <= 1.02x; {runs} runs each, ABBA order)")
    print(f"the callback's own CPU per batch: {per_batch * 1e6:.0f} us = {per_batch / (a / steps) * 100:.2f}% "
          f"of a step, on Keras' worker thread, off the training loop")
    print(f"all reports delivered: {delivered}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
