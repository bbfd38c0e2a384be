"""The demo: the whole path from a training job to a PromQL query and a plot.

1. starts a Pushgateway and a Prometheus that scrapes it (``honor_labels: true``) on 127.0.0.1;
2. trains a small Keras model (torch backend) with autologging;
3. shows what arrived: the gateway's series, then PromQL queries against Prometheus;
4. writes a loss-curve PNG from the local spool with ``runai-uploader history --plot``;
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

from harness import Prometheus, Pushgateway, wait_for  # noqa: E402  (the real servers the tests use too)

POD = "demo-pod"

# A real, if small, training run: Keras 3 (torch backend) fitting a classifier
# on synthetic data, with autologging on, as a user's script would.
TRAINING = r'''
import numpy as np, keras, runai.reporter.keras

rng = np.random.default_rng(0)
x = rng.normal(size=(4096, 16)).astype("float32")
y = (x[:, :4].sum(axis=1) + 0.3 * rng.normal(size=4096) > 0).astype("float32")
model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=100, decay_rate=0.7)
model.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy", metrics=["accuracy"])

with runai.reporter.keras.Reporter(autolog=True) as reporter:
    reporter.reportParameter("dataset", "synthetic-4096")
    model.fit(x, y, batch_size=64, epochs=8, validation_split=0.2, verbose=2)
print("finish() delivered everything:", reporter.finish())
'''

DASHBOARD = os.path.join(REPO, "docs", "grafana", "runai-reporter-dashboard.json")
SHOWN = [  # what the demo asks Prometheus: (what, the sample dashboard's panel)
    ("the last loss", "Loss"),
    ("the last accuracy", "Accuracy"),
    ("the fraction of epochs started", "Training progress (epochs started / overall_epochs)"),
    ("every parameter", "Parameters"),
]


def dashboard_queries(pod: str) -> list[tuple[str, str]]:
    """The sample dashboard's queries for SHOWN, with its pod picker set to *pod*."""
    with open(DASHBOARD) as f:
        panels = {panel["title"]: panel["targets"][0]["expr"] for panel in json.load(f)["panels"]}
    return [(what, panels[title].replace('podUUID=~"$pod"', f'podUUID="{pod}"')) for what, title in SHOWN]


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", default=os.path.join(REPO, "demo-output", "loss.png"),
                        help="where to write the loss-curve PNG (default: demo-output/loss.png)")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="runai-demo-")
    spool = os.path.join(work, "spool")
    started = time.monotonic()
    try:
        with Pushgateway(work) as gateway, Prometheus(work, gateway, scrape_interval=1.0) as prometheus:
            step(f"started a Pushgateway on {gateway.address} and a Prometheus on {prometheus.address} "
                 "that scrapes it every second, with honor_labels: true")
            prometheus.wait_until_scraping()  # so that it samples the training, not only its end
            env = dict(os.environ, KERAS_BACKEND="torch", podUUID=POD, reporterGatewayURL=gateway.address,
                       reporterSpoolDir=spool, PYTHONPATH=REPO)
            step("training a small Keras model with runai.reporter.keras autologging (torch backend)")
            subprocess.run([sys.executable, "-c", TRAINING], env=env, check=True)

            step(f"what the gateway holds ({gateway.url}/metrics, the reporter's series of pod {POD}):")
            for line in gateway.exposition().splitlines():
                if line.startswith("reporter_push_gateway_") and f'podUUID="{POD}"' in line:
                    print("   ", line)

            last_loss = gateway.value(POD, "reporter_push_gateway_metric_loss")
            queries = dashboard_queries(POD)
            wait_for(lambda: [r for r in prometheus.query(queries[0][1]) if float(r["value"][1]) == last_loss],
                     30, "Prometheus to scrape the last loss")
            step(f"PromQL against Prometheus ({prometheus.url}), as a dashboard would ask (docs/dashboards.md):")
            for what, expr in queries:
                print(f"    {what}:  {expr}")
                for r in prometheus.query(expr):
                    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(r["metric"].items()) if k != "__name__")
                    print(f"        {{{labels}}}  {r['value'][1]}")
            samples = sum(len(r["values"]) for r in prometheus.query_range(queries[0][1], 600))
            history = subprocess.run([sys.executable, "-m", "uploader", "history", "--csv", "--metric", "loss"],
                                     env=env, check=True, capture_output=True, text=True).stdout
            reports = len(history.splitlines()) - 1
            print(f"\n    Prometheus holds {samples} samples of loss (one a scrape); the local spool holds all "
                  f"{reports} reports of it.")

            step("the loss curve from the local spool: runai-uploader history --plot")
            os.makedirs(os.path.dirname(os.path.abspath(args.plot)), exist_ok=True)
            subprocess.run([sys.executable, "-m", "uploader", "history", "--metric", "loss", "--metric", "accuracy",
                            "--metric", "val_loss", "--plot", args.plot], env=env, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    step(f"stopped Prometheus and the Pushgateway, removed {work}; done in {time.monotonic() - started:.0f} s. "
         f"The plot is {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
