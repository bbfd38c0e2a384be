"""`runai-uploader agent`: the node agent, a real subprocess, against the real gateway behind counting proxies.

"Pods" are real processes: a training job (a Reporter, or a bare spool writer) and its own uploader, killed
whole with SIGKILL as a dying pod's are.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

import pytest

from harness import FaultProxy, Pushgateway, free_port, job_env, metric_name, parameter_name, wait_for
from runai.reporter.spool import holder_pid, spool_file_names
from tests.test_recover import dead_job
from uploader.status import pod_status

# A job that reports, says so, and lives on until killed: its Reporter starts its own uploader.
REPORTING_JOB = """
import sys, time
import runai.reporter
reporter = runai.reporter.Reporter()
for i in range(int(sys.argv[2])):
    reporter.reportMetric('loss', i)
reporter.reportParameter('optimizer', 'adam')
open(sys.argv[1], 'w').close()
time.sleep(600)
"""

# A job writing its spool itself (no Reporter: nothing restarts an uploader), a step every 50 ms, for ever.
STEPPING_JOB = """
import sys, time
from runai.reporter.spool import SpoolWriter
writer = SpoolWriter(sys.argv[1], sys.argv[2])
step = 0
while True:
    writer.write_metric('step', step)
    step += 1
    time.sleep(0.05)
"""


class Agent:
    """``runai-uploader agent`` as a subprocess, its stderr in a file, its metrics on a free port."""

    def __init__(self, spool_dir: str, gateway: str, log: str, *options: str) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uploader", "agent", f"--spool-dir={spool_dir}", f"--gateway={gateway}",
                 f"--metrics-port={self.port}", "--metrics-address=127.0.0.1", *options],
                env=job_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        wait_for(self._serving, 30, "the agent's metrics endpoint")

    def _serving(self) -> bool:
        assert self.proc.poll() is None, self.stderr()
        try:
            self.scrape()
        except OSError:
            return False
        return True

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of the agent's page: (name, sorted labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def sample(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, tuple(sorted(labels.items()))))

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; its exit status and how long it took to exit."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=30)
        return status, time.monotonic() - started

    def stderr(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def proxy(gateway: Pushgateway) -> Iterator[FaultProxy]:
    proxy = FaultProxy(gateway.address).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def start_agent(spool_dir: str, tmp_path) -> Iterator:
    agents: list[Agent] = []

    def start(gateway: str, *options: str) -> Agent:
        agents.append(Agent(spool_dir, gateway, str(tmp_path / f"agent-{len(agents)}.log"), *options))
        return agents[-1]

    yield start
    for agent in agents:
        agent.close()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_dead_pod_is_delivered_once_the_gateway_is_back(env, gateway, proxy, start_agent, spool_dir, pod,
                                                         tmp_path) -> None:
    proxy.refuse()  # the gateway is down for the whole life of the pod
    # A long grace: however slowly the job's own uploader starts on a loaded machine, the agent leaves it the pod.
    agent = start_agent(proxy.address, "--grace-seconds=30")
    pod_dir, marker = os.path.join(spool_dir, pod), str(tmp_path / "reported")
    job = subprocess.Popen([sys.executable, "-c", REPORTING_JOB, marker, "300"],
                           env=job_env(**{**env, "reporterGatewayURL": proxy.address}), start_new_session=True)
    try:
        wait_for(lambda: os.path.exists(marker), 30, "the job's reports")
        uploader = wait_for(lambda: holder_pid(pod_dir), 15, "the job's own uploader")
        assert uploader != agent.proc.pid
        _kill_group(job.pid)  # the pod dies whole: the job, and its uploader (in a session of its own)
        _kill_group(uploader)
        job.wait(timeout=10)
    finally:
        _kill_group(job.pid)
    wait_for(lambda: holder_pid(pod_dir) == agent.proc.pid, 10, "the agent to take the dead pod")
    proxy.heal()
    healed = time.monotonic()
    wait_for(lambda: gateway.value(pod, metric_name("loss")) == 299
             and gateway.value(pod, parameter_name("optimizer")) == 1, 15, "every last value on the gateway")
    assert time.monotonic() - healed < 15
    wait_for(lambda: pod_status(spool_dir, pod).reports_pending == 0, 10, "the checkpoint to cover the spool")
    assert pod_status(spool_dir, pod).reports_delivered == 301
    wait_for(lambda: agent.sample("runai_uploader_pending_reports", podUUID=pod) == 0, 10, "nothing pending")


def test_pod_created_after_start_is_found_and_delivered(env, gateway, proxy, start_agent, spool_dir) -> None:
    agent = start_agent(proxy.address)
    late = f"{env['podUUID']}-late"
    started = time.monotonic()
    dead_job(spool_dir, late, 40)  # a pod whose job died without ever starting an uploader
    wait_for(lambda: gateway.value(late, metric_name("loss")) == 39, 15, "the new pod's reports on the gateway")
    assert time.monotonic() - started < 15
    assert agent.sample("runai_uploader_pods") == 1
    # Counted after the checkpoint, which comes after the gateway's answer: a moment after the value shows there.
    wait_for(lambda: agent.sample("runai_uploader_delivered_reports_total", podUUID=late, sink="gateway") == 40, 10,
             "the 40 reports counted")


def test_live_pod_is_left_to_its_uploader_until_that_dies(env, gateway, proxy, start_agent, spool_dir, pod,
                                                          tmp_path) -> None:
    own = FaultProxy(gateway.address).start()  # the pod's own uploader pushes through this one, the agent not
    pod_dir = os.path.join(spool_dir, pod)
    job = subprocess.Popen([sys.executable, "-c", STEPPING_JOB, pod_dir, pod], env=job_env(), process_group=0)
    uploader = None
    try:
        wait_for(lambda: spool_file_names(pod_dir), 30, "the job's spool file")
        uploader = subprocess.Popen(
            [sys.executable, "-m", "uploader", "run", f"--spool-dir={spool_dir}", f"--pod-uuid={pod}",
             f"--gateway={own.address}"], env=job_env(), process_group=job.pid)  # in the pod's process group
        wait_for(lambda: holder_pid(pod_dir) == uploader.pid, 30, "the pod's own uploader")
        agent = start_agent(proxy.address)
        # The agent judges the pod (its gauge), and probes its lock every second for a few seconds meanwhile.
        wait_for(lambda: agent.sample("runai_uploader_pending_reports", podUUID=pod) is not None, 10, "a look")
        seen = gateway.value(pod, metric_name("step")) or 0
        wait_for(lambda: (gateway.value(pod, metric_name("step")) or 0) >= seen + 60, 30, "3 s more of the job")
        assert proxy.pushes == 0, "the agent pushed a pod whose own uploader is alive"
        assert own.pushes > 0
        os.kill(uploader.pid, signal.SIGKILL)  # the pod's uploader dies; its job lives on
        uploader.wait(timeout=10)
        died = time.monotonic()
        wait_for(lambda: proxy.pushes > 0, 5, "the agent to take over")
        assert time.monotonic() - died < 5
        assert holder_pid(pod_dir) == agent.proc.pid
        pushed = own.pushes
        step = gateway.value(pod, metric_name("step")) or 0
        wait_for(lambda: (gateway.value(pod, metric_name("step")) or 0) > step + 10, 10, "the job followed on")
        assert own.pushes == pushed
    finally:
        _kill_group(job.pid)
        job.wait(timeout=10)
        if uploader is not None and uploader.poll() is None:
            uploader.kill()
            uploader.wait()
        own.stop()
    # The job is dead: the agent delivers its last step and lets the pod go.
    wait_for(lambda: holder_pid(pod_dir) is None, 15, "the agent to hand the finished pod back")
    assert agent.sample("runai_uploader_pending_reports", podUUID=pod) == 0


def test_metrics_count_pending_failures_and_deliveries(env, gateway, proxy, start_agent, spool_dir, pod) -> None:
    proxy.refuse()
    agent = start_agent(proxy.address)
    dead_job(spool_dir, pod, 25)
    wait_for(lambda: (agent.sample("runai_uploader_push_failures_total", sink="gateway") or 0) >= 2, 15,
             "failed pushes")
    assert agent.sample("runai_uploader_pending_reports", podUUID=pod) == 25
    assert (agent.sample("runai_uploader_pending_bytes", podUUID=pod) or 0) > 0
    assert agent.sample("runai_uploader_pods") == 1
    proxy.heal()
    before = time.time()
    wait_for(lambda: agent.sample("runai_uploader_pending_reports", podUUID=pod) == 0, 15, "pending to go to 0")
    samples = agent.scrape()
    assert {name for name, _ in samples} >= {
        "runai_uploader_pending_reports", "runai_uploader_pending_bytes", "runai_uploader_delivered_reports_total",
        "runai_uploader_push_failures_total", "runai_uploader_last_success_timestamp_seconds", "runai_uploader_pods"}
    assert agent.sample("runai_uploader_pending_bytes", podUUID=pod) == 0
    assert agent.sample("runai_uploader_delivered_reports_total", podUUID=pod, sink="gateway") == 25
    assert (agent.sample("runai_uploader_last_success_timestamp_seconds", podUUID=pod, sink="gateway") or 0) >= \
        before - 1
    assert gateway.value(pod, metric_name("loss")) == 24


def test_sigterm_stops_within_2_s_and_a_restart_resends_nothing(env, gateway, proxy, start_agent, spool_dir,
                                                                 pod) -> None:
    agent = start_agent(proxy.address)
    dead_job(spool_dir, pod, 30)
    wait_for(lambda: gateway.value(pod, metric_name("loss")) == 29, 15, "the first pod delivered")
    wait_for(lambda: agent.sample("runai_uploader_pending_reports", podUUID=pod) == 0, 10, "its gauge at 0")
    # A second pod's push is in flight when the signal comes: the gateway has it, its answer is late.
    proxy.fault, proxy.slow_seconds = "slow", 30
    pushed = proxy.pushes
    busy = f"{pod}-busy"
    dead_job(spool_dir, busy, 10)
    wait_for(lambda: proxy.pushes > pushed, 15, "the second pod's push to be in flight")
    status, took = agent.terminate()
    assert status == 0, agent.stderr()
    assert took < 2, f"SIGTERM took {took:.2f} s"
    assert holder_pid(os.path.join(spool_dir, busy)) is None
    assert pod_status(spool_dir, busy).reports_pending == 10  # no answer, no checkpoint: sent again, below
    gateway.delete_group(pod)  # a resend of the first pod would bring its group back
    gateway.delete_group(busy)
    proxy.fault = None
    again = start_agent(proxy.address)
    wait_for(lambda: gateway.value(busy, metric_name("loss")) == 9, 15, "the second pod delivered after the restart")
    wait_for(lambda: again.sample("runai_uploader_pending_reports", podUUID=pod) == 0, 10, "the first pod judged")
    assert again.sample("runai_uploader_delivered_reports_total", podUUID=pod, sink="gateway") is None
    assert gateway.value(pod, metric_name("loss")) is None, "the restarted agent resent a delivered pod"
    assert again.sample("runai_uploader_delivered_reports_total", podUUID=busy, sink="gateway") == 10


def test_a_new_live_writer_gets_its_grace_before_the_agent_takes_its_pod(env, proxy, start_agent, spool_dir,
                                                                           pod) -> None:
    from uploader.agent import GRACE_SECONDS

    agent = start_agent(proxy.address)
    pod_dir = os.path.join(spool_dir, pod)
    job = subprocess.Popen([sys.executable, "-c", STEPPING_JOB, pod_dir, pod], env=job_env(), process_group=0)
    try:  # a job that never starts an uploader of its own
        wait_for(lambda: spool_file_names(pod_dir), 30, "the job's spool file")
        seen = time.monotonic()
        wait_for(lambda: holder_pid(pod_dir) == agent.proc.pid, 10, "the agent to take the pod")
        waited = time.monotonic() - seen
        # The agent saw the file at most one poll of wait_for (0.1 s) before this test did.
        assert GRACE_SECONDS - 0.15 <= waited < 5, waited
        wait_for(lambda: proxy.pushes > 0, 5, "the agent delivering the live job")
    finally:
        _kill_group(job.pid)
        job.wait(timeout=10)
    wait_for(lambda: holder_pid(pod_dir) is None, 15, "the agent to let the finished pod go")


def test_each_sink_gets_the_dead_pod_and_its_own_counts(env, gateway, proxy, start_agent, spool_dir, pod,
                                                         tmp_path) -> None:
    from harness import Prometheus
    from tests.test_remote_write_e2e import expected, samples

    os.makedirs(tmp_path / "prometheus")
    with Prometheus(str(tmp_path / "prometheus"), remote_write=True, out_of_order_window="2h") as receiver:
        agent = start_agent(proxy.address, f"--remote-write={receiver.write_url}")
        dead_job(spool_dir, pod, 30)
        wait_for(lambda: agent.sample("runai_uploader_pending_reports", podUUID=pod) == 0
                 and agent.sample("runai_uploader_delivered_reports_total", podUUID=pod, sink="remote_write") == 30,
                 15, "the pod delivered to both sinks")
        assert agent.sample("runai_uploader_delivered_reports_total", podUUID=pod, sink="gateway") == 30
        assert gateway.value(pod, metric_name("loss")) == 29
        # Every report at its own millisecond (reports of one millisecond keep the last), ending with the last.
        per_ms = dict(expected(os.path.join(spool_dir, pod)))  # in time order: each millisecond keeps its last
        assert samples(receiver, pod) == sorted(per_ms.items()) and samples(receiver, pod)[-1][1] == 29
        for sink in ("gateway", "remote_write"):
            assert agent.sample("runai_uploader_last_success_timestamp_seconds", podUUID=pod, sink=sink)


# -- what one pod (whatever its owner planted there) must never do to the agent and the other pods -------------


def _as_another_user(*paths: str) -> None:
    """Give *paths* to another uid where this test can (as root): a pod owned by someone else, as on a node."""
    if os.geteuid() == 0:
        for path in paths:
            os.lchown(path, 54321, 54321)


def test_a_planted_lock_file_refuses_its_pod_and_never_ends_the_agent(env, gateway, start_agent, spool_dir,
                                                                     pod, tmp_path) -> None:
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


def test_a_huge_backlog_held_by_its_uploader_stalls_no_other_pod_nor_sigterm(env, gateway, start_agent,
                                                                             spool_dir, pod) -> None:
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
        wait_for(lambda: agent.sample("runai_uploader_pending_reports", podUUID=f"{pod}-big") == 3, 10,
                 "the held pod judged (its reports a lower bound)")
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


def test_a_pod_dir_named_with_undecodable_bytes_is_refused_and_metrics_still_serve(env, gateway, start_agent,
                                                                                   spool_dir, pod) -> None:
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


def test_the_grace_counts_from_the_spool_files_birth_not_from_when_the_agent_noticed(env, proxy, start_agent,
                                                                                     spool_dir, pod) -> None:
    from runai.reporter.spool import PodLock, decode

    # The agent may notice a pod late: an idle one is looked at every 5 s. A job whose spool file is older than
    # the grace, and whose own uploader has just died, must be taken at once, not a whole grace later (with the
    # 2 s default that made up to 7 s from the uploader's death, past the 5 s promised). Moving the pod
    # directory in shows the agent a pod it has never seen, its file already older than the grace.
    grace = 3.0
    agent = start_agent(proxy.address, f"--grace-seconds={grace}")
    hidden, pod_dir = os.path.join(spool_dir, f".{pod}"), os.path.join(spool_dir, pod)
    os.mkdir(hidden, 0o700)
    lock = PodLock(hidden)  # its own uploader
    assert lock.acquire()
    job = subprocess.Popen([sys.executable, "-c", STEPPING_JOB, hidden, pod], env=job_env(), process_group=0)
    try:
        name = wait_for(lambda: spool_file_names(hidden), 30, "the job's spool file")[0]
        with open(os.path.join(hidden, name), "rb") as f:
            born = decode(f.readline().rstrip(b"\n")).ts
        wait_for(lambda: time.time() - born > grace + 0.2, 10, "the file to be older than the grace")
        lock.release()  # its uploader dies
        os.rename(hidden, pod_dir)
        died = time.monotonic()
        wait_for(lambda: holder_pid(pod_dir) == agent.proc.pid, 10, "the agent to take the pod")
        assert time.monotonic() - died < grace - 1, "the grace was counted from when the agent noticed the pod"
    finally:
        lock.release()
        _kill_group(job.pid)
        job.wait(timeout=10)


def test_a_pod_failing_in_any_other_way_is_refused_and_the_agent_goes_on(spool_dir, pod) -> None:
    import threading

    from uploader.agent import Agent as NodeAgent
    from uploader.agent_metrics import AgentMetrics

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
