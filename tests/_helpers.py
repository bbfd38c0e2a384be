"""Test helpers: job subprocesses, uploader processes, spool contents.

The real servers (and ``wait_for``) live in ``tests._servers``; they are
re-exported here.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests._servers import Prometheus, Pushgateway, free_port, wait_for

__all__ = [
    "REPO", "Prometheus", "Pushgateway", "free_port", "job_env", "kill_uploaders", "metric_name",
    "parameter_name", "process_cpu_seconds", "spool_records", "start_job", "uploader_cli", "uploader_pids",
    "wait_for", "wait_for_give_up",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def metric_name(name: str) -> str:
    return f"reporter_push_gateway_metric_{name}"


def parameter_name(name: str) -> str:
    return f"reporter_push_gateway_parameter_{name}"


def job_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env.update(overrides)
    return env


def uploader_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``runai-uploader ARGS`` (as ``python -m uploader``) with *env* over this process's environment."""
    return subprocess.run([sys.executable, "-m", "uploader", *args], env=job_env(**env), text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_job(code: str, env: dict[str, str], *, wrapper: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """Run *code* in a fresh interpreter, as a training job would run."""
    return subprocess.Popen(
        [*wrapper, sys.executable, "-c", code], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )


def uploader_pids(marker: str) -> list[int]:
    """Pids of live uploader processes whose command line mentions *marker*."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state == b"Z":
            continue
        if b"uploader" in argv and b"run" in argv and any(marker.encode() in a for a in argv):
            pids.append(int(entry))
    return pids


def kill_uploaders(marker: str) -> list[int]:
    pids = uploader_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


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


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a live process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
