"""`runai-uploader agent`: the node agent, a real subprocess, against the real gateway behind counting proxies,
takes over the pods whose uploader died.

"Pods" are real processes: a training job (a Reporter, or a bare spool writer) and its own uploader, killed
whole with SIGKILL as a dying pod's are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from harness import FaultProxy, job_env, metric_name, parameter_name, wait_for
from runai.reporter.spool import holder_pid, spool_file_names
from tests._helpers import dead_job
from uploader.views.status import pod_status

pytestmark = pytest.mark.e2e


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


def _kill_group(pid: int) -> None:
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_dead_pod_is_delivered_once_the_gateway_is_back(
    env, gateway, proxy, start_agent, spool_dir, pod, tmp_path
) -> None:
    proxy.refuse()  # the gateway is down for the whole life of the pod
    # A long grace: however slowly the job's own uploader starts on a loaded machine, the agent leaves it the pod.
    agent = start_agent(proxy.address, "--grace-seconds=30")
    pod_dir, marker = os.path.join(spool_dir, pod), str(tmp_path / "reported")
    job = subprocess.Popen(
        [sys.executable, "-c", REPORTING_JOB, marker, "300"],
        env=job_env(**{**env, "reporterGatewayURL": proxy.address}),
        start_new_session=True,
    )
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
    wait_for(
        lambda: gateway.value(pod, metric_name("loss")) == 299 and gateway.value(pod, parameter_name("optimizer")) == 1,
        15,
        "every last value on the gateway",
    )
    assert time.monotonic() - healed < 15
    wait_for(lambda: pod_status(spool_dir, pod).reports_pending == 0, 10, "the checkpoint to cover the spool")
    assert pod_status(spool_dir, pod).reports_delivered == 301
    wait_for(lambda: agent.delivered_all(pod), 10, "nothing pending")


def test_pod_created_after_start_is_found_and_delivered(env, gateway, proxy, start_agent, spool_dir) -> None:
    agent = start_agent(proxy.address)
    late = f"{env['podUUID']}-late"
    started = time.monotonic()
    dead_job(spool_dir, late, 40)  # a pod whose job died without ever starting an uploader
    wait_for(lambda: gateway.value(late, metric_name("loss")) == 39, 15, "the new pod's reports on the gateway")
    assert time.monotonic() - started < 15
    assert agent.sample("runai_uploader_pods") == 1
    # Counted after the checkpoint, which comes after the gateway's answer: a moment after the value shows there.
    wait_for(
        lambda: agent.sample("runai_uploader_delivered_reports_total", podUUID=late, sink="gateway") == 40,
        10,
        "the 40 reports counted",
    )


def test_live_pod_is_left_to_its_uploader_until_that_dies(
    env, gateway, proxy, start_agent, spool_dir, pod, tmp_path
) -> None:
    own = FaultProxy(gateway.address).start()  # the pod's own uploader pushes through this one, the agent not
    pod_dir = os.path.join(spool_dir, pod)
    job = subprocess.Popen([sys.executable, "-c", STEPPING_JOB, pod_dir, pod], env=job_env(), process_group=0)
    uploader = None
    try:
        wait_for(lambda: spool_file_names(pod_dir), 30, "the job's spool file")
        uploader = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uploader",
                "run",
                f"--spool-dir={spool_dir}",
                f"--pod-uuid={pod}",
                f"--gateway={own.address}",
            ],
            env=job_env(),
            process_group=job.pid,
        )  # in the pod's process group
        wait_for(lambda: holder_pid(pod_dir) == uploader.pid, 30, "the pod's own uploader")
        agent = start_agent(proxy.address)
        # The agent judges the pod (its gauge), and probes its lock every second for a few seconds meanwhile.
        wait_for(lambda: (agent.sample("runai_uploader_judged_pods_total") or 0) >= 1, 10, "a look")
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
    assert agent.sample("runai_uploader_pending_reports", podUUID=pod) is None  # nothing pending: no series


def test_metrics_count_pending_failures_and_deliveries(env, gateway, proxy, start_agent, spool_dir, pod) -> None:
    proxy.refuse()
    agent = start_agent(proxy.address)
    dead_job(spool_dir, pod, 25)
    wait_for(
        lambda: (agent.sample("runai_uploader_push_failures_total", sink="gateway") or 0) >= 2, 15, "failed pushes"
    )
    assert agent.sample("runai_uploader_pending_reports", podUUID=pod) == 25
    assert (agent.sample("runai_uploader_pending_bytes", podUUID=pod) or 0) > 0
    assert agent.sample("runai_uploader_pods") == 1
    proxy.heal()
    before = time.time()
    wait_for(lambda: agent.delivered_all(pod), 15, "nothing pending")
    samples = agent.scrape()
    assert {name for name, _ in samples} >= {
        "runai_uploader_delivered_reports_total",
        "runai_uploader_push_failures_total",
        "runai_uploader_last_success_timestamp_seconds",
        "runai_uploader_pods",
    }
    # Nothing pending, no pending series (issue 22, point 3); its delivered ones stay a while for the scrapes.
    assert agent.sample("runai_uploader_pending_bytes", podUUID=pod) is None
    assert agent.sample("runai_uploader_delivered_reports_total", podUUID=pod, sink="gateway") == 25
    assert (
        agent.sample("runai_uploader_last_success_timestamp_seconds", podUUID=pod, sink="gateway") or 0
    ) >= before - 1
    assert gateway.value(pod, metric_name("loss")) == 24


def test_sigterm_stops_within_2_s_and_a_restart_resends_nothing(
    env, gateway, proxy, start_agent, spool_dir, pod
) -> None:
    agent = start_agent(proxy.address)
    dead_job(spool_dir, pod, 30)
    wait_for(lambda: gateway.value(pod, metric_name("loss")) == 29, 15, "the first pod delivered")
    wait_for(lambda: agent.delivered_all(pod), 10, "its gauge gone")
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
    wait_for(lambda: again.sample("runai_uploader_idle_pods") == 2, 10, "both pods judged idle")
    assert again.sample("runai_uploader_pending_reports", podUUID=pod) is None
    assert again.sample("runai_uploader_delivered_reports_total", podUUID=pod, sink="gateway") is None
    assert gateway.value(pod, metric_name("loss")) is None, "the restarted agent resent a delivered pod"
    assert again.sample("runai_uploader_delivered_reports_total", podUUID=busy, sink="gateway") == 10


def test_a_new_live_writer_gets_its_grace_before_the_agent_takes_its_pod(
    env, proxy, start_agent, spool_dir, pod
) -> None:
    from uploader.agent.config import GRACE_SECONDS

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


def test_each_sink_gets_the_dead_pod_and_its_own_counts(
    env, gateway, proxy, start_agent, spool_dir, pod, tmp_path
) -> None:
    from harness import Prometheus
    from tests._remote_write_jobs import expected, samples

    os.makedirs(tmp_path / "prometheus")
    with Prometheus(str(tmp_path / "prometheus"), remote_write=True, out_of_order_window="2h") as receiver:
        agent = start_agent(proxy.address, f"--remote-write={receiver.write_url}")
        dead_job(spool_dir, pod, 30)
        wait_for(
            lambda: (
                agent.sample("runai_uploader_pending_reports", podUUID=pod) is None
                and agent.sample("runai_uploader_delivered_reports_total", podUUID=pod, sink="remote_write") == 30
            ),
            15,
            "the pod delivered to both sinks",
        )
        assert agent.sample("runai_uploader_delivered_reports_total", podUUID=pod, sink="gateway") == 30
        assert gateway.value(pod, metric_name("loss")) == 29
        # Every report at its own millisecond (reports of one millisecond keep the last), ending with the last.
        per_ms = dict(expected(os.path.join(spool_dir, pod)))  # in time order: each millisecond keeps its last
        assert samples(receiver, pod) == sorted(per_ms.items()) and samples(receiver, pod)[-1][1] == 29
        for sink in ("gateway", "remote_write"):
            assert agent.sample("runai_uploader_last_success_timestamp_seconds", podUUID=pod, sink=sink)


def test_the_grace_counts_from_the_spool_files_birth_not_from_when_the_agent_noticed(
    env, proxy, start_agent, spool_dir, pod
) -> None:
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
