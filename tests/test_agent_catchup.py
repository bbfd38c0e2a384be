"""The node agent's catch-up: a backlog of dead pods, far more than its delivery slots, costs each pod one judgment.

The agent once judged every pod waiting for a slot again every second (and walked every pod at each
delivery's end): a catch-up of N pods cost N² work. Timing is no test on a shared machine; the agent's own
count of judgments is, and it does not depend on how fast the machine is.
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.request
import uuid

import pytest

from harness import Pushgateway, metric_name, wait_for
from runai.reporter.settings import load_settings
from runai.reporter.spool import SpoolWriter
from tests._agent import Agent
from tests._helpers import closed_spool

PODS = 120
REPORTS = 5


def _dead_pods(spool_dir: str, count: int) -> list[str]:
    """*count* pods whose job finished (every writer closed) and whose reports (of "m") no one delivered."""
    names = [f"dead-{uuid.uuid4()}" for _ in range(count)]
    for name in names:
        closed_spool(os.path.join(spool_dir, name), name, REPORTS)
    return names


def _totals(agent: Agent) -> dict[str, float]:
    """The agent's totals over pods, read from a page restricted to them: a few lines whatever the pods."""
    names = (
        "runai_uploader_pods",
        "runai_uploader_idle_pods",
        "runai_uploader_queued_pods",
        "runai_uploader_judged_pods_total",
    )
    query = "&".join(f"name[]={name}" for name in names)
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics?{query}", timeout=5) as r:
        lines = r.read().decode().splitlines()
    samples = dict(line.rsplit(" ", 1) for line in lines if line and not line.startswith("#"))
    assert set(samples) == set(names), lines  # nothing else on the page: a scrape costs no per-pod work
    return {name: float(value) for name, value in samples.items()}


@pytest.mark.e2e
def test_a_backlog_longer_than_the_slots_is_judged_once_per_pod_and_idle_pods_cost_no_judgment(
    own_gateway: Pushgateway, spool_dir: str, start_agent
) -> None:
    gateway = own_gateway.start()
    pods = _dead_pods(spool_dir, PODS)
    # Two slots: most pods wait in the queue for seconds, where each used to be judged again every second.
    agent = start_agent(gateway.address, "--max-deliveries=2")
    wait_for(lambda: _totals(agent)["runai_uploader_idle_pods"] == PODS, 120, f"{PODS} pods delivered and idle")
    totals = _totals(agent)
    assert totals["runai_uploader_pods"] == PODS and totals["runai_uploader_queued_pods"] == 0
    delivered = {group["labels"].get("podUUID") for group in gateway.groups()}
    assert set(pods) <= delivered, f"{len(set(pods) - delivered)} pods not on the gateway"
    assert gateway.value(pods[-1], metric_name("m")) == REPORTS - 1
    # Once when found; a delivered pod is left idle without another (its next idle look lists it).
    judged = totals["runai_uploader_judged_pods_total"]
    assert judged == PODS, f"{judged:.0f} judgments for {PODS} pods"

    # Idle, the pods are looked at (a stat each, every few seconds) but never judged; a new pod is, once.
    # (made beside the spool and moved in whole: an agent that saw its directory still empty would judge it twice)
    staging = os.path.join(os.path.dirname(spool_dir), "staging")
    os.makedirs(staging, mode=0o700)
    late = _dead_pods(staging, 1)[0]
    os.rename(os.path.join(staging, late), os.path.join(spool_dir, late))
    wait_for(lambda: _totals(agent)["runai_uploader_idle_pods"] == PODS + 1, 30, "the late pod delivered")
    assert gateway.value(late, metric_name("m")) == REPORTS - 1
    assert _totals(agent)["runai_uploader_judged_pods_total"] == PODS + 1
    status, _ = agent.terminate()
    assert status == 0, agent.stderr()


@pytest.mark.e2e
def test_an_idle_pod_is_watched_and_a_new_spool_file_in_it_is_delivered(
    own_gateway: Pushgateway, spool_dir: str, start_agent
) -> None:
    gateway = own_gateway.start()
    pod = _dead_pods(spool_dir, 1)[0]
    agent = start_agent(gateway.address)
    wait_for(lambda: _watched(agent) == 1, 30, "the delivered pod idle and watched")
    # The job comes back in the same pod (a restarted container), writes and dies without an uploader.
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.write_metric("loss", 99.0)
    writer.close()
    wait_for(lambda: gateway.value(pod, metric_name("loss")) == 99, 15, "the new file delivered")
    wait_for(lambda: _watched(agent) == 1, 15, "the pod idle and watched again")


def _watched(agent: Agent) -> float | None:
    return agent.sample("runai_uploader_watched_pods") if agent.sample("runai_uploader_idle_pods") == 1 else None


def test_the_idle_watch_names_the_directories_that_got_a_new_entry(tmp_path) -> None:
    from uploader.agent.config import IDLE_WATCHED_POLL_SECONDS
    from uploader.agent.idle import IdleWatch

    woken = []
    watch = IdleWatch(lambda: woken.append(1))
    watch.start()
    try:
        dirs = {name: tmp_path / name for name in ("a", "b", "c")}
        for path in dirs.values():
            path.mkdir()
        # Watched only now: one more look at the poll's pace, then the watch's.
        assert [watch.next_look(name, str(path), 3.0) for name, path in dirs.items()] == [3.0] * 3
        assert watch.next_look("a", str(dirs["a"]), 3.0) == IDLE_WATCHED_POLL_SECONDS and watch.count == 3
        (dirs["b"] / "new.jsonl").write_text("")
        os.rename(dirs["b"] / "new.jsonl", dirs["c"] / "moved.jsonl")
        got: set[str] = set()
        wait_for(lambda: got.update(watch.changed()) or got == {"b", "c"}, 10, "b and c changed")
        assert woken
        watch.unwatch("b")
        (dirs["b"] / "later.jsonl").write_text("")
        (dirs["a"] / "later.jsonl").write_text("")
        wait_for(lambda: watch.changed() == ["a"], 10, "a changed, b no longer watched")
        assert watch.count == 2
    finally:
        watch.stop()


def test_the_idle_watch_cap_is_a_quarter_of_the_users_watches_at_most_the_constant(tmp_path) -> None:
    from uploader.agent.config import MAX_IDLE_WATCHES
    from uploader.agent.idle import system_watch_cap, watch_cap

    assert watch_cap(8192) == 2048 and watch_cap(3) == 0 and watch_cap(10 * MAX_IDLE_WATCHES) == MAX_IDLE_WATCHES
    fs_limit, user_ns_limit = tmp_path / "max_user_watches", tmp_path / "max_inotify_watches"
    fs_limit.write_text("1000\n")
    user_ns_limit.write_text("400\n")
    assert system_watch_cap((str(fs_limit), str(user_ns_limit))) == 100  # the lower limit applies
    assert system_watch_cap((str(fs_limit), str(tmp_path / "absent"))) == 250
    assert system_watch_cap((str(tmp_path / "absent"),)) == 2048  # unknown: the old kernels' 8,192 assumed


@pytest.mark.e2e
def test_idle_pods_past_the_watch_cap_are_polled_and_still_delivered(
    gateway: Pushgateway, spool_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    from uploader.agent.metrics import AgentMetrics
    from uploader.agent.pods import Agent as NodeAgent

    caplog.set_level(logging.WARNING, logger="uploader")
    pods = _dead_pods(spool_dir, 5)
    metrics = AgentMetrics()
    env = {"reporterGatewayURL": gateway.address, "reporterSpoolDir": spool_dir}
    agent = NodeAgent(
        spool_dir,
        lambda pod: load_settings(environ=env, for_writing=False, pod_uuid=pod),
        ("gateway",),
        metrics,
        max_idle_watches=2,
    )
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()

    def idle_and_watched() -> tuple[float | None, float | None]:
        return (
            metrics.registry.get_sample_value("runai_uploader_idle_pods"),
            metrics.registry.get_sample_value("runai_uploader_watched_pods"),
        )

    try:
        wait_for(lambda: idle_and_watched() == (5, 2), 30, "the 5 pods delivered, idle, 2 of them watched")
        # Their jobs come back (restarted containers), write and die without an uploader: the 3 pods past the
        # cap are polled (every 3 s), and delivered too.
        for pod in pods:
            writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
            writer.write_metric("loss", 99.0)
            writer.close()
        wait_for(lambda: all(gateway.value(pod, metric_name("loss")) == 99 for pod in pods), 30, "the new files")
        wait_for(lambda: idle_and_watched() == (5, 2), 30, "the 5 pods idle again, 2 of them watched")
    finally:
        agent.stop()
        thread.join(10)
    assert not thread.is_alive()
    capped = [r.getMessage() for r in caplog.records if "the agent's cap" in r.getMessage()]
    assert len(capped) == 1 and capped[0].startswith("2 idle pods watched"), capped
