"""Issue 22, point 3: what one owner's empty pod directories cost the node agent (bound.py, and no series at 0).

The e2e test floods the spool directory with another uid's empty pod directories under a real agent; the
others are fast tests of the admission and displacement rules, on real directories.
"""

from __future__ import annotations

import logging
import os
import shutil
import time

import pytest

from harness import metric_name, wait_for
from tests._helpers import dead_job
from tests._users import ATTACKER, VICTIM, needs_root
from uploader.agent.bound import OwnedStates, PodBound
from uploader.agent.judge import dir_mtime
from uploader.agent.schedule import ACTIVE, IDLE, Pod

FLOOD, BOUND = 20_000, 1_000


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _page(agent) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics", timeout=10) as r:
        return bytes(r.read())


def _chown_tree(path: str, uid: int) -> None:
    for d, _, files in os.walk(path):
        for name in [d, *(os.path.join(d, f) for f in files)]:
            os.chown(name, uid, uid)


@pytest.mark.e2e
@needs_root
def test_another_uids_20000_empty_pod_dirs_cost_no_series_and_bounded_memory_and_a_victim_is_still_delivered(
    gateway, start_agent, spool_dir, pod, tmp_path
) -> None:
    agent = start_agent(gateway.address, f"--max-pods-per-owner={BOUND}")
    for i in range(FLOOD):  # what a job of ATTACKER's can do in a second (made as root here, then given away)
        path = os.path.join(spool_dir, f"hostile-{i:05d}")
        os.mkdir(path, 0o700)
        os.chown(path, ATTACKER, ATTACKER)
    wait_for(lambda: agent.sample("runai_uploader_untracked_pods") == FLOOD - BOUND, 30, "the flood counted")
    assert agent.sample("runai_uploader_pods") == BOUND
    wait_for(lambda: agent.sample("runai_uploader_idle_pods") == BOUND, 30, "the pods followed judged idle")
    page = _page(agent)
    assert b"hostile-" not in page, "an empty pod directory has series"
    assert len(page) < 16_000, f"the page is {len(page)} bytes"
    rss = _rss_mib(agent.proc.pid)
    assert rss < 64, f"the agent's RSS is {rss:.0f} MiB"
    # (The code before: a 2.4 MB page, 40,000 series of empty pods, 98 MiB.)
    # A victim's pod dies with reports pending: made aside, given to VICTIM, and moved in (found as VICTIM's).
    stage = tmp_path / "stage"
    os.mkdir(stage)
    _chown_tree(dead_job(str(stage), pod, 20), VICTIM)
    os.rename(stage / pod, os.path.join(spool_dir, pod))
    died = time.monotonic()
    wait_for(lambda: gateway.value(pod, metric_name("loss")) == 19, 15, "the victim's pod delivered")
    took = time.monotonic() - died
    assert took < 10, f"the victim's pod took {took:.1f} s"
    print(f"page {len(page)} bytes, RSS {rss:.1f} MiB, victim delivered in {took:.2f} s")
    log = agent.stderr()
    lines = [line for line in log.splitlines() if "are not followed" in line]
    assert len(lines) == 1 and f"uid {ATTACKER}" in lines[0] and "--max-pods-per-owner" in lines[0], log[-3000:]
    assert "Traceback" not in log
    # Room appears when the owner's directories go: the untracked are followed, none displaced meanwhile.
    for i in range(FLOOD):
        os.rmdir(os.path.join(spool_dir, f"hostile-{i:05d}"))
    wait_for(lambda: agent.sample("runai_uploader_untracked_pods") == 0, 30, "the untracked forgotten")
    assert agent.sample("runai_uploader_pods") == 1


# -- the admission rules, on real directories -------------------------------------------------------------------


class _Follow:
    """The agent's side of the bound: its pods, and the names it was told to drop."""

    def __init__(self, spool: str, bound: int) -> None:
        self.states, self.pods, self.dropped = OwnedStates(), {}, []
        self.bound = PodBound(spool, self.states, self._drop, bound)

    def _drop(self, name: str) -> None:
        self.dropped.append(name)
        self.states.remove(self.pods.pop(name))

    def listing(self, names: set[str], now: float = 0.0) -> list[str]:
        self.bound.gone(names, self.pods)
        for gone in self.pods.keys() - names:
            self._drop(gone)
        admitted = []
        for pod in self.bound.admit(names, self.pods, now):
            self.pods[pod.name] = self.states.add(pod)
            admitted.append(pod.name)
        return admitted

    def idle(self, name: str) -> None:
        pod = self.pods[name]
        pod.mtime = dir_mtime(pod.path)  # as judged
        self.states.move(pod, IDLE)


def _dirs(spool: str, *names: str, mtime: int = 0) -> set[str]:
    for i, name in enumerate(names):
        os.mkdir(os.path.join(spool, name))
        os.utime(os.path.join(spool, name), ns=(mtime + i, mtime + i))
    return set(os.listdir(spool))


def test_past_its_bound_an_owner_with_no_idle_pod_gets_new_dirs_untracked_and_counted_once(tmp_path, caplog) -> None:
    follow = _Follow(str(tmp_path), 2)
    with caplog.at_level(logging.WARNING, logger="uploader.agent.bound"):
        admitted = follow.listing(_dirs(str(tmp_path), "a", "b", "c", "d"))
        assert admitted == ["d", "c"]  # the most recently changed first
        assert follow.bound.untracked == 2 and follow.dropped == []
        # Listed again: nothing new, nothing re-admitted, displaced or logged (no churn).
        assert follow.listing(set(os.listdir(tmp_path)), now=120.0) == [] and follow.dropped == []
    assert [r.getMessage() for r in caplog.records if "are not followed" in r.getMessage()] == [
        r.getMessage() for r in caplog.records
    ]
    assert len(caplog.records) == 1 and f"uid {os.getuid()}" in caplog.records[0].getMessage()


def test_a_new_dir_displaces_its_owners_longest_idle_pod_and_room_readmits_the_untracked(tmp_path) -> None:
    spool = str(tmp_path)
    follow = _Follow(spool, 2)
    follow.listing(_dirs(spool, "old", "older"))
    follow.idle("older")
    follow.idle("old")  # idle after "older": "older" has been idle the longest
    assert follow.listing(_dirs(spool, "new", mtime=10)) == ["new"]
    assert follow.dropped == ["older"] and follow.bound.untracked == 1
    # "old" changed since it was judged (a new file may be there): not displaced; nothing else is idle.
    os.utime(os.path.join(spool, "old"), ns=(99, 99))
    assert follow.listing(_dirs(spool, "newer", mtime=20)) == [] and follow.bound.untracked == 2
    # An owner's pod gone: room for the first refused ("older"), then the next.
    shutil.rmtree(os.path.join(spool, "new"))
    assert follow.listing(set(os.listdir(spool))) == ["older"] and follow.bound.untracked == 1
    shutil.rmtree(os.path.join(spool, "older"))
    shutil.rmtree(os.path.join(spool, "newer"))  # an untracked name gone: forgotten
    assert follow.listing(set(os.listdir(spool))) == [] and follow.bound.untracked == 0


def test_owned_states_count_each_owners_pods_and_idle_ones_in_the_order_they_went_idle() -> None:
    states = OwnedStates()
    pods = [states.add(Pod(f"p{i}", f"/x/p{i}", 0.0, owner=i % 2)) for i in range(4)]
    assert states.owned == {0: 2, 1: 2} and states[ACTIVE] == 4
    for pod in (pods[2], pods[0], pods[1]):
        states.move(pod, IDLE)
    states.move(pods[2], IDLE)  # idle again: keeps its place
    assert list(states.idle[0]) == ["p2", "p0"] and list(states.idle[1]) == ["p1"]
    states.move(pods[2], ACTIVE)
    states.remove(pods[1])
    assert list(states.idle[0]) == ["p0"] and 1 not in states.idle and states.owned == {0: 2, 1: 1}
    assert states[IDLE] == 1 and states[ACTIVE] == 2
