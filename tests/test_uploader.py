"""The uploader's loop (`runai-uploader run` and the Uploader class): following, polling, coalescing, giving up,
its log, its descriptor limit and its memory."""

from __future__ import annotations

import errno
import logging
import os
import resource
import signal
import subprocess
import sys
import threading

import pytest

from harness import Pushgateway, job_env, metric_name, uploader_pids, wait_for
from runai.reporter import Reporter
from runai.reporter.spool import SpoolWriter
from tests._helpers import _stop_and_time, cli_env, finished_spool, peak_rss_mib, start_uploader
from tests._raw_gateway import RawGateway
from uploader.delivery import DeliveryOptions
from uploader.delivery.service import Uploader
from uploader.sinks.pushgateway import MAX_PUSH_BYTES, MAX_PUSH_VALUES, Pusher

pytestmark = pytest.mark.e2e


def test_a_stopped_uploader_catches_up(env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str) -> None:
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


def test_without_inotify_the_uploader_polls(
    tmp_path, gateway: Pushgateway, pod: str, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
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


def test_uploader_exits_when_its_pod_directory_is_removed(
    env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    import shutil

    reporter = Reporter()
    reporter.reportMetric("x", 1)
    wait_for(lambda: gateway.value(pod, metric_name("x")) == 1, 10, "x on the gateway")
    pids = uploader_pids(spool_dir)
    assert len(pids) == 1
    shutil.rmtree(reporter.settings.pod_dir)
    reporter.reportMetric("x", 2)  # into a deleted file: no error for the training loop
    wait_for(lambda: not uploader_pids(spool_dir), 10, "the uploader to exit rather than spin")
    assert reporter.finish(timeout=1) is False
    assert not uploader_pids(spool_dir)  # and finish() did not start another into the void


def _wait_delivered(gateway: Pushgateway, pod: str, name: str, value: float) -> None:
    wait_for(lambda: gateway.value(pod, metric_name(name)) == value, 30, f"{name}={value} to be delivered")


def _soft_open_files_limit(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        fields = next(line for line in f if line.startswith("Max open files")).split()
    return int(fields[3]), int(fields[4])


def test_the_uploader_raises_its_open_files_limit_to_the_hard_limit(
    gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256:
        pytest.skip("the hard limit on open files leaves no room to raise")
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)  # stays open: `run` keeps following
    try:
        writer.write_metric("x", 3.0)
        proc = subprocess.Popen(
            [sys.executable, "-m", "uploader", "run"],
            env=job_env(**cli_env(spool_dir, pod, gateway.address)),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)),
        )
        try:
            _wait_delivered(gateway, pod, "x", 3.0)
            assert _soft_open_files_limit(proc.pid) == (hard, hard)
        finally:
            _stop_and_time(proc)
    finally:
        writer.close()


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
def test_a_bad_uploader_log_does_not_stop_delivery(gateway: Pushgateway, spool_dir: str, pod: str, kind: str) -> None:
    finished_spool(spool_dir, pod, {"x": 5.0})
    log = os.path.join(spool_dir, pod, "uploader.log")
    if kind == "directory":
        os.mkdir(log)
    elif kind == "symlink":
        os.symlink(os.path.join(spool_dir, "elsewhere.log"), log)
    else:
        os.mkfifo(log)
    proc = start_uploader(cli_env(spool_dir, pod, gateway.address), "run")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "cannot write the log" in err and "logging to stderr instead" in err, err
    assert gateway.value(pod, metric_name("x")) == 5.0


def test_a_stray_entry_named_like_a_spool_file_is_warned_about_once(
    gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    writer = SpoolWriter(pod_dir, pod)  # stays open: `run` keeps scanning
    try:
        os.mkdir(os.path.join(pod_dir, "w1-straydir.jsonl"))
        os.symlink(writer.path, os.path.join(pod_dir, "w2-straylink.jsonl"))
        proc = start_uploader(cli_env(spool_dir, pod, gateway.address), "run", "--push-interval=0.1")
        try:
            for value in (1.0, 2.0, 3.0):  # three deliveries: three scans at least
                writer.write_metric("x", value)
                _wait_delivered(gateway, pod, "x", value)
        finally:
            _stop_and_time(proc)
    finally:
        writer.close()
    log = open(os.path.join(pod_dir, "uploader.log")).read().splitlines()
    for stray in ("w1-straydir", "w2-straylink"):
        lines = [line for line in log if stray in line]
        assert len(lines) == 1, lines


def test_500000_distinct_names_in_bounded_memory(spool_dir: str, pod: str) -> None:
    count = 500_000
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    for i in range(count):
        writer.write_metric(f"name_{i}", float(i))
    writer.close()
    with RawGateway("accept") as sink:
        # `run`, as the Reporter starts it (it reads 64 MiB per scan; `recover` reads 4 MiB).
        done, peak = peak_rss_mib(cli_env(spool_dir, pod, sink.url), "run", timeout=300)
    print(
        f"peak RSS for {count} distinct names: {peak:.0f} MiB; {sink.requests} pushes, the largest "
        f"{sink.largest_body} bytes and {sink.most_values} values"
    )
    assert done.returncode == 0, done.stderr
    assert sink.values == count
    assert sink.largest_body <= MAX_PUSH_BYTES and sink.most_values <= MAX_PUSH_VALUES
    # runai 0.4.1's uploader peaked at 628 MB and made one 45 MB push.
    assert peak < 150, f"the uploader peaked at {peak:.0f} MiB for {count} distinct names"
