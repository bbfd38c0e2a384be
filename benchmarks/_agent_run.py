"""One node agent run for benchmarks/agent_scale.py: its receiver, its catch-up, its steady state, orphan delays."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from typing import Any

from harness import (
    REPO,
    Pushgateway,
    VictoriaMetrics,
    free_port,
    job_env,
    metric_name,
    process_cpu_seconds,
    wait_for,
)
from uploader.agent.config import NEW_POD_SECONDS

# A pod: it writes its last value while holding its lock, as its own uploader would, says so, and waits to die.
_POD = r"""
import sys, time
from runai.reporter.spool import PodLock, SpoolWriter
lock = PodLock(sys.argv[1])
writer = SpoolWriter(sys.argv[1], sys.argv[2])
assert lock.acquire()
writer.write_metric('last', 42.0)
print('ready', flush=True)
time.sleep(600)
"""


class Receiver:
    """A fresh Pushgateway or VictoriaMetrics (by remote write) for one run, and its process's CPU."""

    def __init__(self, root: str, kind: str) -> None:
        self.kind = kind
        unchecked = ("--push.disable-consistency-check",) if kind == "gateway-unchecked" else ()
        self.server: Any = VictoriaMetrics(root) if kind == "remote-write" else Pushgateway(root, extra_args=unchecked)

    def __enter__(self) -> Receiver:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()

    @property
    def option(self) -> str:
        if self.kind != "remote-write":
            return f"--gateway={self.server.address}"
        return f"--remote-write={self.server.write_url}"

    def cpu(self) -> float:
        return process_cpu_seconds(self.server.proc.pid)


class _DoneLines:
    """Counts the agent's ``pod ...: done`` lines on its stderr (in a thread, which also drains the pipe), and
    notes when the *target*-th came."""

    def __init__(self, proc: subprocess.Popen[str], target: int) -> None:
        self.count, self.at, self._target = 0, 0.0, target
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if ": done (status" in line:
                self.count += 1
                if self.count == self._target:
                    self.at = time.monotonic()


def _env(code: str | None) -> dict[str, str]:
    env = job_env()
    for name in ("reporterGatewayURL", "reporterRemoteWriteURL"):  # the receiver given, whatever the shell has
        env.pop(name, None)
    if code is not None:
        env["PYTHONPATH"] = code
    return env


def _proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def totals(port: int) -> dict[str, float]:
    """The agent's totals over pods, from its page restricted to them (a few lines, whatever the pods)."""
    names = ("runai_uploader_pods", "runai_uploader_idle_pods")
    query = "&".join(f"name[]={name}" for name in names)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?{query}", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))}


def run_agent(
    rx: Receiver,
    spool: str,
    pods: int,
    idle: float,
    delays: int,
    code: str | None,
    max_deliveries: int | None,
    limit: float,
) -> dict[str, Any]:
    """Start the agent (of *code*, a revision's unpacked tree, or today's) over *spool*; its figures."""
    port = free_port()
    cmd = [sys.executable, "-m", "uploader", "agent", f"--spool-dir={spool}", rx.option, f"--metrics-port={port}"]
    cmd += [f"--max-deliveries={max_deliveries}"] if max_deliveries else []
    receiver0 = rx.cpu()
    started = time.monotonic()
    # From *code*'s directory: `python -m` puts the working directory first on sys.path, before PYTHONPATH.
    agent = subprocess.Popen(
        cmd,
        env=_env(code),
        cwd=code or REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    done = _DoneLines(agent, pods)
    row: dict[str, Any] = {"catch_up": None}
    try:
        try:
            wait_for(lambda: done.count >= pods or agent.poll() is not None, limit, f"{pods} pods delivered")
        except AssertionError:
            print(f"  {pods} pods: {done.count} delivered within {limit:.0f} s", flush=True)
        if done.count >= pods:
            row["catch_up"] = done.at - started
        row.update(agent_cpu=process_cpu_seconds(agent.pid), receiver_cpu=rx.cpu() - receiver0)
        if row["catch_up"] is not None:
            row.update(_steady(agent, port, pods, started, idle, code is None))
            if delays:
                row.update(delay=_median([_orphan_delay(rx.server, spool) for _ in range(delays)]))
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
    if delays and row["catch_up"] is not None:
        row.update(recover=_median([_orphan_delay(rx.server, spool, recover=True) for _ in range(delays)]))
    return row


def _steady(
    agent: subprocess.Popen[str], port: int, pods: int, started: float, idle: float, gauges: bool
) -> dict[str, Any]:
    """RSS, threads and idle CPU once every pod is delivered (and idle, by the agent's gauge when it has one)."""
    if gauges:
        wait_for(lambda: totals(port).get("runai_uploader_idle_pods") == pods, 60, "every pod idle")
    # Steady state: past the first seconds in which a pod just found is looked at every second.
    wait_for(lambda: time.monotonic() - started > NEW_POD_SECONDS + 1, NEW_POD_SECONDS + 2, "the pods to settle")
    cpu0, t0 = process_cpu_seconds(agent.pid), time.monotonic()
    time.sleep(idle)  # the measurement window itself, not a synchronisation
    cpu = (process_cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0)
    return {
        "cpu": 100 * cpu,
        "rss": _proc_status(agent.pid, "VmRSS") / 1024,
        "threads": _proc_status(agent.pid, "Threads"),
    }


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _orphan_delay(gw: Pushgateway, spool: str, recover: bool = False, timeout: float = 60) -> float:
    """Seconds from an orphaned pod's death to its last value on the gateway (by the agent, or by recover); an
    AssertionError past *timeout*."""
    pod = f"orphan-{uuid.uuid4()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _POD, os.path.join(spool, pod), pod], env=job_env(), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    if recover:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "uploader",
                "recover",
                f"--spool-dir={spool}",
                f"--pod-uuid={pod}",
                f"--gateway={gw.address}",
            ],
            env=job_env(),
            check=True,
            capture_output=True,
            timeout=120,
        )
    wait_for(lambda: gw.value(pod, metric_name("last")) == 42.0, timeout, f"{pod}'s last value")
    return time.monotonic() - killed
