"""Test-only helpers: the uploader's CLI, job subprocesses, spool contents.

The real servers, the fault proxy and the process helpers that benchmarks and
the demo use too live in the top-level ``harness`` package.
"""
from __future__ import annotations

import os
import subprocess
import sys

from harness import job_env, uploader_pids, wait_for
from runai.reporter.spool import SpoolFile, SpoolWriter

__all__ = ["closed_spool", "spool_records", "start_job", "uploader_cli", "wait_for_give_up"]


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
