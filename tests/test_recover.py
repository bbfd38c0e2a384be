"""`runai-uploader recover`: its progress, its summary, one pod or all, and its errors."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from harness import Pushgateway, job_env, metric_name, wait_for
from runai.reporter import Reporter
from tests._helpers import dead_job, recover, uploader_cli, wait_for_give_up
from uploader.views.progress import Progress


def recover_on_a_terminal(env: dict[str, str]) -> tuple[int, str]:
    """Run recover with its stdout and stderr on a pseudo-terminal; its exit status and everything it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # rows, columns
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uploader", "recover"],
            env=job_env(**env, TERM="xterm"),
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
    finally:
        os.close(slave)
    out = bytearray()
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal's other side has closed it
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        status = proc.wait(timeout=60)
    return status, out.decode()


@pytest.mark.e2e
def test_recover_draws_a_bar_on_a_terminal(env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str) -> None:
    dead_job(spool_dir, pod, 20_000)
    status, out = recover_on_a_terminal(env)
    assert status == 0, out
    assert "\r" in out and f"pod {pod} [{'#' * 30}] 100%  20,000 reports" in out
    assert f"pod {pod}: delivered 20000 reports" in out
    assert "summary: 1 pod, 20,000 reports delivered, 0 skipped as corrupt" in out
    assert gateway.value(pod, metric_name("loss")) == 19_999


@pytest.mark.e2e
def test_recover_writes_plain_lines_when_not_on_a_terminal(
    env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    dead_job(spool_dir, pod, 20_000)
    done = uploader_cli(env, "recover")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr and "###" not in done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == (
        "summary: 1 pod, 20,000 reports delivered, 0 skipped as corrupt, "
        "0 names rejected by the gateway, 0 still pending"
    )


@pytest.mark.e2e
def test_recover_summary_counts_what_it_skipped_and_why(
    env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    garbage = (
        r"this is not json\n"
        r'{"seq":7,"ts_us":1,"kind":"metric","name":"nofields"}\n'
        r'{"seq":8,"ts_us":1,"kind":"metric","name":"bad","value":"12"}\n'
        r'{"seq":9,"ts_us":1,"kind":"metric","name":"torn","va'
    )
    pod_dir = dead_job(spool_dir, pod, 50, garbage)
    with open(os.path.join(pod_dir, "w1-notaspool.jsonl"), "wb") as f:
        f.write(b"no header here\n")
    done = uploader_cli(env, "recover")
    assert done.returncode == 0, done.stderr
    summary = done.stdout[done.stdout.index("summary:") :].splitlines()
    assert summary[0] == (
        "summary: 1 pod, 50 reports delivered, 4 skipped as corrupt, 0 names rejected by the gateway, 0 still pending"
    )
    assert sorted(summary[1:4]) == [
        "  skipped 1: an incomplete last line (the writer died mid-record)",
        "  skipped 1: not a spool record",
        "  skipped 2: metric record without a name or a numeric value",
    ]
    assert summary[4] == (
        f"  ignored file {pod_dir}/w1-notaspool.jsonl: the first line is not a spool header "
        "(not a spool record: Expecting value: line 1 column 1 (char 0))"
    )
    assert gateway.value(pod, metric_name("loss")) == 49
    assert gateway.value(pod, metric_name("torn")) is None and gateway.value(pod, metric_name("bad")) is None


@pytest.mark.e2e
def test_recover_summary_adds_up_every_pod(env: dict[str, str], gateway: Pushgateway, spool_dir: str) -> None:
    pods = [f"{env['podUUID']}-{i}" for i in range(3)]
    for i, pod in enumerate(pods):
        dead_job(spool_dir, pod, 100 * (i + 1))
    done = uploader_cli(env, "recover", "--all")
    assert done.returncode == 0, done.stderr
    assert "summary: 3 pods, 600 reports delivered, 0 skipped as corrupt" in done.stdout
    assert [gateway.value(pod, metric_name("loss")) for pod in pods] == [99, 199, 299]


@pytest.mark.e2e
def test_recover_summary_counts_what_is_still_pending(
    env: dict[str, str], own_gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    from runai.reporter.spool import PodLock

    pod_dir = dead_job(spool_dir, pod, 30)
    down = {**env, "reporterGatewayURL": own_gateway.address}  # not started: connections are refused
    done = uploader_cli(down, "recover", "--timeout", "0.5")
    assert done.returncode == 1
    assert (
        "summary: 1 pod, 0 reports delivered, 0 skipped as corrupt, 0 names rejected by the gateway, "
        "30 still pending" in done.stdout
    )
    with PodLock(pod_dir) as lock:  # a live uploader holds the pod
        assert lock.acquire()
        held = uploader_cli(env, "recover", "--timeout", "0.5")
    assert held.returncode == 1 and "is still delivering it after 0.5 s" in held.stderr and "--take-over" in held.stderr
    assert "30 still pending" in held.stdout


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_redraws_in_place_at_most_ten_times_a_second() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress("pod p", 1000, out, bar=True, columns=100, clock=clock)
    progress.update(10, 100)
    progress.update(20, 200)  # within 0.1 s of the last draw: not drawn
    clock.now = 0.1
    progress.update(50, 500)
    progress.close()
    draws = out.getvalue().split("\r")[1:]
    assert len(draws) == 3 and out.getvalue().endswith("\n")
    assert draws[0].startswith("pod p [###...........................]  10%  10 reports  100 B / 1.0 KB")
    assert draws[1].startswith("pod p [###############...............]  50%  50 reports  500 B / 1.0 KB")
    assert draws[2].rstrip("\n") == draws[1]


def test_progress_bar_fits_the_terminal() -> None:
    out = io.StringIO()
    progress = Progress("pod 0f8fad5b-d9cb-469f-a165-70867728950e", 10**9, out, bar=True, columns=80)
    progress.update(123_456, 5 * 10**8)
    progress.close()
    (line,) = out.getvalue().strip("\r\n").split("\r")[:1]
    assert line == "pod 0f8fad5b-d9cb-469f... [#####.....]  50%  123,456 reports  500.0 MB / 1.0 GB"
    assert len(line) == 79


def test_progress_without_a_terminal_writes_a_line_every_five_seconds() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress("pod p", 2_000_000, out, bar=False, clock=clock)
    progress.update(10, 1000)
    clock.now = 4.9
    progress.update(20, 2000)
    clock.now = 5.0
    progress.update(30, 1_000_000)
    clock.now = 9.0
    progress.update(40, 1_500_000)
    progress.close()
    assert out.getvalue() == "pod p: 30 reports delivered so far (50% of 2.0 MB)\n"


def test_progress_is_plain_on_a_dumb_terminal_or_a_file(monkeypatch, tmp_path) -> None:
    with open(tmp_path / "log", "w") as f:
        assert Progress("p", 1, f).bar is False
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setenv("TERM", "xterm")
        assert Progress("p", 1, tty).bar is True
        monkeypatch.setenv("TERM", "dumb")
        assert Progress("p", 1, tty).bar is False
    os.close(master)


@pytest.mark.e2e
def test_recover_waits_for_a_running_uploader(
    env: dict[str, str], gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    from runai.reporter.spool import PodLock

    with Reporter() as reporter:
        reporter.reportMetric("a", 1)
    with PodLock(os.path.join(spool_dir, pod)) as lock:
        wait_for(lock.acquire, 10, "the reporter's uploader to exit")  # then this test plays the uploader
        done = recover(env, "--timeout", "0.5")
    assert done.returncode == 1
    assert f"an uploader (pid {os.getpid()}) is delivering it" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_recover_all_pods(env: dict[str, str], own_gateway: Pushgateway, spool_dir: str) -> None:
    for name in ("pod-a", "pod-b"):
        reporter = Reporter(pod_uuid=name, gateway_url=own_gateway.address, retry_timeout=0.5)
        reporter.reportMetric("x", 1 if name == "pod-a" else 2)
        assert reporter.finish(timeout=0.2) is False
    for name in ("pod-a", "pod-b"):
        wait_for_give_up(os.path.join(spool_dir, name), spool_dir)
    own_gateway.start()
    done = recover({**env, "reporterGatewayURL": own_gateway.address}, "--all")
    assert done.returncode == 0, done.stderr
    assert own_gateway.value("pod-a", metric_name("x")) == 1
    assert own_gateway.value("pod-b", metric_name("x")) == 2
    again = recover({**env, "reporterGatewayURL": own_gateway.address}, "--all")
    assert again.returncode == 0 and again.stdout.count("nothing to send") == 2


@pytest.mark.e2e
def test_recover_errors_are_one_line(env: dict[str, str]) -> None:
    done = recover({**env, "reporterGatewayURL": ""})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "reporterGatewayURL" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.e2e
def test_recover_gives_up_with_a_reason(env: dict[str, str], own_gateway: Pushgateway, spool_dir: str) -> None:
    reporter = Reporter(gateway_url=own_gateway.address, retry_timeout=0.5)
    reporter.reportMetric("x", 1)
    assert reporter.finish(timeout=0.2) is False
    wait_for_give_up(reporter.settings.pod_dir, spool_dir)
    done = recover({**env, "reporterGatewayURL": own_gateway.address}, "--timeout", "1")
    assert done.returncode == 1
    assert "unreachable" in done.stderr and "1 reports still pending" in done.stderr
    assert "Traceback" not in done.stderr
