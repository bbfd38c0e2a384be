"""Measurements shared by more than one benchmark script."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import uuid
from typing import Callable

from harness import Pushgateway, job_env
from runai.reporter import Reporter
from runai.reporter.spool import SpoolWriter


def finish_seconds(gw: Pushgateway, spool: str, n: int) -> float:
    """Report *n* values (100 names) through a new Reporter, then time its finish()."""
    reporter = Reporter(pod_uuid=f"bench-{uuid.uuid4()}", gateway_url=gw.address, spool_dir=spool)
    for i in range(n):
        reporter.reportMetric(f"m{i % 100}", float(i))
    t0 = time.perf_counter()
    assert reporter.finish(timeout=600)
    return time.perf_counter() - t0


def recover_seconds(
    gw: Pushgateway | None, spool: str, n: int, code: str | None = None, remote_write_url: str | None = None
) -> float:
    """Write a finished spool of *n* records (100 names), then time `runai-uploader recover` on it.

    The wall-clock seconds of :func:`recover_times`.
    """
    return recover_times(gw, spool, n, code, remote_write_url)[0]


def recover_times(
    gw: Pushgateway | None, spool: str, n: int, code: str | None = None, remote_write_url: str | None = None
) -> tuple[float, float]:
    """Write a finished spool of *n* records (100 names), then time `runai-uploader recover` on it:
    (wall-clock seconds, CPU seconds of the uploader process, user and system). The CPU time is what a
    machine shared with other work disturbs least.

    *code*: a directory holding another revision's runai/ and uploader/ to recover with (the spool
    format is the same), for a baseline measured in the same run. *gw* None and *remote_write_url*: recover
    to that remote-write receiver alone.
    """
    pod = f"bench-{uuid.uuid4()}"
    writer = SpoolWriter(os.path.join(spool, pod), pod)
    for i in range(n):
        writer.write_metric(f"m{i % 100}", float(i))
    writer.close()
    env = job_env(podUUID=pod, reporterSpoolDir=spool)
    for name, url in (("reporterGatewayURL", gw.address if gw else None), ("reporterRemoteWriteURL", remote_write_url)):
        if url:
            env[name] = url
        else:  # only the sinks asked for, whatever this process's environment says
            env.pop(name, None)
    if code is not None:
        env["PYTHONPATH"] = code
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # In *code*'s directory: `python -m` puts the working directory first on sys.path, before PYTHONPATH,
    # so run from the repository it would import today's uploader whatever *code* says.
    subprocess.run(
        [sys.executable, "-m", "uploader", "recover"], env=env, check=True, capture_output=True, timeout=600, cwd=code
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the uploader, waited for by run()
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def rss_mib(pid: int) -> float:
    """A process's resident set size, in MiB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def quiet_spell_latencies(reporter: Reporter, visible: Callable[[float, float], None], samples: int) -> list[float]:
    """Seconds from a report made after a quiet spell until *visible(value, deadline)* returns, per report."""
    reporter.reportMetric("lat", -1)
    visible(-1, time.perf_counter() + 15)
    times = []
    for i in range(samples):
        time.sleep(reporter.settings.push_interval + 0.1)  # a quiet spell
        t0 = time.perf_counter()
        reporter.reportMetric("lat", i)
        visible(i, t0 + 10)
        times.append(time.perf_counter() - t0)
    return times
