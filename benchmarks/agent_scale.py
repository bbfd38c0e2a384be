"""The node agent at scale: its memory and idle CPU over 10, 100 and 1,000 pod directories, how long it takes to
deliver that many dead pods, and how soon an orphaned pod's last value reaches the gateway.

    python benchmarks/agent_scale.py [--pods 10,100,1000] [--idle-seconds 10] [--delays 5] [--quick]

For each size, that many dead pods (a finished spool of 20 reports each, never delivered) are laid in a fresh
spool directory, then ``runai-uploader agent`` is started over it and a real Pushgateway:

* catch-up: the seconds until the agent has delivered every one of them;
* RSS and threads once it has, and its CPU over an idle window (every pod delivered, nothing written, and
  found more than NEW_POD_SECONDS ago: the steady state);
* orphan delay: a "pod" process writes a last value while holding the pod's lock (as its own uploader
  does), and is killed with SIGKILL; the seconds from the kill to the value on the gateway, the median of
  --delays pods. Its baseline, in the same run: ``runai-uploader recover`` of such a pod, started the moment
  it is killed, as a person who noticed at once would (the best case of the manual step the agent replaces).

The 0-pod row is the agent's fixed cost: the other rows' RSS ratio is against it.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness import Pushgateway, free_port, job_env, metric_name, process_cpu_seconds, wait_for  # noqa: E402
from runai.reporter.spool import SpoolWriter  # noqa: E402
from uploader.agent.config import NEW_POD_SECONDS  # noqa: E402

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


def _dead_pods(spool: str, count: int) -> None:
    for _ in range(count):
        pod = f"dead-{uuid.uuid4()}"
        writer = SpoolWriter(os.path.join(spool, pod), pod)
        for i in range(20):
            writer.write_metric("loss", float(i))
        writer.close()


def _scrape(port: int) -> dict[str, float]:
    """The agent's samples, summed by name (pending over every pod, say)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _orphan(spool: str) -> tuple[str, subprocess.Popen[str]]:
    pod = f"orphan-{uuid.uuid4()}"
    proc = subprocess.Popen([sys.executable, "-c", _POD, os.path.join(spool, pod), pod], env=job_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return pod, proc


def _orphan_delay(gw: Pushgateway, spool: str, recover: bool) -> float:
    """Seconds from an orphaned pod's death to its last value on the gateway (by the agent, or by recover)."""
    pod, proc = _orphan(spool)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    if recover:
        subprocess.run([sys.executable, "-m", "uploader", "recover", f"--spool-dir={spool}", f"--pod-uuid={pod}",
                        f"--gateway={gw.address}"], env=job_env(), check=True, capture_output=True, timeout=120)
    wait_for(lambda: gw.value(pod, metric_name("last")) == 42.0, 60, f"{pod}'s last value")
    return time.monotonic() - killed


def measure(gw: Pushgateway, root: str, pods: int, idle: float, delays: int) -> dict[str, float]:
    spool = os.path.join(root, f"spool-{pods}")
    os.makedirs(spool, mode=0o700)
    _dead_pods(spool, pods)
    port = free_port()
    agent = subprocess.Popen([sys.executable, "-m", "uploader", "agent", f"--spool-dir={spool}",
                              f"--gateway={gw.address}", f"--metrics-port={port}"],
                             env=job_env(), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = time.monotonic()

        def caught_up() -> bool:
            try:
                samples = _scrape(port)
            except OSError:
                return False
            return samples.get("runai_uploader_delivered_reports_total", 0) >= 20 * pods and \
                samples.get("runai_uploader_pending_reports", 0) == 0

        wait_for(caught_up, 600, f"the agent to deliver {pods} dead pods")
        catch_up = time.monotonic() - started if pods else 0.0
        wait_for(lambda: _scrape(port).get("runai_uploader_pods") == pods, 60, "every pod followed")
        # Steady state: past the first seconds in which a pod just found is looked at every second.
        wait_for(lambda: time.monotonic() - started > NEW_POD_SECONDS, NEW_POD_SECONDS + 1, "the pods to settle")
        cpu0, t0 = process_cpu_seconds(agent.pid), time.monotonic()
        time.sleep(idle)  # the measurement window itself, not a synchronisation
        cpu = (process_cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0)
        rss, threads = _status(agent.pid, "VmRSS") / 1024, _status(agent.pid, "Threads")
        agent_delays = [_orphan_delay(gw, spool, recover=False) for _ in range(delays)]
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    recover_delays = [_orphan_delay(gw, spool, recover=True) for _ in range(delays)]
    return {"pods": pods, "catch_up": catch_up, "rss": rss, "threads": threads, "cpu": 100 * cpu,
            "delay": statistics.median(agent_delays), "delay_max": max(agent_delays),
            "recover": statistics.median(recover_delays)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", default="10,100,1000", help="pod directories, comma-separated (default: %(default)s)")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="the idle CPU window (default: 10)")
    parser.add_argument("--delays", type=int, default=5, help="orphaned pods timed per size (default: 5)")
    parser.add_argument("--quick", action="store_true", help="10 and 100 pods, a 3 s window, 3 delays")
    args = parser.parse_args()
    sizes = [10, 100] if args.quick else [int(n) for n in args.pods.split(",")]
    idle, delays = (3.0, 3) if args.quick else (args.idle_seconds, args.delays)
    with tempfile.TemporaryDirectory(prefix="agent-scale-") as root:
        gw = Pushgateway(root).start()
        try:
            rows = [measure(gw, root, n, idle, delays) for n in [0, *sizes]]
        finally:
            gw.stop()
    base = rows[0]["rss"]
    print(f"node agent over N dead pod directories (idle CPU over {idle:.0f} s; orphan delay: median of {delays}; "
          f"{os.cpu_count()} CPUs)")
    print(f"{'pods':>6} {'catch-up s':>10} {'RSS MiB':>8} {'x 0 pods':>8} {'threads':>7} {'idle CPU %':>10} "
          f"{'orphan s':>9} {'max s':>6} {'recover s':>9} {'agent/recover':>13}")
    for r in rows:
        print(f"{r['pods']:>6} {r['catch_up']:>10.2f} {r['rss']:>8.1f} {r['rss'] / base:>8.2f} {r['threads']:>7} "
              f"{r['cpu']:>10.3f} {r['delay']:>9.2f} {r['delay_max']:>6.2f} {r['recover']:>9.2f} "
              f"{r['delay'] / r['recover']:>13.2f}")


if __name__ == "__main__":
    main()
