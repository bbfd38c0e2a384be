"""The sample Grafana dashboard (docs/grafana/): the JSON is its generator's output, and, end to end, every
panel's query (its variables substituted with what Prometheus lists for them) answers right after real
Keras, Lightning and Transformers runs, each run twice: once through a Pushgateway that Prometheus scrapes
(honor_labels), once remote-written into the same Prometheus, which loads deploy/prometheus/rules.yml."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest

from harness import REPO, Prometheus, Pushgateway, job_env, wait_for

DASHBOARD = os.path.join(REPO, "docs", "grafana", "runai-reporter-dashboard.json")
GENERATOR = os.path.join(REPO, "docs", "grafana", "dashboard.py")
QUERIES_DOC = os.path.join(REPO, "docs", "dashboards.md")
RULES = os.path.join(REPO, "deploy", "prometheus", "rules.yml")
FRAMEWORKS = ("keras", "lightning", "hf")
PODS = [f"{framework}-{sink}" for framework in FRAMEWORKS for sink in ("gw", "rw")]
RANGE = "1h"  # what Grafana puts for $__range

# Each job trains twice, a pod per sink: argv = gateway address, remote-write URL, a scratch directory.
SINKS = """
import sys
SINKS = (("-gw", {"gateway_url": sys.argv[1]}), ("-rw", {"remote_write_url": sys.argv[2]}))
"""
JOBS = {
    "keras": SINKS
    + """
import numpy as np, keras
import runai.reporter.keras as rk
x = np.random.default_rng(0).random((64, 4), dtype=np.float32)
y = (x.sum(axis=1) > 2).astype("float32")
for suffix, sink in SINKS:
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    with rk.Reporter(autolog=True, pod_uuid="keras" + suffix, **sink) as reporter:
        m.fit(x, y, batch_size=16, epochs=3, validation_split=0.25, verbose=0)
    assert reporter.finish()
""",
    "lightning": SINKS
    + """
import torch, lightning.pytorch as pl
from torch import nn
from runai.reporter.lightning import RunaiLogger

class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        out = self.net(x).squeeze(-1)
        loss = nn.functional.mse_loss(out, y)
        self.log("train/loss", loss)
        self.log("train/acc", ((out - y).abs() < 0.5).float().mean())
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

x = torch.rand(64, 4, generator=torch.Generator().manual_seed(0))
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=16)
for suffix, sink in SINKS:
    pl.Trainer(max_epochs=2, logger=RunaiLogger(pod_uuid="lightning" + suffix, **sink), accelerator="cpu",
               log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=sys.argv[3]).fit(Tiny(), data)
""",
    "hf": SINKS
    + """
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
from runai.reporter.transformers import RunaiCallback

class Data(torch.utils.data.Dataset):
    x = torch.randint(0, 32, (32, 8), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return 32

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i].sum() % 2}

config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=16, num_labels=2)
for suffix, sink in SINKS:
    args = TrainingArguments(output_dir=sys.argv[3] + "/hf" + suffix, num_train_epochs=2,
                             per_device_train_batch_size=8, logging_steps=1, report_to="none", save_strategy="no",
                             use_cpu=True, disable_tqdm=True)
    Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=Data(),
            callbacks=[RunaiCallback(pod_uuid="hf" + suffix, **sink)]).train()
""",
}


def dashboard() -> dict[str, Any]:
    with open(DASHBOARD) as f:
        return json.load(f)  # type: ignore[no-any-return]


def panels() -> list[dict[str, Any]]:
    """Every panel that queries, those inside collapsed rows included."""
    found = []
    for panel in dashboard()["panels"]:
        found += [panel] if panel["type"] != "row" else panel.get("panels", [])
    return found


def variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard()["templating"]["list"]}


@pytest.mark.e2e
def test_the_json_is_the_generators_output() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("grafana-foundation-sdk needs Python 3.11 or newer")
    done = subprocess.run([sys.executable, GENERATOR, "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_dashboard_is_well_formed_grafana_json() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in board["panels"]] + [p["id"] for row in board["panels"] for p in row.get("panels", [])]
    assert len(ids) == len(set(ids))
    assert variables()["datasource"]["query"] == "prometheus"
    for panel in panels():
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]
        for target in panel["targets"]:
            assert '$pod"' in target["expr"], f"{panel['title']}: every query follows the pod picker"
        if "repeat" in panel:  # one panel per name, on its own axis
            assert f'metric_name=~"${panel["repeat"]}"' in panel["targets"][0]["expr"]


def test_every_query_is_in_the_docs() -> None:
    with open(QUERIES_DOC) as f:
        doc = f.read()
    exprs = [t["expr"] for p in panels() for t in p["targets"]]
    for expr in [*exprs, *(v["query"] for v in variables().values() if v["type"] == "query")]:
        assert expr in doc, f"docs/dashboards.md lacks {expr}"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """A Prometheus with the rules, after the three frameworks' runs reached it by both receivers."""
    work = str(tmp_path_factory.mktemp("dashboard"))
    with Pushgateway(work) as gateway, Prometheus(work, gateway, remote_write=True, rule_files=[RULES]) as server:
        env = job_env(reporterSpoolDir=os.path.join(work, "spool"), KERAS_BACKEND="torch")
        for name in ("podUUID", "reporterGatewayURL", "reporterRemoteWriteURL"):
            env.pop(name, None)
        jobs = {
            framework: subprocess.Popen(
                [sys.executable, "-c", code, gateway.address, server.write_url, work],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
            )
            for framework, code in JOBS.items()
        }
        for framework, job in jobs.items():
            _, err = job.communicate(timeout=240)
            assert job.returncode == 0, f"{framework}: {err[-3000:]}"
        wait_for(
            lambda: progress(server) == {pod: 1.0 for pod in PODS},
            30,
            "every pod's runai:training_progress:ratio to be 1 (a scrape and a rule evaluation)",
        )
        yield server


def progress(prometheus: Prometheus) -> dict[str, float]:
    return {r["metric"]["podUUID"]: float(r["value"][1]) for r in prometheus.query("runai:training_progress:ratio")}


def substitute(expr: str, **values: str) -> str:
    """*expr* as Grafana sends it: every pod picked (a regex), $__range, and the repeat variable's value."""
    expr = expr.replace("$pod", "(" + "|".join(PODS) + ")").replace("$__range", RANGE)
    for name, value in values.items():
        expr = expr.replace(f"${name}", value)
    assert "$" not in expr, expr
    return expr


def values_of(prometheus: Prometheus, variable: str) -> list[str]:
    """What Grafana lists for a ``label_values(selector, label)`` variable."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", variables()[variable]["query"])
    assert match, variables()[variable]["query"]
    return sorted(prometheus.label_values(match.group(2), substitute(match.group(1))))


def answer(prometheus: Prometheus, target: dict[str, Any], expr: str) -> dict[str, float]:
    """{series' labels as text: its last value} of a panel's target, queried as Grafana would."""
    if target["instant"]:
        result = [(r["metric"], r["value"][1]) for r in prometheus.query(expr)]
    else:
        result = [(r["metric"], r["values"][-1][1]) for r in prometheus.query_range(expr, 600)]
    labels = ("podUUID", "metric_name", "param_name", "param_value")
    return {" ".join(m[k] for k in labels if k in m): float(v) for m, v in result}


@pytest.mark.e2e
def test_every_panel_answers_right_after_keras_lightning_and_hf_runs(prometheus: Prometheus) -> None:
    started = time.monotonic()
    answers: dict[str, dict[str, float]] = {}
    for panel in panels():
        (target,) = panel["targets"]
        repeat = panel.get("repeat")
        for value in values_of(prometheus, repeat) if repeat else [""]:
            title = panel["title"].replace(f"${repeat}", value) if repeat else panel["title"]
            got = answer(prometheus, target, substitute(target["expr"], **({repeat: value} if repeat else {})))
            assert got, f"the panel {title!r} is empty"
            answers[title] = got
    for title, got in answers.items():  # the record, with pytest -s
        print(f"{title}: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(got.items())))
    assert answers["Training progress"] == {pod: 1.0 for pod in PODS}
    assert set(answers["Since the last report"]) == set(PODS)
    assert all(0 <= s < 300 for s in answers["Since the last report"].values())
    losses = values_of(prometheus, "loss")
    assert {"loss", "val_loss", "train_loss"} <= set(losses)
    for pod in PODS:  # every run's loss is on a loss panel
        assert [name for name in losses if any(k.startswith(f"{pod} ") for k in answers[name])], pod
    assert {"accuracy", "val_accuracy", "train_acc"} <= set(values_of(prometheus, "accuracy"))
    assert {f"{pod} number_of_layers" for pod in PODS} <= set(answers["Batch size and layers"])
    assert {pod for key in answers["Parameters"] for pod in PODS if key.startswith(f"{pod} optimizer_name ")} == set(
        PODS
    )
    # Each name on its own panel: total_flos (about 1e3 here, 1e9 for real models) is not beside a loss.
    assert "total_flos" in values_of(prometheus, "metric") and "total_flos" not in losses
    print(f"{len(answers)} panels answered in {time.monotonic() - started:.3f} s")
