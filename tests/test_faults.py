"""Faults: a misbehaving gateway (through a fault-injecting proxy), a stopped uploader,
no inotify, forks and a full disk. The gateway behind the proxy is always the real one."""
from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

from runai.reporter import Reporter
from runai.reporter.spool import SpoolWriter
from harness import FaultProxy, Pushgateway, metric_name, parameter_name, process_cpu_seconds, uploader_pids, wait_for
from tests._helpers import spool_records
from uploader.sinks.pushgateway import Pusher
from uploader.delivery.service import Uploader
from uploader.delivery import DeliveryOptions


@pytest.fixture
def proxy(gateway: Pushgateway) -> Iterator[FaultProxy]:
    p = FaultProxy(gateway.address).start()
    yield p
    p.stop()


def uploader_log(reporter: Reporter) -> str:
    path = os.path.join(reporter.settings.pod_dir, "uploader.log")
    return open(path).read() if os.path.exists(path) else ""


@pytest.mark.parametrize("fault", ["refuse", "reset", "500", "slow"])
def test_everything_arrives_once_the_gateway_fault_ends(env: dict[str, str], gateway: Pushgateway, pod: str,
                                                         spool_dir: str, proxy: FaultProxy, fault: str) -> None:
    reporter = Reporter(gateway_url=proxy.address, push_timeout=1)
    reporter.reportMetric("warmup", 1)
    wait_for(lambda: gateway.value(pod, metric_name("warmup")) == 1, 10, "the first push")
    if fault == "refuse":
        proxy.refuse()
    else:
        proxy.fault = fault
    for i in range(2000):
        reporter.reportMetric("loss", i)
        reporter.reportParameter("phase", f"phase {i}")
    wait_for(lambda: "retrying with backoff" in uploader_log(reporter), 20, "the uploader to meet the fault")

    # While the gateway is broken the uploader backs off instead of spinning.
    (pid,) = uploader_pids(spool_dir)
    before, started = process_cpu_seconds(pid), time.monotonic()
    time.sleep(3)  # a measurement window, not synchronisation
    share = (process_cpu_seconds(pid) - before) / (time.monotonic() - started)
    assert share < 0.05, f"the uploader used {share:.1%} of a core while the gateway was down"
    if fault != "slow":  # a slow gateway applied the push; only its answer came too late
        assert gateway.value(pod, metric_name("loss")) is None
    assert "pending" not in uploader_log(reporter)  # (it has not given up)

    proxy.heal()
    assert reporter.finish(timeout=30) is True
    assert gateway.value(pod, metric_name("loss")) == 1999
    assert gateway.series(pod)[parameter_name("phase")][0]["param_value"] == "phase 1999"


def test_a_stopped_uploader_catches_up(env: dict[str, str], gateway: Pushgateway, pod: str,
                                       spool_dir: str) -> None:
    reporter = Reporter()
    reporter.reportMetric("x", -1)
    wait_for(lambda: gateway.value(pod, metric_name("x")) == -1, 10, "the first push")
    (pid,) = uploader_pids(spool_dir)
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(50_000):
            reporter.reportMetric("x", i)
        assert gateway.value(pod, metric_name("x")) == -1
    finally:
        os.kill(pid, signal.SIGCONT)
    assert reporter.finish(timeout=30) is True
    assert gateway.value(pod, metric_name("x")) == 49_999


def test_without_inotify_the_uploader_polls(tmp_path, gateway: Pushgateway, pod: str, monkeypatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    import watchdog.observers

    def exhausted(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, "inotify instance limit reached")

    monkeypatch.setattr(watchdog.observers, "Observer", exhausted)
    caplog.set_level(logging.WARNING, logger="uploader")
    pod_dir = str(tmp_path / pod)
    writer = SpoolWriter(pod_dir, pod)
    uploader = Uploader(pod_dir, Pusher(gateway.url, pod), DeliveryOptions(poll_interval=0.1))
    thread = threading.Thread(target=uploader.run, name="uploader-under-test")
    thread.start()
    try:
        writer.write_metric("polled", 7.0)
        wait_for(lambda: gateway.value(pod, metric_name("polled")) == 7, 10, "a polled delivery")
    finally:
        writer.close()
        thread.join(10)
    assert not thread.is_alive()
    assert any("file events are unavailable" in r.getMessage() for r in caplog.records)


FORK_JOB = """
import os, runai.reporter
runai.reporter.reportMetric('parent', 1)
pid = os.fork()
if pid == 0:  # a data-loader worker, say
    runai.reporter.reportMetric('child', 2)
    os._exit(0 if runai.reporter.finish(timeout=20) else 1)
_, status = os.waitpid(pid, 0)
runai.reporter.reportMetric('parent', 3)
print(os.waitstatus_to_exitcode(status), runai.reporter.finish(timeout=20))
"""


def test_a_forked_child_gets_its_own_spool_file(env: dict[str, str], gateway: Pushgateway, pod: str,
                                                spool_dir: str) -> None:
    from harness import job_env

    done = subprocess.run([sys.executable, "-c", FORK_JOB], env=job_env(**env), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "True"]
    assert gateway.value(pod, metric_name("child")) == 2
    assert gateway.value(pod, metric_name("parent")) == 3
    pod_dir = os.path.join(spool_dir, pod)
    spools = [n for n in os.listdir(pod_dir) if n.endswith(".jsonl")]
    assert len(spools) == 2  # one per process, never interleaved
    for name in spools:
        seqs = [r.seq for r in spool_records_of(os.path.join(pod_dir, name))]
        assert seqs == list(range(len(seqs)))


def spool_records_of(path: str) -> list:
    from runai.reporter.spool import decode

    with open(path, "rb") as f:
        return [decode(line) for line in f.read().splitlines()]


@pytest.fixture
def small_disk(tmp_path) -> Iterator[str]:
    mount = str(tmp_path / "small")
    os.makedirs(mount)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", mount],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the disk-full test needs root and mount")
    yield mount
    subprocess.run(["umount", "-l", mount], check=False)


def test_a_full_disk_loses_reports_but_never_training(env: dict[str, str], gateway: Pushgateway, pod: str,
                                                      small_disk: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    filler = os.path.join(small_disk, "filler")
    reporter = Reporter(spool_dir=small_disk)
    reporter.reportMetric("before", 1)
    wait_for(lambda: gateway.value(pod, metric_name("before")) == 1, 10, "the first push")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # take the rest of the disk
        while os.write(fd, b"\0" * 512):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    try:
        for i in range(1000):
            reporter.reportMetric("during", i)  # never raises
        os.unlink(filler)  # space returns
        reporter.reportMetric("after", 2)
    finally:
        assert reporter.finish(timeout=20) is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("reports are being lost" in w for w in warnings) == 1  # once, not per report
    lost = [w for w in warnings if "reports were lost" in w]
    assert len(lost) == 1 and lost[0].startswith(f"{reporter._writer.lost} of ")
    assert reporter._writer.lost >= 900
    assert gateway.value(pod, metric_name("after")) == 2  # the record after space returned is whole
    names = [r.name for r in spool_records(reporter.settings.pod_dir)]
    assert names[-1] == "after" or names[-2] == "after"


def test_many_writers_of_one_pod_are_all_delivered(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    from harness import job_env

    code = "import runai.reporter, sys\nfor i in range(3000): runai.reporter.reportMetric(f'rank_{sys.argv[1]}', i)\n"
    jobs = [subprocess.Popen([sys.executable, "-c", code, str(rank)], env=job_env(**env)) for rank in range(4)]
    for job in jobs:
        assert job.wait(60) == 0
    for rank in range(4):
        assert gateway.value(pod, metric_name(f"rank_{rank}")) == 2999
