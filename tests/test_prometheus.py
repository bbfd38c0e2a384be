"""End to end: a job reports, the uploader pushes to a real Pushgateway, a real
Prometheus scrapes it (``honor_labels: true``), and PromQL sees what a
dashboard will see. The sample Grafana dashboard's queries are run here too.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any, Iterator

import pytest

from harness import REPO, Prometheus, Pushgateway, job_env, wait_for

DASHBOARD = os.path.join(REPO, "docs", "grafana", "runai-reporter-dashboard.json")
QUERIES_DOC = os.path.join(REPO, "docs", "dashboards.md")
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
        env = job_env(podUUID=POD, reporterGatewayURL=gateway.address, reporterSpoolDir=os.path.join(work, "spool"),
                      KERAS_BACKEND="torch")
        done = subprocess.run([sys.executable, "-c", JOB], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        # The job's last report is on the gateway (finish() returned True); wait until a scrape has it.
        wait_for(lambda: prometheus.query(f'reporter_push_gateway_metric_final_marker{{podUUID="{POD}"}}'), 30,
                 "Prometheus to scrape the job's last report")
        yield gateway, prometheus


def only(result: list[dict[str, Any]]) -> tuple[dict[str, str], float]:
    assert len(result) == 1, result
    return result[0]["metric"], float(result[0]["value"][1])


@pytest.mark.e2e
def test_promql_returns_the_metric_with_its_pod(stack: tuple[Pushgateway, Prometheus]) -> None:
    gateway, prometheus = stack
    labels, value = only(prometheus.query(f'reporter_push_gateway_metric_loss{{podUUID="{POD}"}}'))
    # honor_labels keeps the pushed job and podUUID, and adds no instance or exported_ labels.
    assert labels == {"__name__": "reporter_push_gateway_metric_loss", "job": "reporter_pod_info", "podUUID": POD,
                      "metric_name": "loss", "push_gateway_type": "metric"}
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


def dashboard() -> dict[str, Any]:
    with open(DASHBOARD) as f:
        return json.load(f)  # type: ignore[no-any-return]


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_the_dashboard_is_valid_grafana_json() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]
        for target in panel["targets"]:
            assert "$pod" in target["expr"], f"{panel['title']}: every query follows the pod picker"


def test_every_dashboard_query_is_in_the_docs() -> None:
    with open(QUERIES_DOC) as f:
        doc = f.read()
    for expr in [*dashboard_queries(), dashboard()["templating"]["list"][1]["definition"]]:
        assert expr in doc, f"docs/dashboards.md lacks {expr}"


@pytest.mark.e2e
@pytest.mark.parametrize("expr", dashboard_queries(),
                         ids=[f"{p['title']} {t['refId']}" for p in dashboard()["panels"] for t in p["targets"]])
def test_every_dashboard_query_answers_for_the_pod(stack: tuple[Pushgateway, Prometheus], expr: str) -> None:
    _, prometheus = stack
    # Grafana puts a multi-value variable into a regex matcher as (a|b); one pod is picked here.
    result = prometheus.query(expr.replace("$pod", f"({POD}|another-pod)"))
    assert result, f"{expr} returned nothing"
    assert {r["metric"].get("podUUID") for r in result} == {POD}
    assert not [r for r in result if r["metric"].get("podUUID") is None]


@pytest.mark.e2e
def test_dashboard_values_are_what_the_job_reported(stack: tuple[Pushgateway, Prometheus]) -> None:
    gateway, prometheus = stack
    queries = {q.split("{")[0].split("(")[-1]: q.replace("$pod", POD) for q in dashboard_queries()}
    (progress,) = [q for q in dashboard_queries() if "overall_epochs" in q]
    assert only(prometheus.query(progress.replace("$pod", POD)))[1] == 1.0  # every epoch started
    _, layers = only(prometheus.query(queries["reporter_push_gateway_metric_number_of_layers"]))
    assert layers == 2
    _, accuracy = only(prometheus.query(queries["reporter_push_gateway_metric_accuracy"]))
    assert accuracy == gateway.value(POD, "reporter_push_gateway_metric_accuracy")
    (params,) = [q for q in dashboard_queries() if 'push_gateway_type="parameter"' in q]
    table = {r["metric"]["param_name"]: r["metric"]["param_value"]
             for r in prometheus.query(params.replace("$pod", POD))}
    assert table["optimizer_name"] == "Adam" and table["dataset"] == 'synthetic "v2"\\sum'
    (since,) = [q for q in dashboard_queries() if "push_time_seconds" in q]
    assert 0 <= only(prometheus.query(since.replace("$pod", POD)))[1] < 300


@pytest.mark.e2e
def test_the_pod_picker_lists_the_pod(stack: tuple[Pushgateway, Prometheus]) -> None:
    _, prometheus = stack
    definition = dashboard()["templating"]["list"][1]["definition"]
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", definition)
    assert match, definition
    assert POD in prometheus.label_values(match.group(2), match.group(1))
