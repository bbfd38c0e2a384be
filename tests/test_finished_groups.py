"""docs/operations.md, "Finished jobs on the gateway": a finished pod's group stays on the gateway, and the page's
own DELETE command, run as written, removes that group and no other."""

from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

import runai.reporter
from harness import REPO, Pushgateway, metric_name, parameter_name, wait_for

OPERATIONS = os.path.join(REPO, "docs", "operations.md")


def _delete_command() -> str:
    with open(OPERATIONS, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## Finished jobs on the gateway") :]
    (command,) = re.findall(r"^curl .*-X DELETE .*$", section, re.M)
    return command


@pytest.mark.e2e
def test_the_documented_delete_removes_a_finished_pods_group_only(
    env: dict[str, str], gateway: Pushgateway, pod: str
) -> None:
    with runai.reporter.Reporter() as reporter:
        reporter.reportMetric("loss", 0.125)
        reporter.reportParameter("optimizer", "adam")
    expected = {metric_name("loss"): 0.125, parameter_name("optimizer"): 1.0}
    wait_for(lambda: {k: v for k, (_, v) in gateway.series(pod).items()} == expected, 30, "the job's push")
    other = f"{pod}-other"
    assert gateway.push_text(f"job/reporter_pod_info/podUUID/{other}", "other_pod_metric 1\n") < 300

    command = _delete_command().replace("GATEWAY", gateway.address).replace("POD_UUID", pod)
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr

    assert gateway.series(pod) == {}
    assert not [g for g in gateway.groups() if g["labels"].get("podUUID") == pod]
    assert [g for g in gateway.groups() if g["labels"].get("podUUID") == other]
    gateway.delete_group(other)
