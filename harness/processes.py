"""The processes tests, benchmarks and the demo start and watch: a job's environment, the uploader
processes a run leaves (found by a marker in their command line), a process's CPU time."""

from __future__ import annotations

import os
import signal

from .waiting import wait_for

__all__ = ["REPO", "job_env", "kill_uploaders", "process_cpu_seconds", "reap_uploaders", "uploader_pids"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def job_env(**overrides: str) -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH, and *overrides*."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env.update(overrides)
    return env


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
    """SIGKILL the uploaders whose command line mentions *marker*; their pids."""
    pids = uploader_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def reap_uploaders(marker: str, timeout: float, what: str) -> None:
    """Wait up to *timeout* s for the uploaders whose command line mentions *marker* to exit by themselves
    (each exits once it has delivered), then kill any still there. Waiting too long raises the
    AssertionError of :func:`wait_for`, after the kill."""
    try:
        wait_for(lambda: not uploader_pids(marker), timeout, what)
    finally:
        kill_uploaders(marker)


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a live process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
