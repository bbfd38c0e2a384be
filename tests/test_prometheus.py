"""End to end: a job reports, the uploader pushes to a real Pushgateway, a real
Prometheus scrapes it (``honor_labels: true``), and PromQL sees what a
dashboard will see. The sample Grafana dashboard's queries: tests/test_dashboard.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Iterator

import pytest

from harness import Prometheus, Pushgateway, job_env, wait_for

POD = "e2e-pod-1"
EPOCHS = 3

# A real Keras 3 (torch backend) training run with autologging, and a
# parameter whose value needs escaping in the exposition format.
JOB = f"""
import numpy as np, keras, runai.reporter, runai.reporter.keras

rng = np.random.default_rng(0)
x = rng.normal(size=(512, 8)).astype("float32")
y = (x.sum(axis=1) > 0).astype("float32")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
with runai.reporter.keras.Reporter(autolog=True) as reporter:
    reporter.reportParameter("dataset", 'synthetic "v2"\\\\sum')
    model.fit(x, y, batch_size=64, epochs={EPOCHS}, verbose=0)
    reporter.reportMetric("final_marker", 42)
assert reporter.finish()
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pushgateway, Prometheus]]:
    """A Pushgateway and a Prometheus scraping it every second, after a Keras job reported to them."""
    work = str(tmp_path_factory.mktemp("e2e"))
    with Pushgateway(work) as gateway, Prometheus(work, gateway, scrape_interval=1.0) as prometheus:
        env = job_env(
            podUUID=POD,
            reporterGatewayURL=gateway.address,
            reporterSpoolDir=os.path.join(work, "spool"),
            KERAS_BACKEND="torch",
        )
        done = subprocess.run([sys.executable, "-c", JOB], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        # The job's last report is on the gateway (finish() returned True); wait until a scrape has it.
        wait_for(
            lambda: prometheus.query(f'reporter_push_gateway_metric_final_marker{{podUUID="{POD}"}}'),
            30,
            "Prometheus to scrape the job's last report",
        )
        yield gateway, prometheus


def only(result: list[dict[str, Any]]) -> tuple[dict[str, str], float]:
    assert len(result) == 1, result
    return result[0]["metric"], float(result[0]["value"][1])


@pytest.mark.e2e
def test_promql_returns_the_metric_with_its_pod(stack: tuple[Pushgateway, Prometheus]) -> None:
    gateway, prometheus = stack
    labels, value = only(prometheus.query(f'reporter_push_gateway_metric_loss{{podUUID="{POD}"}}'))
    # honor_labels keeps the pushed job and podUUID, and adds no instance or exported_ labels.
    assert labels == {
        "__name__": "reporter_push_gateway_metric_loss",
        "job": "reporter_pod_info",
        "podUUID": POD,
        "metric_name": "loss",
        "push_gateway_type": "metric",
    }
    assert value == gateway.value(POD, "reporter_push_gateway_metric_loss") and 0 < value < 2
    _, epochs = only(prometheus.query(f'reporter_push_gateway_metric_overall_epochs{{podUUID="{POD}"}}'))
    assert epochs == EPOCHS


@pytest.mark.e2e
def test_promql_returns_the_parameter_value_label(stack: tuple[Pushgateway, Prometheus]) -> None:
    _, prometheus = stack
    labels, value = only(prometheus.query(f'reporter_push_gateway_parameter_dataset{{podUUID="{POD}"}}'))
    assert labels["param_value"] == 'synthetic "v2"\\sum' and labels["param_name"] == "dataset"
    assert labels["push_gateway_type"] == "parameter" and labels["podUUID"] == POD and value == 1
    labels, _ = only(prometheus.query(f'reporter_push_gateway_parameter_optimizer_name{{podUUID="{POD}"}}'))
    assert labels["param_value"] == "Adam"
