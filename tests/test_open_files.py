"""Out of file descriptors: followed spool files are capped with descriptors in reserve, and EMFILE is never read
as an empty directory nor as a receiver's fault (issue 22, point 2). Real limits: RLIMIT_NOFILE set in the child."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from harness import Pushgateway, job_env, metric_name, wait_for
from runai.reporter.spool import SpoolWriter
from tests._agent import Agent
from tests._helpers import dead_job

pytestmark = pytest.mark.e2e

LIMIT = 1024  # soft and hard: an uploader raises its soft limit to the hard one


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def _many_files(spool_dir: str, pod: str, count: int) -> None:
    """*count* spool files in one pod, each of a dead writer holding one metric of its own name."""
    pod_dir = os.path.join(spool_dir, pod)
    for i in range(count):
        writer = SpoolWriter(pod_dir, pod)
        writer.write_metric(f"m{i}", float(i))
        writer.close()


def test_recover_delivers_more_spool_files_than_its_descriptor_limit(
    env: dict[str, str], gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    _many_files(spool_dir, pod, 1500)
    done = subprocess.run(
        [sys.executable, "-m", "uploader", "recover", "--timeout", "60"],
        env=job_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "delivered 1500 reports" in done.stdout, done.stdout + done.stderr
    assert "unreachable" not in done.stderr, done.stderr
    assert gateway.value(pod, metric_name("m1499")) == 1499.0


def test_an_agent_out_of_descriptors_still_finds_and_delivers_another_pod(
    gateway: Pushgateway, spool_dir: str, pod: str, tmp_path
) -> None:
    _many_files(spool_dir, f"{pod}-flood", 1500)
    agent = Agent(spool_dir, gateway.address, str(tmp_path / "agent.log"), preexec=_limited)
    try:
        dead_job(spool_dir, pod, 3)  # another tenant's pod, dead, while the flood is being delivered
        wait_for(lambda: gateway.value(pod, metric_name("loss")) == 2, 20, "the other pod delivered")
        wait_for(lambda: gateway.value(f"{pod}-flood", metric_name("m1499")) == 1499.0, 60, "the flood delivered")
        assert agent.sample("runai_uploader_pods") == 2
        text = agent.stderr()
        assert "Too many open files" not in text, text[-3000:]  # the cap left descriptors for the rest
        assert "is unreachable" not in text and "its directory is gone" not in text, text[-3000:]
        status, took = agent.terminate()
        assert status == 0 and took < 2.5, (status, took)
    finally:
        agent.close()


PODS_UNDER_EMFILE = r"""
import logging, os, resource, sys
from uploader.agent.judge import pod_dirs
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
spool = sys.argv[1]
before = pod_dirs(spool)
held = []
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
during = [pod_dirs(spool) for _ in range(5)]
print(sorted(before), during)
"""


def test_pod_dirs_out_of_descriptors_gives_no_listing_and_logs_once(spool_dir: str, pod: str) -> None:
    for name in (f"{pod}-a", f"{pod}-b"):
        os.mkdir(os.path.join(spool_dir, name), 0o700)
    done = subprocess.run(
        [sys.executable, "-c", PODS_UNDER_EMFILE, spool_dir], env=job_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    names = sorted([f"{pod}-a", f"{pod}-b"])
    # None: no listing (the agent keeps the pods it has), never an empty one (its pods forgotten)
    assert done.stdout.strip() == f"{names} {[None] * 5}", "EMFILE read as a spool directory without pods"
    assert done.stderr.count("cannot list") == 1 and "Too many open files" in done.stderr, done.stderr
