"""The rows of benchmarks/agent_scale.py for issue 22, point 3: the node agent over N EMPTY pod directories of one
non-root uid (idle RSS, idle CPU, the whole /metrics page's size), and a victim's time-to-delivery with a hostile
uid's empty directories present."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

from benchmarks._agent_run import Receiver, _env, _median, _orphan_delay, _proc_status
from harness import REPO, free_port, process_cpu_seconds, wait_for
from uploader.agent.config import NEW_POD_SECONDS

__all__ = ["empty_row", "print_empty_table"]

HOSTILE_UID = 54322  # a uid with no account (as tests/_users.py's ATTACKER): chown needs none
HOSTILE_LIVE = 256  # the hostile uid's pods with a live writer and no uploader: every slot, before issue 22
_DELIVERING = "runai_uploader_delivering_pods"
VICTIM_TIMEOUT = 30.0  # a victim not delivered by then is "never" (while the hostile writers live)

# The hostile tenant's live pods: a writer alive in each (its spool file open), no uploader, the directories its.
_LIVE = r"""
import os, sys
from runai.reporter.spool import SpoolWriter
spool, count, uid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
writers = []
for i in range(count):
    path = os.path.join(spool, f"live-{i:04d}")
    writers.append(SpoolWriter(path, f"live-{i:04d}"))
    writers[-1].write_metric("loss", 1.0)
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
print("ready", flush=True)
sys.stdin.read()
"""


def _empty_dirs(spool: str, count: int) -> None:
    """*count* empty pod directories owned by HOSTILE_UID (made as this user, then given away where root)."""
    for i in range(count):
        path = os.path.join(spool, f"empty-{i:06d}")
        os.mkdir(path, 0o700)
        if os.geteuid() == 0:
            os.chown(path, HOSTILE_UID, HOSTILE_UID)


def _totals(port: int) -> dict[str, float]:
    names = ("runai_uploader_pods", "runai_uploader_idle_pods", "runai_uploader_untracked_pods", _DELIVERING)
    query = "&".join(f"name[]={name}" for name in names)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?{query}", timeout=30) as r:
        lines = r.read().decode().splitlines()
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))}


def _settled(port: int, count: int) -> bool:
    """Every directory either followed and idle, or untracked (a base without the gauge: all followed)."""
    t = _totals(port)
    pods, idle = t.get("runai_uploader_pods", -1), t.get("runai_uploader_idle_pods", -2)
    return pods == idle and pods + t.get("runai_uploader_untracked_pods", 0) == count


def _page_bytes(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
        return len(r.read())


def empty_row(
    root: str, count: int, code: str | None, idle: float, delays: int, rx: Receiver, limit: float
) -> dict[str, Any]:
    """The agent (of *code*, or today's) over *count* empty directories; with *delays*, victim pods timed too."""
    spool = os.path.join(root, f"empty-{count}-{'baseline' if code else 'today'}")
    os.makedirs(spool, mode=0o755)
    _empty_dirs(spool, count)
    port = free_port()
    cmd = [sys.executable, "-m", "uploader", "agent", f"--spool-dir={spool}", rx.option, f"--metrics-port={port}"]
    started = time.monotonic()
    agent = subprocess.Popen(
        cmd, env=_env(code), cwd=code or REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None
    )
    row: dict[str, Any] = {"empty": count, "code": "baseline" if code else "today"}
    try:
        wait_for(lambda: _serving(port), 60, "the agent's page")
        wait_for(lambda: _settled(port, count), limit, f"{count} empty directories judged")
        row["settle"] = time.monotonic() - started
        wait_for(lambda: time.monotonic() - row["settle"] - started > NEW_POD_SECONDS + 1, 30, "the steady state")
        cpu0, t0 = process_cpu_seconds(agent.pid), time.monotonic()
        time.sleep(idle)  # the measurement window itself, not a synchronisation
        row["cpu"] = 100 * (process_cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0)
        row["rss"] = _proc_status(agent.pid, "VmRSS") / 1024
        row["page"] = _page_bytes(port)
        row["rss_scraped"] = _proc_status(agent.pid, "VmRSS") / 1024
        if delays:
            row["victim"] = _victims(rx, spool, delays, code, port)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=60)
        shutil.rmtree(spool, ignore_errors=True)
    return row


def _victims(rx: Receiver, spool: str, delays: int, code: str | None, port: int) -> float:
    """The median seconds from a victim pod's death to its last value, once the hostile uid's live pods are being
    delivered (past their grace: a quarter of the slots today, every one before); math.inf: one was not delivered
    within VICTIM_TIMEOUT."""
    live = subprocess.Popen(
        [sys.executable, "-c", _LIVE, spool, str(HOSTILE_LIVE), str(HOSTILE_UID)],
        env=_env(code),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "ready"
        wait_for(lambda: _totals(port).get(_DELIVERING, 0) >= HOSTILE_LIVE // 4, 60, "the hostile live pods taken")
        took = []
        for _ in range(delays):
            try:
                took.append(_orphan_delay(rx.server, spool, timeout=VICTIM_TIMEOUT))
            except AssertionError:
                return math.inf
        return _median(took)
    finally:
        live.kill()
        live.wait()


def _serving(port: int) -> bool:
    try:
        _totals(port)
    except OSError:
        return False
    return True


def print_empty_table(rows: list[dict[str, Any]], idle: float) -> None:
    print(
        f"\nnode agent over N empty pod directories of uid {HOSTILE_UID}; idle CPU over {idle:.0f} s; page: the whole "
        "/metrics; victim: seconds from a pod's death (SIGKILL, its lock released) to its last value on the "
        f"Pushgateway, median, beside {HOSTILE_LIVE} live pods of uid {HOSTILE_UID} (a writer alive, no uploader)"
    )
    print(
        f"{'code':>8} {'empty dirs':>10} {'settled s':>9} {'RSS MiB':>8} {'after scrape':>12} {'idle CPU %':>10} "
        f"{'page bytes':>11} {'victim s':>8}"
    )
    for r in rows:
        victim = r.get("victim")
        print(
            f"{r['code']:>8} {r['empty']:>10,} {r['settle']:>9.1f} {r['rss']:>8.1f} {r['rss_scraped']:>12.1f} "
            f"{r['cpu']:>10.2f} {r['page']:>11,} {_seconds(victim):>8}"
        )


def _seconds(victim: float | None) -> str:
    if victim is None:
        return "-"
    return f"> {VICTIM_TIMEOUT:.0f}" if victim == math.inf else f"{victim:.2f}"
