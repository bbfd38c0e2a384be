"""SIGTERM and stop() end the uploader within 2 s: mid-push, mid-connect, mid-scan, and under a lock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterator

import pytest

from harness import Pushgateway, job_env, wait_for
from runai.reporter.spool import SpoolWriter, checkpoint_path, encode_metric
from tests._helpers import _stop_and_time, cli_env, finished_spool, start_uploader
from tests._raw_gateway import RawGateway
from uploader.delivery import DeliveryOptions
from uploader.delivery.service import EXIT_PENDING, Uploader
from uploader.sinks.pushgateway import Pusher


def _sigterm_mid_push(spool_dir: str, pod: str, command: str) -> tuple[float, int, str]:
    """SIGTERM `runai-uploader COMMAND` while a gateway holds its push: (seconds it took to end, status, stderr)."""
    with RawGateway("hold") as held:
        proc = start_uploader(cli_env(spool_dir, pod, held.url), command, "--push-timeout", "60")
        try:
            wait_for(lambda: held.requests, 20, f"the {command}'s push to reach the gateway")
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            _, err = proc.communicate(timeout=10)
            took = time.monotonic() - started
        finally:
            proc.kill()
            proc.communicate()
    return took, proc.returncode, err


@pytest.mark.e2e
def test_sigterm_ends_run_mid_push_within_2s(spool_dir: str, pod: str) -> None:
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)  # stays open: a live writer keeps `run` following
    try:
        writer.write_metric("x", 1.0)
        took, _, _ = _sigterm_mid_push(spool_dir, pod, "run")
    finally:
        writer.close()
    assert took < 2, f"runai-uploader run took {took:.1f} s to end after SIGTERM"
    log = open(os.path.join(spool_dir, pod, "uploader.log")).read()
    assert f"stopped by signal {int(signal.SIGTERM)}" in log


# Runs `runai-uploader run` with a trace function that sends SIGTERM while the
# main thread is inside a threading.Event's lock (Event.set or Event.clear), and
# lets the handler run there. A handler that takes such a lock deadlocks.
_SIGNAL_UNDER_A_LOCK = """
import inspect, os, signal, sys, threading
from uploader.cli import main

targets = set()
for method in (threading.Event.set, threading.Event.clear):
    lines, first = inspect.getsourcelines(method)
    targets.update((method.__code__, first + i) for i, line in enumerate(lines) if "self._flag =" in line)
codes = {code for code, _ in targets}
fired = []

def run_pending_handlers():
    pass  # entering a Python function runs pending signal handlers, here under the lock

def tracer(frame, event, arg):
    if event == "call":
        return tracer if frame.f_code in codes else None
    if (event == "line" and not fired and (frame.f_code, frame.f_lineno) in targets
            and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        fired.append(frame.f_code.co_name)
        os.kill(os.getpid(), signal.SIGTERM)
        run_pending_handlers()
    return tracer

sys.settrace(tracer)
code = main(["run"])
sys.settrace(None)
print("signalled in Event." + (fired[0] if fired else "(never)"))
sys.exit(code)
"""


@pytest.mark.e2e
def test_a_signal_while_the_main_thread_holds_a_lock_does_not_deadlock(
    gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)  # stays open: `run` keeps following
    try:
        writer.write_metric("x", 1.0)
        proc = subprocess.Popen(
            [sys.executable, "-c", _SIGNAL_UNDER_A_LOCK],
            env=job_env(**cli_env(spool_dir, pod, gateway.address)),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(
                "the uploader deadlocked: SIGTERM arrived while its main thread held a threading.Event's "
                "lock, and the handler waited for that lock"
            )
    finally:
        writer.close()
    assert "signalled in Event." in out and "(never)" not in out, out + err
    assert proc.returncode in (0, 1), err  # it ended by itself, not killed by the signal


@pytest.mark.e2e
def test_sigterm_ends_recover_mid_push_within_2s(spool_dir: str, pod: str) -> None:
    path = finished_spool(spool_dir, pod, {"x": 1.0})
    took, status, err = _sigterm_mid_push(spool_dir, pod, "recover")
    assert took < 2, f"runai-uploader recover took {took:.1f} s to end after SIGTERM"
    # It ended by itself (not killed by the signal): it says so, and nothing was checkpointed.
    assert status == 128 + signal.SIGTERM, err
    assert "interrupted; what was not delivered stays in the spool" in err
    assert not os.path.exists(checkpoint_path(path))


@pytest.mark.e2e
def test_stop_cuts_a_push_in_flight(tmp_path: os.PathLike[str], pod: str) -> None:
    pod_dir = os.path.join(str(tmp_path), pod)
    writer = SpoolWriter(pod_dir, pod)
    writer.write_metric("x", 1.0)
    writer.close()
    with RawGateway("hold") as held:
        uploader = Uploader(
            pod_dir, Pusher(held.url, pod, timeout=60), DeliveryOptions(follow=False, use_watchdog=False)
        )
        results: list[int] = []
        thread = threading.Thread(target=lambda: results.append(uploader.run()), daemon=True)
        thread.start()
        wait_for(lambda: held.requests, 10, "the push to reach the gateway")
        started = time.monotonic()
        uploader.stop()
        thread.join(5)
        took = time.monotonic() - started
        alive = thread.is_alive()
    thread.join(10)
    assert not alive and took < 1, f"stop() took {took:.1f} s with a push in flight"
    assert results == [EXIT_PENDING]
    assert not os.path.exists(checkpoint_path(writer.path))


def _syn_sent_to(port: int) -> int:
    """Connections of this network namespace stuck in SYN_SENT towards 127.0.0.1:*port*."""
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[2].endswith(f":{port:04X}") and fields[3] == "02":
                count += 1
    return count


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A port whose listener never completes another handshake: its accept queue is full, so SYNs are dropped."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    wait_for(lambda: _syn_sent_to(port), 10, "a filler connection to be left in SYN_SENT")
    yield port
    for s in fillers:
        s.close()
    server.close()


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["run", "recover"])
def test_sigterm_during_a_tcp_connect_ends_the_uploader_within_2s(
    spool_dir: str, pod: str, full_listener: int, command: str
) -> None:
    finished_spool(spool_dir, pod, {"x": 1.0})
    stuck = _syn_sent_to(full_listener)
    proc = start_uploader(cli_env(spool_dir, pod, f"127.0.0.1:{full_listener}"), command, "--push-timeout=30")
    wait_for(lambda: _syn_sent_to(full_listener) > stuck, 20, "the uploader's connect() to hang in SYN_SENT")
    took = _stop_and_time(proc)
    assert took < 2, f"runai-uploader {command} took {took:.1f} s to end after SIGTERM while connecting"


def _big_backlog(spool_dir: str, pod: str, size: int) -> str:
    """A finished spool file of about *size* bytes of one metric's reports."""
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.close()
    with open(writer.path, "rb") as f:
        header = f.readline()
    block = b"".join(encode_metric(i, 1_700_000_000_000_000 + i, "loss", 0.5) for i in range(1, 100_001))
    with open(writer.path, "wb") as f:
        f.write(header)
        for _ in range(size // len(block) + 1):
            f.write(block)
    return writer.path


def _read_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


@pytest.mark.e2e
def test_sigterm_during_a_scan_of_a_big_backlog_ends_run_within_2s(spool_dir: str, pod: str) -> None:
    _big_backlog(spool_dir, pod, 128 << 20)
    proc = start_uploader(cli_env(spool_dir, pod, "127.0.0.1:9"), "run")
    # Well into the first scan (several 4 MiB reads), far from its end.
    wait_for(lambda: _read_bytes(proc.pid) > 12 << 20, 30, "the uploader to be reading its backlog")
    took = _stop_and_time(proc)
    assert took < 2, f"runai-uploader run took {took:.1f} s to end after SIGTERM in the middle of a scan"
    log = open(os.path.join(spool_dir, pod, "uploader.log")).read()
    assert f"stopped by signal {int(signal.SIGTERM)}" in log


@pytest.mark.e2e
def test_sigterm_while_looking_for_the_end_of_a_huge_unterminated_line_ends_run_within_2s(
    spool_dir: str, pod: str
) -> None:
    path = finished_spool(spool_dir, pod, {"x": 1.0})
    with open(path, "r+b") as f:  # a sparse NUL tail without a newline: searched, never held
        f.truncate(os.path.getsize(path) + (8 << 30))
    proc = start_uploader(cli_env(spool_dir, pod, "127.0.0.1:9"), "run")
    wait_for(lambda: _read_bytes(proc.pid) > 256 << 20, 60, "the uploader to be searching the tail")
    took = _stop_and_time(proc)
    assert took < 2, f"runai-uploader run took {took:.1f} s to end after SIGTERM while searching an 8 GiB line"


def _set_until(wakeup: object, done: threading.Event, errors: list[BaseException]) -> None:
    try:
        while not done.is_set():
            wakeup.set()  # type: ignore[attr-defined]
    except BaseException as exc:  # recorded for the assertion in the test
        errors.append(exc)


def test_stop_from_another_thread_while_the_loop_ends_never_writes_elsewhere(tmp_path) -> None:
    """stop() (any thread) racing the end of run(), which closes the wakeup pipe: the descriptor number
    must never be written to once closed (EBADF, or worse, a file that reused the number)."""
    from uploader.runtime.wakeup import Wakeup as _Wakeup

    errors: list[BaseException] = []
    deadline = time.monotonic() + 1.5
    trials = 0
    while time.monotonic() < deadline:
        trials += 1
        wakeup = _Wakeup()
        wakeup.open()
        done = threading.Event()
        thread = threading.Thread(target=_set_until, args=(wakeup, done, errors))
        thread.start()
        wakeup.close()
        victim = tmp_path / f"victim-{trials}"
        fd = os.open(victim, os.O_WRONLY | os.O_CREAT, 0o600)  # likely to reuse a closed number
        done.set()
        thread.join(10)
        os.close(fd)
        assert victim.stat().st_size == 0, f"a wakeup byte landed in another file (trial {trials})"
    assert not errors, errors[:3]
    assert trials > 50
