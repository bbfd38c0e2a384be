"""deploy/prometheus/rules.yml: promtool's checks and unit tests, the PrometheusRule rendered from it, and end
to end a real job's NaN loss alerting through a real Prometheus and a real Alertmanager to a webhook."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
import yaml

from harness import REPO, Alertmanager, Prometheus, Pushgateway, Webhook, job_env, wait_for

RULES_DIR = os.path.join(REPO, "deploy", "prometheus")
RULES = os.path.join(RULES_DIR, "rules.yml")
RULES_TEST = os.path.join(RULES_DIR, "rules_test.yml")
PROMETHEUS_RULE = os.path.join(REPO, "deploy", "kubernetes", "prometheusrule.yaml")
ALERTS = ["RunaiTrainingLossNotFinite", "RunaiTrainingStalled", "RunaiReportsUndelivered", "RunaiPodsRefused"]


def promtool(*args: str, cwd: str = RULES_DIR) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, "promtool is not installed: it comes with Debian's prometheus (scripts/test.sh installs it)"
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.e2e
def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", RULES)
    assert done.returncode == 0 and "SUCCESS: 6 rules found" in done.stdout, done.stdout + done.stderr


def test_every_rule_is_there_with_no_wait_on_the_loss() -> None:
    with open(RULES) as f:
        rules = [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]
    assert [r["alert"] for r in rules if "alert" in r] == ALERTS
    assert [r["record"] for r in rules if "record" in r] == [
        "runai:training_progress:ratio",
        "runai:last_report:timestamp_seconds",
    ]
    (loss,) = [r for r in rules if r.get("alert") == "RunaiTrainingLossNotFinite"]
    assert "for" not in loss  # fires at the first evaluation that sees the value


@pytest.mark.e2e
def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", RULES_TEST)
    assert done.returncode == 0, done.stdout + done.stderr


_LOSS = '"(?i)(.*[_.-])?loss([_.-].*)?"'


@pytest.mark.parametrize(
    "change",
    [
        ("15 * 60", "25 * 60"),
        (_LOSS, '"(?i).*loss.*"'),
        (_LOSS, '"(.*[_.-])?loss([_.-].*)?"'),
        ("> -Inf < Inf", "> 0"),
        ("for: 15m", "for: 5m"),
    ],
)
@pytest.mark.e2e
def test_the_unit_tests_fail_for_a_broken_rule(tmp_path: Any, change: tuple[str, str]) -> None:
    with open(RULES) as f:
        text = f.read()
    assert change[0] in text
    (tmp_path / "rules.yml").write_text(text.replace(change[0], change[1]))
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    done = promtool("test", "rules", "rules_test.yml", cwd=str(tmp_path))
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


@pytest.mark.e2e
def test_the_prometheusrule_is_the_rendering_of_rules_yml() -> None:
    done = subprocess.run(
        [sys.executable, os.path.join(RULES_DIR, "render_rule.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with open(RULES) as f, open(PROMETHEUS_RULE) as g:
        rules, resource = yaml.safe_load(f), yaml.safe_load(g)
    assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
    assert resource["spec"] == {"groups": rules["groups"]}


@pytest.mark.e2e
def test_the_rendering_check_fails_on_a_stale_file(tmp_path: Any) -> None:
    for name in ("rules.yml", "render_rule.py"):
        shutil.copy(os.path.join(RULES_DIR, name), tmp_path / name)
    (tmp_path / "rules.yml").write_text((tmp_path / "rules.yml").read_text().replace("for: 15m", "for: 30m"))
    os.makedirs(tmp_path.parent / "kubernetes", exist_ok=True)
    shutil.copy(PROMETHEUS_RULE, tmp_path.parent / "kubernetes" / "prometheusrule.yaml")
    done = subprocess.run(
        [sys.executable, str(tmp_path / "render_rule.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1 and "is not the rendering" in done.stderr


def test_docs_agent_links_the_rules_instead_of_copying_them() -> None:
    with open(os.path.join(REPO, "docs", "agent.md")) as f:
        doc = f.read()
    assert "- alert:" not in doc and "../deploy/prometheus/rules.yml" in doc


# A job that reports a loss going NaN through whichever sink its environment names.
NAN_JOB = """
import math, sys
from runai.reporter import Reporter
r = Reporter()
for value in (0.9, 0.5, math.nan):
    r.reportMetric(sys.argv[1], value)
print(r.finish(timeout=30))
"""


def run_job(spool_dir: str, pod: str, name: str, **sink: str) -> None:
    env = job_env(podUUID=pod, reporterSpoolDir=spool_dir, **sink)
    for setting in {"reporterGatewayURL", "reporterRemoteWriteURL"} - set(sink):
        env.pop(setting, None)
    done = subprocess.run(
        [sys.executable, "-c", NAN_JOB, name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr


@pytest.mark.e2e
def test_a_nan_loss_reaches_the_webhook_as_an_alert(tmp_path: Any, spool_dir: str) -> None:
    work = str(tmp_path)
    with (
        Webhook() as webhook,
        Alertmanager(work, webhook.url) as alertmanager,
        Pushgateway(work) as gateway,
        Prometheus(
            work, gateway, remote_write=True, rule_files=[RULES], alertmanager=alertmanager.address
        ) as prometheus,
    ):
        prometheus.wait_until_scraping()
        # One pod through the gateway (scraped), one remote-written into the same Prometheus.
        run_job(spool_dir, "nan-gw", "loss", reporterGatewayURL=gateway.address)
        run_job(spool_dir, "nan-rw", "val_loss", reporterRemoteWriteURL=prometheus.write_url)

        def firing() -> dict[str, dict[str, Any]]:
            return {
                a["labels"]["podUUID"]: a
                for a in webhook.alerts()
                if a["labels"]["alertname"] == "RunaiTrainingLossNotFinite" and a["status"] == "firing"
            }

        wait_for(lambda: len(firing()) == 2, 60, "the webhook to receive both pods' RunaiTrainingLossNotFinite")
        alerts = firing()
        for pod, name in (("nan-gw", "loss"), ("nan-rw", "val_loss")):
            assert alerts[pod]["labels"] == {
                "alertname": "RunaiTrainingLossNotFinite",
                "podUUID": pod,
                "metric_name": name,
                "severity": "warning",
            }
            assert alerts[pod]["annotations"]["summary"] == f"Pod {pod} reports {name} = NaN"
        # Nothing else fired: no other pod, no other rule.
        assert {a["labels"]["alertname"] for a in webhook.alerts()} == {"RunaiTrainingLossNotFinite"}
        assert {a["labels"]["podUUID"] for a in webhook.alerts()} == {"nan-gw", "nan-rw"}
        print(json.dumps(webhook.payloads, indent=2))  # for the record (pytest -s)
