"""Test-only helpers shared by several test modules: the uploader's CLI and processes, job subprocesses,
spool files and their contents, checkpoints as stored.

The real servers, the fault proxy and the process helpers that benchmarks and
the demo use too live in the top-level ``harness`` package.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from harness import job_env, uploader_pids, wait_for
from runai.reporter import Reporter
from runai.reporter.spool import SpoolFile, SpoolTail, SpoolWriter, checkpoint_path

__all__ = [
    "tmpfs_spool",
    "checkpoint",
    "cli_env",
    "closed_spool",
    "dead_job",
    "DEAD_JOB",
    "_finish_job",
    "finished_spool",
    "peak_rss_mib",
    "read_all",
    "recover",
    "_spool",
    "spool_lines",
    "spool_records",
    "start_job",
    "start_uploader",
    "_stop_and_time",
    "uploader_cli",
    "wait_for_give_up",
    "_warnings",
]


def uploader_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``runai-uploader ARGS`` (as ``python -m uploader``) with *env* over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "uploader", *args],
        env=job_env(**env),
        text=True,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_job(code: str, env: dict[str, str], *, wrapper: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """Run *code* in a fresh interpreter, as a training job would run."""
    return subprocess.Popen(
        [*wrapper, sys.executable, "-c", code],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


def spool_records(pod_dir: str) -> list:
    """Every valid record of every spool file in *pod_dir*, in file order."""
    from runai.reporter.spool import decode, is_spool_file

    records = []
    for name in sorted(os.listdir(pod_dir)):
        if is_spool_file(name):
            with open(os.path.join(pod_dir, name), "rb") as f:
                for line in f.read().splitlines():
                    try:
                        records.append(decode(line))
                    except ValueError:
                        pass
    return records


def wait_for_give_up(pod_dir: str, marker: str, timeout: float = 15) -> None:
    """Wait until the pod's uploader has logged that it gives up, and has exited.

    Waiting only for "no uploader running" could pass before the uploader has
    even started.
    """
    log = os.path.join(pod_dir, "uploader.log")

    def gave_up() -> bool:
        try:
            with open(log) as f:
                return "giving up" in f.read()
        except FileNotFoundError:
            return False

    wait_for(gave_up, timeout, f"the uploader of {pod_dir} to give up")
    wait_for(lambda: not uploader_pids(marker), timeout, "the uploader to exit")


def closed_spool(pod_dir: str, pod: str, reports: int = 3) -> SpoolFile:
    """A spool file in *pod_dir* holding *reports* metrics of one name, its writer closed."""
    writer = SpoolWriter(pod_dir, pod)
    for i in range(reports):
        writer.write_metric("m", float(i))
    writer.close()
    (spool,) = writer.files
    return spool


def spool_lines(reporter: Reporter) -> list[bytes]:
    with open(reporter._writer.path, "rb") as f:
        return f.read().splitlines()


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
    return subprocess.Popen(
        [sys.executable, "-m", "uploader", *args],
        env=job_env(**env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


def peak_rss_mib(
    env: dict[str, str], *args: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``runai-uploader ARGS``; its result and its peak resident memory (MiB), as the kernel counted it."""
    wrapper = (
        "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-m", "uploader", *args],
        env=job_env(**env),
        text=True,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    peak = next(line for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_KIB"))
    return done, int(peak.split()[1]) / 1024


def read_all(path: str) -> list:
    tail = SpoolTail(path)
    try:
        assert tail.read_header()
        return tail.read()
    finally:
        tail.close()


def recover(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return uploader_cli(env, "recover", *args, timeout=timeout)


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


def _spool(tmp_path: Path) -> str:
    return str(tmp_path / "w1-00000000.jsonl")


# A job that dies without ever starting an uploader: its spool is all that is left.
DEAD_JOB = """
import os, signal, sys
from runai.reporter.spool import SpoolWriter
writer = SpoolWriter(sys.argv[1], sys.argv[2])
for i in range(int(sys.argv[3])):
    writer.write_metric('loss', i)
os.write(writer._fd, sys.argv[4].encode().decode('unicode_escape').encode('latin-1'))
os.kill(os.getpid(), signal.SIGKILL)
"""


def dead_job(spool_dir: str, pod: str, reports: int, damage: str = "") -> str:
    """Run DEAD_JOB; *damage* (with escapes) is appended raw before the kill. Returns the pod directory."""
    pod_dir = os.path.join(spool_dir, pod)
    done = subprocess.run(
        [sys.executable, "-c", DEAD_JOB, pod_dir, pod, str(reports), damage],
        env=job_env(),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == -9, done.stderr
    return pod_dir


@contextmanager
def tmpfs_spool(parent: str, mode: int = 0o755) -> Iterator[str]:
    """A spool directory (of *mode*) on a tmpfs of its own under *parent*: hundreds of thousands of files are made
    in a second or two there (30 s for 200,000 on the CI's disk), and removed at once by the unmount. Skips where
    no tmpfs can be mounted (it needs root)."""
    mount = os.path.join(parent, "fs")
    os.mkdir(mount)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", mount], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): a flood of files needs root and mount")
    path = os.path.join(mount, "spool")
    os.mkdir(path)
    os.chmod(path, mode)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", mount], check=True)
