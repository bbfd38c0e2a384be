"""Issue 22, point 1: one tenant's live pods cannot take every delivery slot of the node agent. Real uids (setpriv),
real processes holding real spool files as writers do, a real agent and a real Pushgateway."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from typing import Iterator

import pytest

from harness import metric_name, wait_for
from runai.reporter.spool import encode_header, encode_metric, holder_pid
from tests._users import ATTACKER, SETPRIV, VICTIM, needs_root

pytestmark = [pytest.mark.e2e, needs_root]

# A tenant's job: it makes its pod directories, each with a spool file it holds as a writer does (a shared
# flock, for as long as it lives), and, with "own", holds each pod's lock as the pod's own uploader would.
# The standard library only: any uid can run the system's Python, wherever the checkout lies.
TENANT = """
import fcntl, json, os, sys
spool, own = sys.argv[1], sys.argv[2] == "own"
held = []
for i, (pod, data) in enumerate(json.loads(sys.stdin.readline()).items()):
    pod_dir = os.path.join(spool, pod)
    os.mkdir(pod_dir, 0o700)
    if own:
        lock = os.open(os.path.join(pod_dir, "uploader.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.write(lock, f"{os.getpid()}\\n".encode())
        held.append(lock)
    fd = os.open(os.path.join(pod_dir, f"w{os.getpid()}-{i:08x}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.write(fd, bytes.fromhex(data))
    held.append(fd)
print("READY", flush=True)
sys.stdin.readline()  # it lives until told, or until its stdin closes
"""

PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
OWNERS = [ATTACKER + i for i in range(4)]  # the hostile tenant's uids (no account needed)
PODS_EACH = 3
MAX_DELIVERIES = 8  # 2 per owner, 6 for live pods, 2 kept for dead ones (a quarter each)


@pytest.fixture
def spool_dir(shared_tmp: str) -> str:
    """The node's spool directory, where every uid may make its pod directories (as a hostPath's is)."""
    path = os.path.join(shared_tmp, "spool")
    os.mkdir(path)
    os.chmod(path, 0o1777)
    return path


@pytest.fixture
def tenants() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


def _spool(pod: str, values: range) -> str:
    """A spool file of *pod* (born long ago: no grace), its values reported, no end: its writer lives."""
    data = encode_header("f" * 32, pod, 1, ("gateway",))
    data += b"".join(encode_metric(seq, seq, "loss", float(v)) for seq, v in enumerate(values, start=1))
    return data.hex()


def _tenant(procs: list[subprocess.Popen[str]], uid: int, spool: str, pods: list[str], own: bool = False) -> None:
    assert SETPRIV is not None
    proc = subprocess.Popen(
        [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", PYTHON, "-I", "-c", TENANT, spool]
        + ["own" if own else "no-uploader"],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    procs.append(proc)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps({pod: _spool(pod, range(3)) for pod in pods}) + "\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "READY\n", f"uid {uid}'s job failed (status {proc.wait(10)})"


class Hostile:
    """One tenant, four uids, three pods each: each pod with a live writer and no uploader, for ever; the agent
    over them, and the most slots each of its owners was seen holding (:meth:`taken` samples them)."""

    def __init__(self, tenants: list[subprocess.Popen[str]], spool_dir: str, pod: str, start_agent, gateway) -> None:
        self.spool_dir = spool_dir
        self.pods = {uid: [f"{pod}-u{uid}-{i}" for i in range(PODS_EACH)] for uid in OWNERS}
        for uid, pods in self.pods.items():
            _tenant(tenants, uid, spool_dir, pods)
        self.agent = start_agent(gateway.address, f"--max-deliveries={MAX_DELIVERIES}")
        self.most: Counter[int] = Counter()
        wait_for(lambda: self.queued() + self.delivering() == len(OWNERS) * PODS_EACH, 20, "every pod judged")

    def queued(self) -> float:
        self.taken()
        return self.agent.sample("runai_uploader_queued_pods") or 0

    def delivering(self) -> float:
        return self.agent.sample("runai_uploader_delivering_pods") or 0

    def taken(self) -> Counter[int]:
        pid = self.agent.proc.pid
        held = Counter(
            uid for uid, pods in self.pods.items() for p in pods if holder_pid(os.path.join(self.spool_dir, p)) == pid
        )
        for uid, n in held.items():
            self.most[uid] = max(self.most[uid], n)
        return held

    def check_bounds(self) -> None:
        """Each owner held its bound at most, and all together the live pods' share: no more, and no less (their
        deliveries last as long as their writers; the pods were taken as they were found, so which owners got
        them is not said here: test_slots.py checks the turns of pods waiting together)."""
        held = self.taken()
        assert max(self.most.values()) <= MAX_DELIVERIES // 4, f"an owner held more than its bound: {self.most}"
        assert sum(held.values()) == MAX_DELIVERIES - MAX_DELIVERIES // 4, held
        assert self.agent.proc.poll() is None, self.agent.stderr()


def _delivered_soon(hostile: Hostile, gateway, pod: str, died: float) -> None:
    def delivered() -> bool:
        hostile.taken()
        return gateway.value(pod, metric_name("loss")) == 2

    wait_for(delivered, 10, "the victim's last value on the gateway while the hostile tenant's live pods wait")
    took = time.monotonic() - died
    assert took < 5, f"the dying pod took {took:.1f} s"


def test_one_tenants_live_pods_never_keep_a_dying_pod_of_another_from_its_slot(
    gateway, start_agent, spool_dir, pod, tenants
) -> None:
    hostile = Hostile(tenants, spool_dir, pod, start_agent, gateway)
    # The victim's pod: a live writer and its own uploader. The agent must leave it to that uploader.
    _tenant(tenants, VICTIM, spool_dir, [pod], own=True)
    victim, agent = tenants[-1], hostile.agent
    wait_for(lambda: agent.sample("runai_uploader_pending_reports", podUUID=pod) == 3, 10, "the victim's pod judged")
    assert holder_pid(os.path.join(spool_dir, pod)) == victim.pid and gateway.value(pod, metric_name("loss")) is None
    victim.kill()  # the pod dies whole: its job and its uploader
    victim.wait(timeout=10)
    _delivered_soon(hostile, gateway, pod, time.monotonic())
    hostile.check_bounds()


def test_a_pod_queued_with_writers_alive_goes_among_the_dead_when_they_die(
    gateway, start_agent, spool_dir, pod, tenants
) -> None:
    hostile = Hostile(tenants, spool_dir, pod, start_agent, gateway)
    # The victim's uploader died first: its pod, free to take with a writer alive, waits among the live pods
    # (their slots are all held); then its job dies too.
    _tenant(tenants, VICTIM, spool_dir, [pod])
    victim = tenants[-1]
    wait_for(lambda: hostile.queued() == len(OWNERS) * PODS_EACH - hostile.delivering() + 1, 10, "the victim queued")
    assert gateway.value(pod, metric_name("loss")) is None
    victim.kill()
    victim.wait(timeout=10)
    _delivered_soon(hostile, gateway, pod, time.monotonic())
    hostile.check_bounds()
