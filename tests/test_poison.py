"""Follow-up review of issue 10: one bad number, file or answer costs only that thing.

Real processes, real signals, a real Pushgateway (behind a small 504 proxy
where a test needs one), a real listener whose accept queue is full, real
descriptor limits. Each test names the review defect it covers.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from runai.reporter.spool import checkpoint_path, load_checkpoint
from runai.reporter.spool import MAX_LINE_BYTES, METRIC, SpoolWriter, decode, encode_metric, writer_pid
from runai.reporter.spool import Metric as Record
from harness import Pushgateway, job_env, metric_name, wait_for
from tests.test_hostile_gateway import cli_env, finished_spool, peak_rss_mib, start_uploader
from uploader.sinks.pushgateway import Pusher


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


def _wait_delivered(gateway: Pushgateway, pod: str, name: str, value: float) -> None:
    wait_for(lambda: gateway.value(pod, metric_name(name)) == value, 30, f"{name}={value} to be delivered")


def _stop_and_time(proc: subprocess.Popen[str], limit: float = 10) -> float:
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        pass
    took = time.monotonic() - started
    proc.kill()
    proc.communicate()
    return took


# -- 1: SIGTERM ends run and recover within 2 s, during a connect and during a scan ------


@pytest.mark.parametrize("command", ["run", "recover"])
def test_sigterm_during_a_tcp_connect_ends_the_uploader_within_2s(spool_dir: str, pod: str, full_listener: int,
                                                                  command: str) -> None:
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


def test_sigterm_during_a_scan_of_a_big_backlog_ends_run_within_2s(spool_dir: str, pod: str) -> None:
    _big_backlog(spool_dir, pod, 128 << 20)
    proc = start_uploader(cli_env(spool_dir, pod, "127.0.0.1:9"), "run")
    # Well into the first scan (several 4 MiB reads), far from its end.
    wait_for(lambda: _read_bytes(proc.pid) > 12 << 20, 30, "the uploader to be reading its backlog")
    took = _stop_and_time(proc)
    assert took < 2, f"runai-uploader run took {took:.1f} s to end after SIGTERM in the middle of a scan"
    log = open(os.path.join(spool_dir, pod, "uploader.log")).read()
    assert f"stopped by signal {int(signal.SIGTERM)}" in log


def test_sigterm_while_looking_for_the_end_of_a_huge_unterminated_line_ends_run_within_2s(spool_dir: str,
                                                                                          pod: str) -> None:
    path = finished_spool(spool_dir, pod, {"x": 1.0})
    with open(path, "r+b") as f:  # a sparse NUL tail without a newline: searched, never held
        f.truncate(os.path.getsize(path) + (8 << 30))
    proc = start_uploader(cli_env(spool_dir, pod, "127.0.0.1:9"), "run")
    wait_for(lambda: _read_bytes(proc.pid) > 256 << 20, 60, "the uploader to be searching the tail")
    took = _stop_and_time(proc)
    assert took < 2, f"runai-uploader run took {took:.1f} s to end after SIGTERM while searching an 8 GiB line"


# -- 2: one bad number costs that checkpoint, or that line ------------------------------


# 1e999 overflowed int(); 1.5 and true were taken for offset 1: a checkpoint's numbers are JSON integers.
@pytest.mark.parametrize("damage", ["1e999", "-1e999", "1.5", "true"])
def test_a_checkpoint_with_a_number_out_of_range_is_replayed_not_a_crash(gateway: Pushgateway, spool_dir: str,
                                                                          pod: str, damage: str) -> None:
    path = finished_spool(spool_dir, pod, {"x": 7.0})
    spool_id = json.loads(open(path).readline())["spool_id"]
    with open(checkpoint_path(path), "w") as f:
        f.write('{"spool_id":"%s","offset":%s,"records":1,"last_seq":1}' % (spool_id, damage))
    assert load_checkpoint(path, spool_id) is None
    status = start_uploader(cli_env(spool_dir, pod, gateway.address), "status", "--json")
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0 and json.loads(out)["pods"][0]["reports_pending"] == 1, err
    proc = start_uploader(cli_env(spool_dir, pod, gateway.address), "recover", "--timeout=20")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "is unreadable" in err and "Traceback" not in err, err
    assert gateway.value(pod, metric_name("x")) == 7.0


@pytest.mark.parametrize("line", [
    b'{"seq":2,"ts_us":1' + b"0" * 400 + b',"kind":"metric","name":"bad","value":1.5}',
    b'{"seq":1' + b"0" * 400 + b',"ts_us":1,"kind":"parameter","name":"bad","value":"v"}',
    b'{"seq":9223372036854775808,"ts_us":1,"kind":"metric","name":"bad","value":1.5}',
    b'{"seq":-1,"ts_us":1,"kind":"metric","name":"bad","value":1.5}',
])
def test_a_spool_line_with_a_number_out_of_range_is_skipped(gateway: Pushgateway, spool_dir: str, pod: str,
                                                            line: bytes) -> None:
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.write_metric("good", 1.0)
    os.write(writer._fd, line + b"\n")
    writer.write_metric("good2", 2.0)
    writer.close()
    proc = start_uploader(cli_env(spool_dir, pod, gateway.address), "recover", "--timeout=20")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "1 skipped as corrupt" in out, out + err
    assert gateway.value(pod, metric_name("good")) == 1.0
    assert gateway.value(pod, metric_name("good2")) == 2.0
    assert gateway.value(pod, metric_name("bad")) is None


def test_a_metric_value_past_the_float_range_decodes_as_infinity_on_both_paths() -> None:
    digits = b"1" + b"0" * 400
    fast = decode(b'{"seq":1,"ts_us":1,"kind":"metric","name":"x","value":-%s}' % digits)
    slow = decode(b'{"seq":1,"ts_us":1,"kind":"metric","name":"x","value": -%s}' % digits)  # not the writer's shape
    assert fast.value == slow.value == -math.inf


# -- 3: a line is never read whole past MAX_LINE_BYTES ------------------------------------


def test_an_overlong_line_is_skipped_and_an_unterminated_tail_is_never_read_whole(
        gateway: Pushgateway, spool_dir: str, pod: str) -> None:
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.write_metric("before", 1.0)
    os.write(writer._fd, b"\0" * (2 * MAX_LINE_BYTES) + b"\n")  # too long, but it ends
    writer.write_metric("between", 3.0)
    os.write(writer._fd, b"\0" * (5 << 20) + b"\n")  # longer than a read, too
    writer.write_metric("after", 2.0)
    path = writer.path
    writer.close()
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) + (100 << 20))  # longer than one call searches, sparse
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + encode_metric(1 << 20, 1_700_000_000_000_000, "far", 4.0))
        f.truncate(f.tell() + (200 << 20))  # what a crash can leave on ext4/xfs: a NUL tail without a newline
    env = cli_env(spool_dir, pod, gateway.address)
    done, peak = peak_rss_mib(env, "recover", "--timeout=20")
    assert done.returncode == 0, done.stderr
    assert peak < 120, f"recover peaked at {peak:.0f} MiB on a 200 MiB unterminated tail"
    assert f"skipped 3: a line longer than {MAX_LINE_BYTES} bytes" in done.stdout, done.stdout + done.stderr
    assert gateway.value(pod, metric_name("before")) == 1.0
    assert gateway.value(pod, metric_name("between")) == 3.0
    assert gateway.value(pod, metric_name("after")) == 2.0
    assert gateway.value(pod, metric_name("far")) == 4.0
    done, peak = peak_rss_mib(env, "status")
    assert done.returncode == 0, done.stderr
    assert peak < 120, f"status peaked at {peak:.0f} MiB on a 200 MiB unterminated tail"


# -- 4: a signal handler's finish() inside a rotation ------------------------------------

_FINISH_IN_ROTATION = """
import json, os, signal, sys
from runai.reporter import spool

writer = spool.SpoolWriter(sys.argv[1], "pod", max_bytes=4096)
signal.signal(signal.SIGTERM, lambda *a: writer.close())  # what a handler calling finish() does
create = spool.SpoolWriter._create

def create_and_signal(self):
    out = create(self)
    if self.path:  # a rotation, not the first file: the signal lands inside _maybe_rotate
        os.kill(os.getpid(), signal.SIGTERM)
    return out

spool.SpoolWriter._create = create_and_signal
for i in range(4096):  # the 4096th report checks for rotation
    writer.write_metric("loss", float(i))
print(json.dumps({"closed": writer.closed, "fd": writer._fd, "files": [f.path for f in writer.files]}))
"""


def test_finish_from_a_signal_handler_inside_a_rotation_leaves_no_stray_file(spool_dir: str) -> None:
    pod_dir = os.path.join(spool_dir, "pod")
    done = subprocess.run([sys.executable, "-c", _FINISH_IN_ROTATION, pod_dir], env=job_env(), text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["closed"] and state["fd"] == -1, state
    on_disk = sorted(os.path.join(pod_dir, n) for n in os.listdir(pod_dir) if n.endswith(".jsonl"))
    assert on_disk == sorted(state["files"]), "a spool file was created after close() and never ended"
    for path in on_disk:
        with open(path, "rb") as f:
            assert json.loads(f.read().splitlines()[-1])["kind"] == "end", path


# -- 5: out of descriptors -----------------------------------------------------------------

_EMFILE = """
import fcntl, os, resource, sys, time
from runai.reporter.spool import SpoolWriter

writer = SpoolWriter(sys.argv[1], "pod", max_bytes=4096)
for i in range(4096):  # a rotation check, with the file over 4096 bytes: rotated
    writer.write_metric("loss", float(i))
rotated = writer._rotated[0]
while time.monotonic() - rotated[3] < 1.0:  # the writer's own deadline for releasing it
    time.sleep(0.05)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for i in range(4096):  # the next rotation check releases the rotated file: needs a descriptor
    writer.write_metric("loss", float(i))
for fd in held:
    os.close(fd)
for i in range(4096):  # a later pass, with descriptors to spare
    writer.write_metric("loss", float(i))
probe = os.open(rotated[1], os.O_RDONLY)
fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while the writer still holds the file
writer.close()
print("released")
"""


def test_out_of_descriptors_a_report_does_not_raise_and_the_release_is_retried(spool_dir: str) -> None:
    done = subprocess.run([sys.executable, "-c", _EMFILE, os.path.join(spool_dir, "pod")], env=job_env(),
                          text=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and "released" in done.stdout, done.stderr


def _soft_open_files_limit(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        fields = next(line for line in f if line.startswith("Max open files")).split()
    return int(fields[3]), int(fields[4])


def test_the_uploader_raises_its_open_files_limit_to_the_hard_limit(gateway: Pushgateway, spool_dir: str,
                                                                     pod: str) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256:
        pytest.skip("the hard limit on open files leaves no room to raise")
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)  # stays open: `run` keeps following
    try:
        writer.write_metric("x", 3.0)
        proc = subprocess.Popen([sys.executable, "-m", "uploader", "run"],
                                env=job_env(**cli_env(spool_dir, pod, gateway.address)), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
        try:
            _wait_delivered(gateway, pod, "x", 3.0)
            assert _soft_open_files_limit(proc.pid) == (hard, hard)
        finally:
            _stop_and_time(proc)
    finally:
        writer.close()


# -- 6: a bad uploader.log ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
def test_a_bad_uploader_log_does_not_stop_delivery(gateway: Pushgateway, spool_dir: str, pod: str,
                                                    kind: str) -> None:
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


@pytest.mark.parametrize("kind", ["directory", "symlink"])
def test_a_bad_uploader_log_does_not_stop_a_reporters_delivery(gateway: Pushgateway, spool_dir: str, pod: str,
                                                               kind: str) -> None:
    """The Reporter starts the uploader with uploader.log as its stderr: a log it cannot open must cost only the
    log, not the start of the uploader."""
    from runai.reporter import Reporter

    pod_dir = os.path.join(spool_dir, pod)
    os.makedirs(pod_dir, mode=0o700)
    log = os.path.join(pod_dir, "uploader.log")
    if kind == "directory":
        os.mkdir(log)
    else:
        os.symlink(os.path.join(spool_dir, "elsewhere.log"), log)
    reporter = Reporter(pod_uuid=pod, gateway_url=gateway.address, spool_dir=spool_dir)
    reporter.reportMetric("x", 6.0)
    assert reporter.finish(timeout=20) is True
    assert gateway.value(pod, metric_name("x")) == 6.0
    assert not os.path.exists(os.path.join(spool_dir, "elsewhere.log"))


# -- 7: a stray entry named like a spool file ------------------------------------------------


def test_a_stray_entry_named_like_a_spool_file_is_warned_about_once(gateway: Pushgateway, spool_dir: str,
                                                                     pod: str) -> None:
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


# -- 8: writer_pid on digits int() refuses ------------------------------------------------------


def test_writer_pid_is_none_for_digits_that_are_not_ascii() -> None:
    assert writer_pid("w²-abcd.jsonl") is None  # isdigit() but not decimal
    assert writer_pid("w\u0663-abcd.jsonl") is None  # ARABIC-INDIC THREE: decimal, not ASCII
    assert writer_pid("w123-abcd.jsonl") == 123


# -- 9: a proxy's 504 splits a push as a timeout does ------------------------------------------


class _TimeoutProxy:
    """An HTTP proxy to a real Pushgateway that answers 504 to a push of more than *max_values* values."""

    def __init__(self, upstream: str, max_values: int) -> None:
        self.answered_504 = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                values = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
                if values > max_values:
                    proxy.answered_504 += 1
                    status, data = 504, b"upstream timed out\n"
                else:
                    conn = http.client.HTTPConnection(upstream, timeout=10)
                    try:
                        conn.request("POST", self.path, body=body,
                                     headers={"Content-Type": self.headers.get("Content-Type", "")})
                        response = conn.getresponse()
                        status, data = response.status, response.read()
                    finally:
                        conn.close()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def test_a_504_from_a_proxy_splits_the_push_and_everything_arrives(gateway: Pushgateway, pod: str) -> None:
    proxy = _TimeoutProxy(gateway.address, max_values=10)
    pusher = Pusher(proxy.url, pod, timeout=10)
    try:
        records = [Record(i, time.time(), METRIC, f"m{i}", float(i)) for i in range(100)]
        assert pusher.push(records) == []
    finally:
        pusher.close()
        proxy.stop()
    assert proxy.answered_504 > 0
    series = gateway.series(pod)
    assert all(series[metric_name(f"m{i}")][1] == float(i) for i in range(100))


# -- from the second review -------------------------------------------------------------------

REMOVED_CWD_JOB = """
import os, sys, tempfile
gone = tempfile.mkdtemp()
os.chdir(gone)
os.rmdir(gone)  # a launcher's scratch directory, cleaned up under the job
import runai.reporter
reporter = runai.reporter.Reporter()
reporter.reportMetric("x", 7)
print(reporter.finish(timeout=20), flush=True)
"""


def test_a_job_whose_working_directory_was_removed_still_delivers(gateway: Pushgateway, spool_dir: str,
                                                                  pod: str) -> None:
    env = job_env(podUUID=pod, reporterGatewayURL=gateway.address, reporterSpoolDir=spool_dir)
    done = subprocess.run([sys.executable, "-c", REMOVED_CWD_JOB], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stdout + done.stderr
    assert gateway.value(pod, metric_name("x")) == 7


def test_a_checkpoint_replaced_while_it_is_opened_is_never_called_unsafe(spool_dir: str, pod: str,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A rename replacing the checkpoint between open() and fstat() leaves the opened file with no name."""
    from runai.reporter.spool import Checkpoint, store_checkpoint

    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.close()
    stop = threading.Event()

    def store_again_and_again() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            store_checkpoint(writer.path, Checkpoint(writer.spool_id, 0, n, n))

    thread = threading.Thread(target=store_again_and_again)
    thread.start()
    loads = 0
    try:
        with caplog.at_level("WARNING"):
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                load_checkpoint(writer.path, writer.spool_id)
                loads += 1
    finally:
        stop.set()
        thread.join(10)
    unsafe = [r.getMessage() for r in caplog.records if "links" in r.getMessage() or "remove it" in r.getMessage()]
    assert loads > 1000 and not unsafe, (loads, unsafe[:3])


def test_close_from_a_signal_handler_during_the_rotations_swap_leaves_no_live_file(
        spool_dir: str, pod: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() run at the last call inside a rotation (where a signal handler's finish() could run it)."""
    from runai.reporter.spool import writer as spool

    writer = SpoolWriter(os.path.join(spool_dir, pod), pod, max_bytes=4096)
    real_monotonic = time.monotonic
    fire = []

    def monotonic() -> float:
        if fire:
            fire.clear()
            writer.close()  # what a SIGTERM handler's finish() does
        return real_monotonic()

    monkeypatch.setattr(spool.time, "monotonic", monotonic)
    for _ in range(0x1000 - 1):
        writer.write_metric("m", 1.0)
    fire.append(True)
    writer.write_metric("m", 2.0)  # sequence number 4096, a rotation check: past 4096 bytes, the file rotates
    monkeypatch.undo()
    assert writer.closed and writer._fd < 0
    names = sorted(n for n in os.listdir(os.path.join(spool_dir, pod)) if n.endswith(".jsonl"))
    assert [os.path.basename(f.path) for f in writer.files] == names, (writer.files, names)


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
