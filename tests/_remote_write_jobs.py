"""What the tests of jobs delivering through the remote-write sink share: the job, its settings, what it reported,
and what a Prometheus receiver holds of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from harness import Prometheus, job_env
from runai.reporter.spool import delivery_state, is_spool_file, open_spool
from tests._helpers import spool_records

# argv: reports, then "finish" (print finish()'s answer, waiting argv[3] s) or "kill" (SIGKILL itself,
# unfinished); argv[4], if given, the pause between reports (default 2 ms).
JOB = """
import os, signal, sys, time
from runai.reporter import Reporter
r = Reporter()
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.002
for i in range(int(sys.argv[1])):
    r.reportMetric('loss', float(i))
    if pause:
        time.sleep(pause)
if sys.argv[2] == 'kill':
    os.kill(os.getpid(), signal.SIGKILL)
print(r.finish(timeout=float(sys.argv[3])))
"""


def run_job(
    env: dict[str, str], reports: int, end: str, finish_timeout: float = 60, pause: float = 0.002
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", JOB, str(reports), end, str(finish_timeout), str(pause)],
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def job_settings(spool_dir: str, pod: str, **urls: str) -> dict[str, str]:
    """A job's environment: this pod and spool, and only the sinks in *urls* (no gateway unless given)."""
    env = job_env(podUUID=pod, reporterSpoolDir=spool_dir, **urls)
    for name in ("reporterGatewayURL", "reporterRemoteWriteURL"):
        if name not in urls:
            env.pop(name, None)
    return env


def expected(pod_dir: str) -> list[tuple[int, float]]:
    """The spool's loss reports as samples: (the report's millisecond, its value), in time order."""
    return sorted(
        (round(r.ts * 1e6) // 1000, float(r.value))
        for r in spool_records(pod_dir)
        if getattr(r, "name", None) == "loss"
    )


def covered(pod_dir: str, sink: str) -> bool:
    """Every spool file of *pod_dir* is delivered to *sink*, by its checkpoints."""
    names = [n for n in os.listdir(pod_dir) if is_spool_file(n)]
    for name in names:
        path = os.path.join(pod_dir, name)
        opened = open_spool(path, resume=False)
        assert opened is not None
        with opened.tail as tail:
            if not delivery_state(path, tail.spool_id, tail.size(), reader=tail, sinks=(sink,)).covered:
                return False
    return bool(names)


def loss(pod: str) -> str:
    return f'reporter_push_gateway_metric_loss{{podUUID="{pod}"}}[1h]'


def samples(prometheus: Prometheus, pod: str) -> list[tuple[int, float]]:
    found = prometheus.samples(loss(pod), at=time.time() + 1)
    return found[0][1] if found else []
