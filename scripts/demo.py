"""The demo: the whole path from a training job to PromQL and a plot, with every report kept.

1. starts a Pushgateway and a Prometheus that takes remote writes on 127.0.0.1;
2. trains a small Keras model (torch backend) with autologging, reporting to both receivers;
3. shows what each kept: the gateway's last values (what runai 0.4.1 delivered), then PromQL answers from
   Prometheus, where ``count_over_time`` of the loss equals the loss reports in the local spool: every one;
4. writes a PNG of the loss and validation loss curves as Prometheus holds them, over the spool's reports;
5. stops what it started and removes its files (all but the PNG).

Run through ``scripts/demo.sh``, which installs what it needs first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness import Prometheus, Pushgateway  # noqa: E402  (the real servers the tests use too)

POD = "demo-pod"

# A real, if small, training run: Keras 3 (torch backend) fitting a classifier
# on synthetic data, with autologging on, as a user's script would.
TRAINING = r'''
import time
import numpy as np, keras, runai.reporter.keras


class StepTime(keras.callbacks.Callback):
    """A real model's step takes milliseconds; this toy one's takes microseconds. Prometheus keeps one sample
    per series per millisecond, so without this, steps sharing a millisecond would be one sample."""

    def on_train_batch_end(self, batch, logs=None):
        time.sleep(0.002)


rng = np.random.default_rng(0)
x = rng.normal(size=(4096, 16)).astype("float32")
y = (x[:, :4].sum(axis=1) + 0.3 * rng.normal(size=4096) > 0).astype("float32")
model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=100, decay_rate=0.7)
model.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy", metrics=["accuracy"])

with runai.reporter.keras.Reporter(autolog=True) as reporter:
    reporter.reportParameter("dataset", "synthetic-4096")
    model.fit(x, y, batch_size=64, epochs=8, validation_split=0.2, verbose=2, callbacks=[StepTime()])
print("finish() delivered everything:", reporter.finish())
'''

# What the demo asks Prometheus, as a dashboard would (docs/dashboards.md): (what, PromQL).
QUERIES = [
    ("the last loss", f'reporter_push_gateway_metric_loss{{podUUID="{POD}"}}'),
    ("the last accuracy", f'reporter_push_gateway_metric_accuracy{{podUUID="{POD}"}}'),
    (
        "the training progress",
        f'max by (podUUID) (last_over_time(reporter_push_gateway_metric_training_progress{{podUUID="{POD}"}}[1h]))',
    ),
    (
        "every parameter",
        f"max by (podUUID, param_name, param_value) (last_over_time("
        f'{{job="reporter_pod_info", push_gateway_type="parameter", podUUID="{POD}"}}[1h]))',
    ),
]
COUNT = f'count_over_time(reporter_push_gateway_metric_loss{{podUUID="{POD}"}}[1h])'
CURVES = ("loss", "val_loss")  # drawn from Prometheus, over the spool's reports


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def spool_reports(env: dict[str, str], name: str) -> list[dict[str, object]]:
    """Every report of *name* the local spool holds (runai-uploader history --json)."""
    done = subprocess.run(
        [sys.executable, "-m", "uploader", "history", "--json", "--metric", name],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def show_promql(prometheus: Prometheus) -> None:
    for what, expr in QUERIES:
        print(f"    {what}:  {expr}")
        for r in prometheus.query(expr):
            labels = ", ".join(f'{k}="{v}"' for k, v in sorted(r["metric"].items()) if k != "__name__")
            print(f"        {{{labels}}}  {r['value'][1]}")


def show_count(prometheus: Prometheus, env: dict[str, str]) -> None:
    """Prometheus' count of loss samples beside the spool's count of loss reports: equal, report for report."""
    samples = sum(int(float(r["value"][1])) for r in prometheus.query(COUNT))
    reports = spool_reports(env, "loss")
    print(f"\n    {COUNT} = {samples}")
    print(f"    the local spool holds {len(reports)} loss reports: ", end="")
    if samples == len(reports):
        print("Prometheus holds every one of them, each at its own time (the gateway: the last one only)")
        return
    ms = [round(float(r["ts"]) * 1e6) // 1000 for r in reports]  # type: ignore[arg-type]
    same = sum(a == b for a, b in zip(ms, ms[1:], strict=False))
    print(
        f"{same} of them shared a millisecond with the next, and Prometheus keeps one sample per series per "
        "millisecond (docs/api.md, runai-uploader status counts them)"
    )


def plot(prometheus: Prometheus, env: dict[str, str], gateway_last: float | None, path: str) -> None:
    """Each of CURVES as Prometheus holds it (a line through every sample), the spool's reports over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(CURVES), 1, figsize=(9, 6), dpi=100, sharex=True)
    start: float | None = None  # the first loss sample's time: x is seconds into the training
    try:
        for ax, name in zip(axes, CURVES, strict=True):
            found = prometheus.samples(
                f'reporter_push_gateway_metric_{name}{{podUUID="{POD}"}}[1h]', at=time.time() + 1
            )
            points = found[0][1] if found else []
            start = start if start is not None or not points else points[0][0] / 1000
            at = start or 0.0
            ax.plot(
                [ms / 1000 - at for ms, _ in points],
                [v for _, v in points],
                linewidth=1.2,
                label=f"Prometheus, by remote write: {len(points)} samples",
            )
            reports = spool_reports(env, name)
            ax.plot(
                [float(r["ts"]) - at for r in reports],  # type: ignore[arg-type]
                [float(r["value"]) for r in reports],
                ".",
                markersize=3,  # type: ignore[arg-type]
                label=f"the local spool: {len(reports)} reports",
            )
            if name == "loss" and gateway_last is not None and points:
                ax.plot(
                    [points[-1][0] / 1000 - at],
                    [gateway_last],
                    "o",
                    markersize=9,
                    fillstyle="none",
                    label="the Pushgateway: the last value only (0.4.1)",
                )
            ax.set_ylabel(name)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize="small")
        axes[0].set_title(f"pod {POD}: every report, as Prometheus holds it")
        axes[-1].set_xlabel("seconds into the training")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--plot",
        default=os.path.join(REPO, "demo-output", "loss.png"),
        help="where to write the loss-curve PNG (default: demo-output/loss.png)",
    )
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="runai-demo-")
    spool = os.path.join(work, "spool")
    started = time.monotonic()
    try:
        with Pushgateway(work) as gateway, Prometheus(work, remote_write=True) as prometheus:
            step(
                f"started a Pushgateway on {gateway.address} and a Prometheus on {prometheus.address} "
                "that takes remote writes (--web.enable-remote-write-receiver)"
            )
            env = dict(
                os.environ,
                KERAS_BACKEND="torch",
                podUUID=POD,
                reporterGatewayURL=gateway.address,
                reporterRemoteWriteURL=prometheus.write_url,
                reporterSpoolDir=spool,
                PYTHONPATH=REPO,
            )
            step(
                "training a small Keras model with runai.reporter.keras autologging (torch backend), "
                "reporting to both receivers"
            )
            subprocess.run([sys.executable, "-c", TRAINING], env=env, check=True)

            step(
                f"the gateway's last values ({gateway.url}/metrics, pod {POD}): what runai 0.4.1 delivered, "
                "one value per name"
            )
            for line in gateway.exposition().splitlines():
                if line.startswith("reporter_push_gateway_") and f'podUUID="{POD}"' in line:
                    print("   ", line)

            step(f"PromQL against Prometheus ({prometheus.url}), which got every report by remote write:")
            show_promql(prometheus)
            show_count(prometheus, env)

            step(f"the loss curves as Prometheus holds them, over the spool's reports: {args.plot}")
            os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
            plot(prometheus, env, gateway.value(POD, "reporter_push_gateway_metric_loss"), args.plot)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    step(
        f"stopped Prometheus and the Pushgateway, removed {work}; done in {time.monotonic() - started:.0f} s. "
        f"The plot is {args.plot}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
