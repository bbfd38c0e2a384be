"""The README's first command: the demo runs the whole path, shows that Prometheus holds every report, and stops
what it started.

``scripts/demo.sh`` is ``scripts/_setup.sh`` (which the test command runs too)
and then this script.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

from harness import REPO, job_env

pytestmark = pytest.mark.e2e


def test_the_demo_shows_full_fidelity_and_writes_a_plot(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "loss.png"
    done = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "demo.py"), "--plot", str(plot)],
        env=job_env(TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "finish() delivered everything: True" in out
    # The gateway's last values: the 0.4.1 view.
    assert re.search(r'reporter_push_gateway_metric_loss\{.*podUUID="demo-pod".*\} [0-9.e-]+', out)
    # PromQL answers from Prometheus, which took every report by remote write.
    assert re.search(
        r'\{job="reporter_pod_info", metric_name="loss", podUUID="demo-pod", '
        r'push_gateway_type="metric"\}  0\.\d+',
        out,
    )
    assert '{param_name="optimizer_name", param_value="Adam", podUUID="demo-pod"}  1' in out
    assert re.search(r'\{podUUID="demo-pod"\}  1\n', out)  # the training progress, at its end
    # Full fidelity: count_over_time of the loss is the number of loss reports in the spool.
    count = re.search(
        r"count_over_time\(reporter_push_gateway_metric_loss\{podUUID=\"demo-pod\"\}\[1h\]\) = (\d+)\n"
        r"    the local spool holds (\d+) loss reports: Prometheus holds every one of them",
        out,
    )
    assert count and count.group(1) == count.group(2) and int(count.group(1)) > 400, out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # It stopped both servers and removed its files.
    addresses = re.search(r"started a Pushgateway on (\S+) and a Prometheus on (\S+) ", out)
    assert addresses
    for address in addresses.groups():
        host, port = address.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), timeout=2):
            pass
    assert not [p for p in os.listdir(tmp_path) if p.startswith("runai-demo-")]
