"""The spool writer in the training process: a failing disk, threads, forks, several writers of one pod,
a closed writer's descriptors, and the order of one writer's reports."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
import threading

import pytest

from harness import (
    Pushgateway,
    job_env,
    metric_name,
    parameter_name,
    wait_for,
)
from runai.reporter import Reporter
from runai.reporter.spool import (
    SpoolTail,
    SpoolWriter,
    decode,
)
from runai.reporter.spool import writer as spool
from tests._helpers import cli_env, read_all, spool_lines, uploader_cli


def test_writer_survives_enospc_and_counts_the_loss(tmp_path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    writer = SpoolWriter(str(tmp_path / "pod"), "pod")
    writer.write_metric("a", 1.0)
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "_write", full_disk)  # the writer's one call of write(2)
    for i in range(100):
        writer.write_metric("b", float(i))
    monkeypatch.setattr(spool, "_write", real_write)
    writer.write_metric("c", 3.0)
    writer.close()
    assert (writer.lost, writer.records) == (100, 2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()
    assert [(r.name, r.value) for r in read_all(writer.path)] == [("a", 1.0), ("c", 3.0)]


def test_a_torn_write_does_not_poison_the_next_record(tmp_path, monkeypatch) -> None:
    writer = SpoolWriter(str(tmp_path / "pod"), "pod")
    real_write = os.write

    def full_disk(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool, "_write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
    writer.write_metric("torn", 1.0)
    monkeypatch.setattr(spool, "_write", full_disk)  # then nothing fits at all for a while
    writer.write_metric("lost", 1.5)
    monkeypatch.setattr(spool, "_write", real_write)
    writer.write_metric("after", 2.0)
    writer.close()
    assert writer.lost == 2
    tail = SpoolTail(writer.path)
    assert tail.read_header()
    assert [(r.name, r.value) for r in tail.read()] == [("after", 2.0)]
    assert tail.skipped == 1 and tail.ended


def test_unwritable_spool_never_raises(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    writer = SpoolWriter(str(blocker / "pod"), "pod")
    for i in range(10):
        writer.write_metric("a", float(i))
    writer.close()
    assert writer.lost == 10 and writer.path == ""
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


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
        victims = [
            os.open(str(tmp_path / f"victim{trial}-{i}"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            for i in range(4)
        ]
        stop.set()
        for t in threads:
            t.join()
        hits += sum(os.fstat(fd).st_size > 0 for fd in victims)
        for fd in victims:
            os.close(fd)
    assert hits == 0, f"reports landed in {hits} unrelated files in {trials} trials"


@pytest.mark.e2e
def test_threads_report_concurrently_without_loss(env: dict[str, str]) -> None:
    per_thread, threads = 5000, 8

    with Reporter() as reporter:

        def work(i: int) -> None:
            for n in range(per_thread):
                reporter.reportMetric(f"t{i}", n)

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        lines = spool_lines(reporter)
    records = [decode(line) for line in lines]
    body = [r for r in records if r.kind == "metric"]
    assert len(body) == per_thread * threads
    assert sorted(r.seq for r in records) == list(range(len(records)))  # unique, no gaps
    for i in range(threads):
        assert [r.value for r in body if r.name == f"t{i}"] == [float(n) for n in range(per_thread)]


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


@pytest.mark.e2e
def test_a_forked_child_gets_its_own_spool_file(
    env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    from harness import job_env

    done = subprocess.run(
        [sys.executable, "-c", FORK_JOB], env=job_env(**env), capture_output=True, text=True, timeout=60
    )
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


@pytest.mark.e2e
def test_many_writers_of_one_pod_are_all_delivered(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    from harness import job_env

    code = "import runai.reporter, sys\nfor i in range(3000): runai.reporter.reportMetric(f'rank_{sys.argv[1]}', i)\n"
    jobs = [subprocess.Popen([sys.executable, "-c", code, str(rank)], env=job_env(**env)) for rank in range(4)]
    for job in jobs:
        assert job.wait(60) == 0
    for rank in range(4):
        assert gateway.value(pod, metric_name(f"rank_{rank}")) == 2999


@pytest.mark.e2e
def test_two_processes_report_for_one_pod(env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str) -> None:
    code = """
import sys, runai.reporter
with runai.reporter.Reporter() as r:
    print('ready', flush=True)
    sys.stdin.readline()
    for i in range(2000):
        r.reportMetric('rank_{rank}', i)
        r.reportMetric('shared', i)
    print(r.finish(), flush=True)
"""
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", code.format(rank=rank)],
            env=job_env(**env),
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for rank in range(2)
    ]
    try:
        for job in jobs:
            assert job.stdout is not None and job.stdout.readline().strip() == "ready"
        for job in jobs:
            job.communicate("go\n", timeout=60)
    finally:
        for job in jobs:
            job.kill()
    outputs = [job.returncode for job in jobs]
    assert outputs == [0, 0]
    series = gateway.series(pod)
    assert series[metric_name("rank_0")][1] == 1999
    assert series[metric_name("rank_1")][1] == 1999
    assert series[metric_name("shared")][1] == 1999
    log = open(os.path.join(spool_dir, pod, "uploader.log")).read()
    assert log.count("uploader started") == 1  # both writers used the one uploader


@pytest.mark.e2e
def test_a_clock_stepping_back_does_not_make_an_older_value_win(gateway: Pushgateway, spool_dir: str, pod: str) -> None:
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
