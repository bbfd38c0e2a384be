"""The training side under faults (issue 10): a full disk and a SIGTERM handler never
hang finish(), bad parameter values are refused at report time, a closed writer never
writes into a reused descriptor, and the uploader is restarted, says why it cannot
start, and cannot be shadowed or confused by the job's directory or podUUID.

Everything runs for real: job subprocesses, real signals, a real full tmpfs, a real
interpreter without prometheus_client, and the real Pushgateway."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from runai.reporter import Reporter
from runai.reporter.spool import SpoolWriter
from harness import (
    Pushgateway,
    free_port,
    job_env,
    kill_uploaders,
    metric_name,
    parameter_name,
    uploader_pids,
    wait_for,
)
from tests._helpers import spool_records, start_job
from tests.test_faults import small_disk  # noqa: F401 (a fixture: a 256 KiB tmpfs)

# The documented limit on one parameter value (docs/api.md), in UTF-8 bytes.
VALUE_LIMIT = 64 << 10


def _finish_job(proc: subprocess.Popen[str], timeout: float, what: str) -> tuple[str, str]:
    """The job's (stdout, stderr) once it exits; a job still running after *timeout* is killed and fails the test."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{what}: the job still ran after {timeout} s\nstdout: {out}\nstderr: {err[-3000:]}")


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("WARNING ")]


# -- 1: a full disk ------------------------------------------------------------

FULL_DISK_JOB = """
import logging, time, runai.reporter
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
reporter = runai.reporter.Reporter()
for i in range(50_000):
    reporter.reportMetric("loss", i)
started = time.monotonic()
ok = reporter.finish(timeout=10)
print(ok, round(time.monotonic() - started, 2), reporter._writer.lost, flush=True)
"""


def test_finish_returns_on_a_full_disk(env: dict[str, str], small_disk: str, tmp_path) -> None:  # noqa: F811
    """Issue 10, point 1: close() failed to write the end record and hung on its own lock."""
    proc = start_job(FULL_DISK_JOB, job_env(**{**env, "reporterSpoolDir": small_disk}))
    try:
        out, err = _finish_job(proc, 40, "finish(timeout=10) on a full disk")
    finally:
        kill_uploaders(str(tmp_path))  # it cannot checkpoint on the full disk, so it would keep trying
    assert proc.returncode == 0, err
    ok, seconds, lost = out.split()
    assert ok == "False"
    assert float(seconds) < 12, f"finish(timeout=10) took {seconds} s"
    assert int(lost) > 0
    warnings = _warnings(err)
    assert sum("reports are being lost" in w for w in warnings) == 1, warnings  # the writer's, once
    from_finish = [w for w in warnings if "runai.reporter._reporter" in w]
    assert len(from_finish) == 1, warnings
    assert "timed out" in from_finish[0] and f"{lost} more were lost" in from_finish[0]


# -- 2: finish() from a SIGTERM handler while finish() runs ----------------------

SIGTERM_JOB = """
import logging, os, signal, sys, time
import runai.reporter
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
scoped = sys.argv[1] == "reporter"
api = runai.reporter.Reporter() if scoped else runai.reporter

def on_sigterm(signum, frame):  # as a job under Kubernetes preemption would
    started = time.monotonic()
    ok = api.finish(timeout=2)
    os.write(1, f"handler {ok} {time.monotonic() - started:.2f}\\n".encode())
    os._exit(0)

signal.signal(signal.SIGTERM, on_sigterm)
api.reportMetric("x", 1)
api.finish(timeout=60)
os.write(1, b"the first finish() returned\\n")
"""


@pytest.mark.parametrize("api", ["reporter", "module"])
def test_finish_in_a_sigterm_handler_does_not_wait_for_the_running_one(env: dict[str, str], pod: str,
                                                                         spool_dir: str, api: str) -> None:
    """Issue 10, point 2: the handler's finish() deadlocked on _finish_lock (Reporter), or
    answered True at once with nothing delivered (the module-level finish())."""
    down = f"127.0.0.1:{free_port()}"  # nothing listens: finish() keeps waiting
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_JOB, api],
                            env=job_env(**{**env, "reporterGatewayURL": down, "reporterRetryTimeout": "1"}),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        pod_dir = os.path.join(spool_dir, pod)
        # The end record is written by the first finish(), which then waits for the uploader.
        wait_for(lambda: os.path.isdir(pod_dir) and any(r.kind == "end" for r in spool_records(pod_dir)), 20,
                 "the job's finish() to close its spool")
        proc.send_signal(signal.SIGTERM)
        out, err = _finish_job(proc, 15, "finish(timeout=2) in a SIGTERM handler")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.startswith("handler "), (out, err)
    _, ok, seconds = out.split()
    assert ok == "False"  # nothing reached the gateway
    assert 1.9 <= float(seconds) < 3.5, f"the handler's finish(timeout=2) took {seconds} s"
    assert any("timed out" in w for w in _warnings(err)), err


# -- 4 and 5: parameter values that cannot be sent -------------------------------


def test_a_parameter_value_that_is_not_utf8_is_refused(env: dict[str, str], gateway: Pushgateway, pod: str,
                                                        spool_dir: str) -> None:
    """Issue 10, point 4: a lone surrogate went into the spool and crashed every push of the pod."""
    reporter = Reporter()
    with pytest.raises(ValueError, match="cannot be encoded as UTF-8.*errors='replace'"):
        reporter.reportParameter("path", os.fsdecode(b"caf\xe9"))
    reporter.reportParameter("path", "café")
    assert reporter.finish(timeout=20) is True
    assert gateway.series(pod)[parameter_name("path")][0]["param_value"] == "café"
    params = [r.value for r in spool_records(os.path.join(spool_dir, pod)) if r.kind == "parameter"]
    assert params == ["café"]


def test_a_parameter_value_over_the_limit_is_refused_at_once(env: dict[str, str], gateway: Pushgateway, pod: str,
                                                             spool_dir: str) -> None:
    """Issue 10, point 5: a 30-million-character value made a 189 MB spool line."""
    from runai.reporter import spool

    assert spool.MAX_VALUE_BYTES == VALUE_LIMIT  # the documented figure
    reporter = Reporter()
    reporter.reportParameter("fits", "x" * VALUE_LIMIT)
    with pytest.raises(ValueError, match=f"{VALUE_LIMIT + 2} bytes as UTF-8, more than the {VALUE_LIMIT}"):
        reporter.reportParameter("two_bytes_each", "é" * (VALUE_LIMIT // 2 + 1))
    started = time.monotonic()
    with pytest.raises(ValueError, match="30000000 characters"):
        reporter.reportParameter("huge", "x" * 30_000_000)
    assert time.monotonic() - started < 0.1  # refused without encoding it
    assert reporter.finish(timeout=20) is True
    params = [r.name for r in spool_records(os.path.join(spool_dir, pod)) if r.kind == "parameter"]
    assert params == ["fits"]
    assert max(os.path.getsize(os.path.join(spool_dir, pod, n)) for n in os.listdir(os.path.join(spool_dir, pod))
               if n.endswith(".jsonl")) < 2 * VALUE_LIMIT


# -- 9: close() while other threads report ---------------------------------------


def test_close_never_lets_a_late_report_into_a_reused_descriptor(tmp_path) -> None:
    """Issue 10, point 9: close() released the descriptor while threads could still write
    through it, and a report landed in the next file the program opened."""
    hits = 0
    trials = 150
    for trial in range(trials):
        writer = SpoolWriter(str(tmp_path / f"pod{trial}"), "pod")
        stop = threading.Event()

        def report(w: SpoolWriter = writer, s: threading.Event = stop) -> None:
            while not s.is_set():
                w.write_metric("late", 1.0)

        threads = [threading.Thread(target=report) for _ in range(6)]
        for t in threads:
            t.start()
        wait_for(lambda w=writer: os.path.getsize(w.path) > 4096, 10, "the threads to report")
        writer.close()
        # Files the program opens right after close(): the lowest free numbers, the spool's among them.
        victims = [os.open(str(tmp_path / f"victim{trial}-{i}"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                   for i in range(4)]
        stop.set()
        for t in threads:
            t.join()
        hits += sum(os.fstat(fd).st_size > 0 for fd in victims)
        for fd in victims:
            os.close(fd)
    assert hits == 0, f"reports landed in {hits} unrelated files in {trials} trials"


# -- 11: an uploader killed during the job ----------------------------------------


def test_a_killed_uploader_is_replaced_while_the_job_reports(env: dict[str, str], gateway: Pushgateway, pod: str,
                                                            spool_dir: str) -> None:
    """Issue 10, point 11: a dead uploader was replaced only by finish()."""
    reporter = Reporter()
    try:
        reporter.reportMetric("step", 0)
        wait_for(lambda: gateway.value(pod, metric_name("step")) == 0, 10, "the first push")
        (pid,) = uploader_pids(spool_dir)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: pid not in uploader_pids(spool_dir), 5, "the uploader to die")
        killed = time.monotonic()
        step = 0

        def report_and_check() -> bool:  # the job goes on reporting, a few times a second
            nonlocal step
            step += 1
            reporter.reportMetric("step", step)
            return (gateway.value(pod, metric_name("step")) or 0) > 0

        wait_for(report_and_check, 5, "a report made after the kill to reach the gateway")
        assert time.monotonic() - killed < 5
        assert [p for p in uploader_pids(spool_dir) if p != pid]
    finally:
        assert reporter.finish(timeout=20) is True
    assert gateway.value(pod, metric_name("step")) == step


# -- 12: an uploader that cannot start -------------------------------------------


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real interpreter with no packages at all: no prometheus_client, no watchdog."""
    venv = str(tmp_path_factory.mktemp("bare") / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = os.path.join(venv, "bin", "python")
    assert subprocess.run([python, "-c", "import prometheus_client"], capture_output=True).returncode != 0
    return python


STARTLESS_JOB = """
import logging, runai.reporter
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
reporter = runai.reporter.Reporter()
reporter.reportMetric("x", 1)
print(reporter.finish(timeout=8), flush=True)
"""


def test_an_uploader_that_cannot_start_says_why(env: dict[str, str], pod: str, spool_dir: str,
                                               bare_python: str) -> None:
    """Issue 10, point 12: its error went to /dev/null, it was respawned every 0.5 s, and
    finish() said "the uploader keeps trying"."""
    proc = subprocess.Popen([bare_python, "-c", STARTLESS_JOB], env=job_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out, err = _finish_job(proc, 40, "finish(timeout=8) without an uploader")
    assert proc.returncode == 0, err
    assert out.strip() == "False"
    (warning,) = [w for w in _warnings(err) if "timed out" in w]
    assert "the uploader could not start" in warning
    assert "No module named 'prometheus_client'" in warning
    assert "keeps trying" not in warning
    with open(os.path.join(spool_dir, pod, "uploader.log")) as f:
        log = f.read()
    assert "ModuleNotFoundError: No module named 'prometheus_client'" in log
    starts = log.count("Traceback")
    # Backing off (1, 2, 4 s...) starts at most 5 in these 8 s; every 0.5 s would be 16.
    assert 2 <= starts <= 5, log


CRASHING_UPLOADER = """
import os, signal, sys
if "uploader" in sys.argv and "run" in sys.argv:  # only the uploader: a crashing C extension, or the OOM killer
    with open(os.environ["UPLOADER_STARTS"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    os.kill(os.getpid(), signal.SIGSEGV)
"""

REPORTING_JOB = """
import logging, time, runai.reporter
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
reporter = runai.reporter.Reporter()
end = time.monotonic() + 8
while time.monotonic() < end:  # a report every 10 ms: the report path probes the uploader once a second
    reporter.reportMetric("x", 1)
    time.sleep(0.01)
print(reporter.finish(timeout=1), flush=True)
"""


def test_an_uploader_killed_by_a_signal_at_start_is_restarted_with_backoff(env: dict[str, str], tmp_path) -> None:
    """An uploader that died by a signal was restarted about once a second for ever, and finish() said
    "the uploader keeps trying"."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CRASHING_UPLOADER)
    starts = tmp_path / "starts"
    job_environ = job_env(**env, UPLOADER_STARTS=str(starts))
    job_environ["PYTHONPATH"] = os.pathsep.join((str(site), job_environ["PYTHONPATH"]))
    proc = subprocess.Popen([sys.executable, "-c", REPORTING_JOB], env=job_environ, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out, err = _finish_job(proc, 40, "a job whose uploader always crashes")
    assert out.strip() == "False", err
    count = len(starts.read_text().split())
    # Backing off 1, 2, 4 s starts at most 5 in these 9 s; one a second would be 9 or more.
    assert 2 <= count <= 5, count
    (warning,) = [w for w in _warnings(err) if "timed out" in w]
    assert "killed by SIGSEGV" in warning and "keeps trying" not in warning, warning


# -- 13 and 15: what the job's podUUID and directory must not do ------------------


def test_a_pod_uuid_starting_with_a_dash_is_delivered(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    """Issue 10, point 13: `--pod-uuid -x` killed the uploader at argument parsing."""
    dashed = "-" + pod
    reporter = Reporter(pod_uuid=dashed)
    reporter.reportMetric("x", 13)
    assert reporter.finish(timeout=10) is True
    assert gateway.value(dashed, metric_name("x")) == 13


STRAY_UPLOADER = """
open(__file__ + ".ran", "w").close()
"""

SCRIPT_JOB = """
import runai.reporter
reporter = runai.reporter.Reporter()
reporter.reportMetric("x", 15)
print(reporter.finish(timeout=10), flush=True)
"""


def test_a_stray_uploader_py_in_the_working_directory_does_not_run(env: dict[str, str], gateway: Pushgateway,
                                                                   pod: str, tmp_path) -> None:
    """Issue 10, point 15: `python -m uploader` ran the job directory's uploader.py instead."""
    workdir, scripts = tmp_path / "workdir", tmp_path / "scripts"
    workdir.mkdir()
    scripts.mkdir()
    (workdir / "uploader.py").write_text(STRAY_UPLOADER)
    (scripts / "train.py").write_text(SCRIPT_JOB)
    done = subprocess.run([sys.executable, str(scripts / "train.py")], cwd=str(workdir), env=job_env(**env),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", done.stderr
    assert gateway.value(pod, metric_name("x")) == 15
    assert not (workdir / "uploader.py.ran").exists()


def test_the_working_directory_cannot_shadow_the_uploaders_modules(env: dict[str, str], gateway: Pushgateway,
                                                                   pod: str, tmp_path) -> None:
    """An empty PYTHONPATH entry (a trailing ':') puts the working directory on sys.path as an absolute path:
    a stray module there (here one named like a dependency of the uploader) must not run in the uploader."""
    workdir, scripts = tmp_path / "workdir", tmp_path / "scripts"
    workdir.mkdir()
    scripts.mkdir()
    for module in ("uploader.py", "prometheus_client.py", "watchdog.py"):
        (workdir / module).write_text(STRAY_UPLOADER)
    (scripts / "train.py").write_text(SCRIPT_JOB)
    job_environ = job_env(**env)
    job_environ["PYTHONPATH"] += os.pathsep  # "REPO:" as sloppy job scripts write it
    done = subprocess.run([sys.executable, str(scripts / "train.py")], cwd=str(workdir), env=job_environ,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True", done.stderr
    assert gateway.value(pod, metric_name("x")) == 15
    assert not list(workdir.glob("*.ran")), "a stray module ran in the uploader"
