"""Local mode, the uploader's side: ``status`` shows a pod whose job named no receiver as kept locally, ``recover``
delivers it later by remote write (every report a sample, but for those of one name in the same millisecond, which
``status`` counts), and ``history`` reads it. Against a real job and a real Prometheus taking remote writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness import Prometheus, job_env
from tests._helpers import uploader_cli

pytestmark = pytest.mark.e2e

# A tight loop: most reports share their millisecond with others.
_TIGHT_LOOP = """
import runai.reporter as r
r.reportParameter("optimizer", "adam")
for i in range(2000):
    r.reportMetric("loss", 1.0 / (i + 1))
print(r.finish())
"""


def test_a_local_pod_is_kept_locally_until_recover_delivers_it_by_remote_write(
    spool_dir: str, strict_prometheus: Prometheus, tmp_path
) -> None:
    env = job_env(reporterSpoolDir=spool_dir, reporterQuiet="1")
    for name in ("podUUID", "reporterGatewayURL", "reporterRemoteWriteURL"):
        env.pop(name, None)
    job = subprocess.run([sys.executable, "-c", _TIGHT_LOOP], env=env, text=True, capture_output=True, timeout=60)
    assert job.stdout.strip() == "True", job.stderr
    (pod,) = os.listdir(spool_dir)
    base = {"reporterSpoolDir": spool_dir, "reporterGatewayURL": "", "reporterRemoteWriteURL": "", "podUUID": ""}

    status = uploader_cli(base, "status")
    assert status.returncode == 0, status.stderr
    first = status.stdout.splitlines()[0]
    assert first.startswith(f"pod {pod}: kept locally (its job named no receiver): 0 reports delivered, 2001 pending")
    assert f"to deliver it: runai-uploader recover --spool-dir={spool_dir} --pod-uuid={pod}" in status.stdout
    assert json.loads(uploader_cli(base, "status", "--json").stdout)["pods"][0]["receivers"] == []

    done = uploader_cli(base, "recover", f"--pod-uuid={pod}", f"--remote-write={strict_prometheus.write_url}")
    assert done.returncode == 0, done.stderr
    assert f"pod {pod}: delivered 2001 reports" in done.stdout

    after = json.loads(uploader_cli(base, "status", "--json").stdout)["pods"][0]
    assert (after["reports_delivered"], after["reports_pending"]) == (2001, 0)
    same_ms = after["same_ms"]
    assert 0 < same_ms < 2000  # a tight loop reports several times a millisecond
    # Prometheus holds one sample of loss per millisecond: every report but those status counts as collapsed.
    count = strict_prometheus.query(f'count_over_time(reporter_push_gateway_metric_loss{{podUUID="{pod}"}}[1h])')
    assert [float(r["value"][1]) for r in count] == [2000 - same_ms]
    text = uploader_cli(base, "status").stdout
    assert f"same millisecond: {same_ms} reports were each followed by another of their name" in text
    assert "one sample per series per millisecond" in text

    table = uploader_cli(base, "history", f"--pod-uuid={pod}", "--metric", "loss")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 1 + 2000  # a header row, then each report
    plot = tmp_path / "local.png"
    drawn = uploader_cli(base, "history", f"--pod-uuid={pod}", f"--plot={plot}")
    assert drawn.returncode == 0, drawn.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
