"""A hostile or broken gateway, and poison records, against the real uploader (issue 10, points 3-8 and 10).

The gateways here are real sockets on 127.0.0.1: the real Pushgateway, the
fault proxy in front of it, and raw socket servers that hold a push, trickle
an answer a byte at a time, or send a 300 MB error page. The uploaders are
real ``runai-uploader`` processes, stopped with real signals.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Iterator

import pytest

from runai.reporter.spool import checkpoint_path
from runai.reporter.spool import METRIC, SpoolWriter
from runai.reporter.spool import Metric as Record
from harness import FaultProxy, Pushgateway, job_env, metric_name, parameter_name, wait_for
from tests._helpers import uploader_cli
from uploader.sinks.pushgateway import MAX_ANSWER_BYTES, MAX_PUSH_BYTES, MAX_PUSH_VALUES, Pusher
from uploader.delivery.service import EXIT_PENDING, Uploader
from uploader.delivery import DeliveryOptions

HUGE_ANSWER = 300 << 20  # the error page that took the uploader to 641 MB


class RawGateway:
    """A TCP server on 127.0.0.1 that reads each HTTP request whole, then misbehaves.

    * ``hold``: never answers (until stopped);
    * ``trickle``: answers 200, then trickles a header line one byte every 0.1 s;
    * ``huge``: answers 500 with a :data:`HUGE_ANSWER`-byte body, as fast as the client reads;
    * ``accept``: answers 204 to every request at once, keeping the connection
      (a sink that keeps up with any uploader, where the real gateway's own
      cost would dominate a measurement of the uploader's).
    """

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.largest_body = 0
        self.most_values = 0
        self.values = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._clients: list[socket.socket] = []
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def stop(self) -> None:
        self._stop.set()
        for client in self._clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(10)
        self._listener.close()
        for client in self._clients:
            client.close()

    def __enter__(self) -> RawGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._clients.append(client)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = client.recv(1 << 20)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                while len(data) < length:
                    chunk = client.recv(1 << 20)
                    if not chunk:
                        return
                    data += chunk
                body, data = data[:length], data[length:]
                values = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
                self.largest_body = max(self.largest_body, len(body))
                self.most_values = max(self.most_values, values)
                self.values += values
                self.requests += 1
                if self.behaviour != "accept":
                    getattr(self, f"_{self.behaviour}")(client)
                    return
                client.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        except OSError:
            pass  # the client hung up: what these servers are for

    def _hold(self, client: socket.socket) -> None:
        self._stop.wait()

    def _trickle(self, client: socket.socket) -> None:
        client.sendall(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
        while not self._stop.wait(0.1):
            client.sendall(b"x")

    def _huge(self, client: socket.socket) -> None:
        client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % HUGE_ANSWER)
        block = b"e" * (1 << 20)
        for _ in range(HUGE_ANSWER // len(block)):
            if self._stop.is_set():
                return
            client.sendall(block)


@pytest.fixture
def proxy(gateway: Pushgateway) -> Iterator[FaultProxy]:
    p = FaultProxy(gateway.address).start()
    yield p
    p.stop()


def finished_spool(spool_dir: str, pod: str, reports: dict[str, float | str]) -> str:
    """A spool written by the real SpoolWriter, whose writer is gone; its path."""
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    for name, value in reports.items():
        if isinstance(value, str):
            writer.write_parameter(name, value)
        else:
            writer.write_metric(name, value)
    writer.close()
    return writer.path


def checkpoint(spool_path: str) -> dict[str, int] | None:
    """The spool file's checkpoint as stored, or None."""
    try:
        with open(checkpoint_path(spool_path)) as f:
            return json.load(f)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def cli_env(spool_dir: str, pod: str, gateway_url: str) -> dict[str, str]:
    return {"podUUID": pod, "reporterGatewayURL": gateway_url, "reporterSpoolDir": spool_dir}


def start_uploader(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "uploader", *args], env=job_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def peak_rss_mib(env: dict[str, str], *args: str,
                 timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``runai-uploader ARGS``; its result and its peak resident memory (MiB), as the kernel counted it."""
    wrapper = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
               "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "uploader", *args],
                          env=job_env(**env), text=True, capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    peak = next(line for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KIB"))
    return done, int(peak.split()[1]) / 1024


# -- point 3: SIGTERM ends the uploader within 2 s, even mid-push -------------------


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


def test_a_signal_while_the_main_thread_holds_a_lock_does_not_deadlock(gateway: Pushgateway, spool_dir: str,
                                                                        pod: str) -> None:
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)  # stays open: `run` keeps following
    try:
        writer.write_metric("x", 1.0)
        proc = subprocess.Popen([sys.executable, "-c", _SIGNAL_UNDER_A_LOCK],
                                env=job_env(**cli_env(spool_dir, pod, gateway.address)), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail("the uploader deadlocked: SIGTERM arrived while its main thread held a threading.Event's "
                        "lock, and the handler waited for that lock")
    finally:
        writer.close()
    assert "signalled in Event." in out and "(never)" not in out, out + err
    assert proc.returncode in (0, 1), err  # it ended by itself, not killed by the signal


def test_sigterm_ends_recover_mid_push_within_2s(spool_dir: str, pod: str) -> None:
    path = finished_spool(spool_dir, pod, {"x": 1.0})
    took, status, err = _sigterm_mid_push(spool_dir, pod, "recover")
    assert took < 2, f"runai-uploader recover took {took:.1f} s to end after SIGTERM"
    # It ended by itself (not killed by the signal): it says so, and nothing was checkpointed.
    assert status == 128 + signal.SIGTERM, err
    assert "interrupted; what was not delivered stays in the spool" in err
    assert not os.path.exists(checkpoint_path(path))


# -- point 4: a record that cannot be encoded is rejected by name ---------------------


def test_an_unencodable_parameter_is_rejected_and_the_rest_delivered(gateway: Pushgateway, spool_dir: str,
                                                                      pod: str) -> None:
    # The Reporter refuses such a value; a spool written directly can still hold one.
    path = finished_spool(spool_dir, pod, {"before": 1.0, "bad": os.fsdecode(b"caf\xe9"), "good": "ok", "after": 2.0})
    done = uploader_cli(cli_env(spool_dir, pod, gateway.address), "run")
    assert done.returncode == 0, done.stderr
    series = gateway.series(pod)
    assert series[metric_name("before")][1] == 1 and series[metric_name("after")][1] == 2
    assert series[parameter_name("good")][0]["param_value"] == "ok"
    assert parameter_name("bad") not in series
    ckpt = checkpoint(path)
    assert ckpt is not None and ckpt["offset"] == os.path.getsize(path) and ckpt["rejected"] == 1
    log = open(os.path.join(spool_dir, pod, "uploader.log")).read()
    assert "cannot push parameter 'bad'" in log and "cannot be encoded as UTF-8" in log


def test_an_unencodable_pod_uuid_is_a_clear_error(gateway: Pushgateway, spool_dir: str) -> None:
    pod = os.fsdecode(b"pod-caf\xe9")
    finished_spool(spool_dir, pod, {"x": 1.0})
    env = cli_env(spool_dir, pod, gateway.address)
    for command in ("recover", "run"):  # a usage error, said once, never a crash or a respawn loop
        done = uploader_cli(env, command)
        assert done.returncode == 2, (command, done.stderr)
        assert "undecodable bytes" in done.stderr and "Traceback" not in done.stderr, done.stderr
    # It costs only that pod: `recover --all` delivers the others.
    good = f"pod-{uuid.uuid4()}"
    finished_spool(spool_dir, good, {"y": 2.0})
    done = uploader_cli(env, "recover", "--all")
    assert done.returncode == 1 and "1 of 2 pods not fully delivered" in done.stderr, done.stderr
    assert gateway.value(good, metric_name("y")) == 2
    gateway.delete_group(good)


# -- point 5: push size caps, 413 and timeouts split --------------------------------


def test_pushes_are_capped_in_bytes_and_values(gateway: Pushgateway, proxy: FaultProxy, spool_dir: str,
                                               pod: str) -> None:
    count = 25_000
    finished_spool(spool_dir, pod, {f"m{i}": float(i) for i in range(count)})
    done = uploader_cli(cli_env(spool_dir, pod, proxy.address), "recover", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    assert proxy.largest_push <= MAX_PUSH_BYTES and proxy.most_values <= MAX_PUSH_VALUES
    assert proxy.pushes >= count // MAX_PUSH_VALUES
    series = gateway.series(pod)
    assert sum(name.startswith(metric_name("m")) for name in series) == count
    gateway.delete_group(pod)


def test_a_413_splits_the_push_and_rejects_only_the_value_too_big(gateway: Pushgateway, proxy: FaultProxy,
                                                                   spool_dir: str, pod: str) -> None:
    proxy.fault, proxy.max_body = "413", 8 << 10
    reports: dict[str, float | str] = {f"m{i}": float(i) for i in range(300)}
    reports["big"] = "b" * (10 << 10)  # over the proxy's limit even alone
    path = finished_spool(spool_dir, pod, reports)
    done = uploader_cli(cli_env(spool_dir, pod, proxy.address), "recover", "--timeout", "10")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "1 names rejected by the gateway" in done.stdout and parameter_name("big") in done.stdout
    series = gateway.series(pod)
    assert all(series[metric_name(f"m{i}")][1] == i for i in range(300))
    assert parameter_name("big") not in series
    ckpt = checkpoint(path)
    assert ckpt is not None and ckpt["rejected"] == 1


def test_a_push_that_times_out_is_split(gateway: Pushgateway, proxy: FaultProxy, spool_dir: str, pod: str) -> None:
    # A gateway that cannot take a big push in time, but takes small ones.
    proxy.fault, proxy.max_body, proxy.slow_seconds = "hold_big", 8 << 10, 30
    finished_spool(spool_dir, pod, {f"m{i}": float(i) for i in range(150)})
    done = uploader_cli(cli_env(spool_dir, pod, proxy.address), "recover", "--timeout", "20", "--push-timeout", "0.5")
    assert done.returncode == 0, done.stderr
    assert "0 names rejected" in done.stdout
    series = gateway.series(pod)
    assert all(series[metric_name(f"m{i}")][1] == i for i in range(150))


# -- point 6: the push timeout bounds the whole request; stop() cuts a push ----------


def test_a_trickling_gateway_cannot_hold_a_push(pod: str) -> None:
    with RawGateway("trickle") as trickle:
        pusher = Pusher(trickle.url, pod, timeout=1)
        outcome: list[BaseException] = []

        def push() -> None:
            try:
                pusher.push([Record(1, time.time(), METRIC, "x", 1.0)])
            except BaseException as exc:  # recorded for the assertion below
                outcome.append(exc)

        thread = threading.Thread(target=push, daemon=True)
        started = time.monotonic()
        thread.start()
        thread.join(5)
        took = time.monotonic() - started
        alive = thread.is_alive()
    thread.join(10)
    pusher.close()
    assert not alive, "a push was still reading a trickled answer 5 s after it began, with a 1 s timeout"
    assert took < 2
    assert len(outcome) == 1 and isinstance(outcome[0], TimeoutError), outcome


def test_stop_cuts_a_push_in_flight(tmp_path: os.PathLike[str], pod: str) -> None:
    pod_dir = os.path.join(str(tmp_path), pod)
    writer = SpoolWriter(pod_dir, pod)
    writer.write_metric("x", 1.0)
    writer.close()
    with RawGateway("hold") as held:
        uploader = Uploader(pod_dir, Pusher(held.url, pod, timeout=60),
                            DeliveryOptions(follow=False, use_watchdog=False))
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


# -- point 7: an answer is read up to 64 KiB -----------------------------------------


def test_a_huge_error_page_does_not_grow_the_uploader(spool_dir: str, pod: str) -> None:
    finished_spool(spool_dir, pod, {"x": 1.0})
    with RawGateway("huge") as huge:
        done, peak = peak_rss_mib(cli_env(spool_dir, pod, huge.url), "recover", "--timeout", "2")
        assert huge.requests >= 1
    assert done.returncode == 1, done.stderr  # the gateway never took the push
    assert "Pushgateway answered 500" in done.stderr
    # Python, prometheus_client and the uploader take about 40 MiB; the page is 300 MiB.
    assert peak < 100, f"the uploader peaked at {peak:.0f} MiB reading a {HUGE_ANSWER >> 20} MiB error page"
    assert MAX_ANSWER_BYTES == 64 << 10


# -- point 8: memory is bounded; checkpoints cover only what was acknowledged ----------


def test_500000_distinct_names_in_bounded_memory(spool_dir: str, pod: str) -> None:
    count = 500_000
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    for i in range(count):
        writer.write_metric(f"name_{i}", float(i))
    writer.close()
    with RawGateway("accept") as sink:
        # `run`, as the Reporter starts it (it reads 64 MiB per scan; `recover` reads 4 MiB).
        done, peak = peak_rss_mib(cli_env(spool_dir, pod, sink.url), "run", timeout=300)
    print(f"peak RSS for {count} distinct names: {peak:.0f} MiB; {sink.requests} pushes, the largest "
          f"{sink.largest_body} bytes and {sink.most_values} values")
    assert done.returncode == 0, done.stderr
    assert sink.values == count
    assert sink.largest_body <= MAX_PUSH_BYTES and sink.most_values <= MAX_PUSH_VALUES
    # runai 0.4.1's uploader peaked at 628 MB and made one 45 MB push.
    assert peak < 150, f"the uploader peaked at {peak:.0f} MiB for {count} distinct names"


def test_a_checkpoint_covers_only_what_the_gateway_acknowledged(tmp_path: os.PathLike[str], gateway: Pushgateway,
                                                                proxy: FaultProxy, pod: str) -> None:
    pod_dir = os.path.join(str(tmp_path), pod)
    writer = SpoolWriter(pod_dir, pod)
    for i in range(5000):
        writer.write_metric(f"m{i}", float(i))
    writer.close()
    proxy.fault, proxy.fail_after = "fail_after", 3
    uploader = Uploader(pod_dir, Pusher(f"http://{proxy.address}", pod, timeout=5),
                        DeliveryOptions(follow=False, use_watchdog=False, retry_timeout=0.5, backoff=(0.01, 0.05),
                                        max_pending=1000))
    assert uploader.run() == EXIT_PENDING
    ckpt = checkpoint(writer.path)
    assert ckpt is not None and 0 < ckpt["records"] < 5000  # some delivered, the rest still pending
    on_gateway = gateway.series(pod)
    with open(writer.path, "rb") as f:
        covered = f.read(ckpt["offset"]).splitlines()[1:]  # after the header
    assert len(covered) == ckpt["records"]
    for line in covered:
        name = json.loads(line)["name"]
        assert metric_name(name) in on_gateway, f"{name} is checkpointed but the gateway never acknowledged it"
    gateway.delete_group(pod)


# -- point 10: one writer's reports are ordered by sequence, not by its clock ----------


def test_a_clock_stepping_back_does_not_make_an_older_value_win(gateway: Pushgateway, spool_dir: str,
                                                                pod: str) -> None:
    job = f"""
import runai.reporter.spool.writer as spool
now = [spool._time_ns()]
spool._time_ns = lambda: now[0]  # the wall clock, frozen here and stepped below
writer = spool.SpoolWriter({os.path.join(spool_dir, pod)!r}, {pod!r})
writer.write_metric("x", 1.0)
writer.write_parameter("phase", "first")
now[0] -= 3600 * 10**9  # NTP steps the clock back an hour
writer.write_metric("x", 2.0)
writer.write_parameter("phase", "second")
writer.close()
"""
    subprocess.run([sys.executable, "-c", job], env=job_env(), check=True, timeout=60)
    done = uploader_cli(cli_env(spool_dir, pod, gateway.address), "recover")
    assert done.returncode == 0, done.stderr
    assert gateway.value(pod, metric_name("x")) == 2
    assert gateway.series(pod)[parameter_name("phase")][0]["param_value"] == "second"
