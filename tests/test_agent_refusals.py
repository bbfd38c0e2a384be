"""What one pod (whatever its owner planted there) must never do to the node agent and the other pods."""

from __future__ import annotations

import os
import time

import pytest

from harness import metric_name, wait_for
from runai.reporter.spool import spool_file_names
from tests._helpers import dead_job

pytestmark = pytest.mark.e2e


def _as_another_user(*paths: str) -> None:
    """Give *paths* to another uid where this test can (as root): a pod owned by someone else, as on a node."""
    if os.geteuid() == 0:
        for path in paths:
            os.lchown(path, 54321, 54321)


def test_a_planted_lock_file_refuses_its_pod_and_never_ends_the_agent(
    env, gateway, start_agent, spool_dir, pod, tmp_path
) -> None:
    # A pod whose uploader.lock is a symlink, there when the agent starts: at start, it must not crash-loop.
    evil = os.path.join(spool_dir, "evil")
    os.mkdir(evil, 0o700)
    os.symlink("/nonexistent", os.path.join(evil, "uploader.lock"))
    _as_another_user(evil, os.path.join(evil, "uploader.lock"))
    dead_job(spool_dir, pod, 3)
    agent = start_agent(gateway.address)
    wait_for(lambda: gateway.value(pod, metric_name("loss")) == 2, 15, "the other pod delivered")
    wait_for(lambda: agent.sample("runai_uploader_refused_pods") == 1, 10, "the planted pod counted as refused")
    # Another one made while the agent runs (a directory named uploader.lock), moved in whole.
    hidden, later = os.path.join(spool_dir, ".evil2"), f"{pod}-later"
    os.makedirs(os.path.join(hidden, "uploader.lock"), mode=0o700)
    _as_another_user(hidden, os.path.join(hidden, "uploader.lock"))
    os.rename(hidden, os.path.join(spool_dir, "evil2"))
    dead_job(spool_dir, later, 2)
    wait_for(lambda: gateway.value(later, metric_name("loss")) == 1, 15, "a pod made after it delivered")
    wait_for(lambda: agent.sample("runai_uploader_refused_pods") == 2, 10, "both planted pods refused")
    assert agent.proc.poll() is None, agent.stderr()
    log = agent.stderr()
    assert "pod evil: cannot deliver it" in log and "pod evil2: cannot deliver it" in log, log
    assert log.count("pod evil: cannot deliver it") == 1, "a refusal is logged once"


def test_a_huge_backlog_held_by_its_uploader_stalls_no_other_pod_nor_sigterm(
    env, gateway, start_agent, spool_dir, pod
) -> None:
    from runai.reporter.spool import PodLock

    # A pod of 3 reports made a 2 GiB sparse file (no disk used), its lock held by "its own uploader" (this
    # test): judging it must not read it all (which took the agent's main loop seconds, every 5 s).
    big = dead_job(spool_dir, f"{pod}-big", 3)
    path = os.path.join(big, spool_file_names(big)[0])
    os.truncate(path, 2 << 30)
    lock = PodLock(big)
    assert lock.acquire()
    try:
        agent = start_agent(gateway.address)
        wait_for(
            lambda: agent.sample("runai_uploader_pending_reports", podUUID=f"{pod}-big") == 3,
            10,
            "the held pod judged (its reports a lower bound)",
        )
        started = time.monotonic()
        dead_job(spool_dir, pod, 5)
        wait_for(lambda: gateway.value(pod, metric_name("loss")) == 4, 5, "another pod delivered meanwhile")
        assert time.monotonic() - started < 5
        read = _bytes_read(agent.proc.pid)  # its imports included: tens of MiB
        assert read < 256 << 20, f"the agent read {read >> 20} MiB: the held pod's whole file"
        # Its bytes from the file's size (the torn line of zeros included: not read, it cannot be told apart).
        assert (agent.sample("runai_uploader_pending_bytes", podUUID=f"{pod}-big") or 0) > (2 << 30) - 4096
        status, took = agent.terminate()
        assert status == 0, agent.stderr()
        assert took < 2, f"SIGTERM took {took:.2f} s"
    finally:
        lock.release()


def _bytes_read(pid: int) -> int:
    """What process *pid* has read so far (from files, pipes, sockets), by /proc/PID/io."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def test_a_pod_dir_named_with_undecodable_bytes_is_refused_and_metrics_still_serve(
    env, gateway, start_agent, spool_dir, pod
) -> None:
    agent = start_agent(gateway.address)
    os.rename(dead_job(spool_dir, "bad", 2), os.path.join(os.fsencode(spool_dir), b"evil\xff"))
    dead_job(spool_dir, pod, 2)
    wait_for(lambda: gateway.value(pod, metric_name("loss")) == 1, 15, "the good pod delivered")
    wait_for(lambda: agent.sample("runai_uploader_refused_pods") == 1, 10, "the bad name refused")
    samples = agent.scrape()  # every scrape works: the page has no series for it
    assert not [labels for _, labels in samples if any("evil" in value for _, value in labels)], samples
    # The directory may have been seen under its first name before the rename: forgotten at the next listing.
    wait_for(lambda: agent.sample("runai_uploader_pods") == 2, 15, "the two pods followed")
    assert "Traceback" not in agent.stderr() and "pod evil\\xff: cannot deliver it" in agent.stderr()


def test_a_refused_pod_is_counted_in_the_metrics(env, gateway, start_agent, spool_dir, pod) -> None:
    grouped = dead_job(spool_dir, f"{pod}-grouped", 5)
    os.chmod(grouped, 0o750)  # group-readable, as a kubelet's fsGroup leaves it: refused as unsafe
    agent = start_agent(gateway.address)
    wait_for(lambda: agent.sample("runai_uploader_refused_pods") == 1, 10, "the refused pod counted")
    assert agent.sample("runai_uploader_pending_reports", podUUID=f"{pod}-grouped") is None


def test_a_pod_failing_in_any_other_way_is_refused_and_the_agent_goes_on(spool_dir, pod) -> None:
    import threading

    from uploader.agent.metrics import AgentMetrics
    from uploader.agent.pods import Agent as NodeAgent

    def settings_for(name: str):
        raise RuntimeError(f"a bug, for {name}")  # whatever a pod makes fail: not a ConfigError

    dead_job(spool_dir, pod, 2)
    metrics = AgentMetrics()
    agent = NodeAgent(spool_dir, settings_for, ("gateway",), metrics, use_watchdog=False)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: metrics.registry.get_sample_value("runai_uploader_refused_pods") == 1, 10, "refused")
        assert thread.is_alive()
        assert metrics.registry.get_sample_value("runai_uploader_pending_reports", {"podUUID": pod}) == 2
    finally:
        agent.stop()
        thread.join(5)
    assert not thread.is_alive()
