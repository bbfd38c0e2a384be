"""A pod's data goes out only under its own name: a spool whose header names another pod is refused (agent,
``recover``), and a writer refuses a pod directory that is not its own (issue 22, point 6)."""

from __future__ import annotations

import os

import pytest

from harness import Pushgateway, metric_name, wait_for
from runai.reporter import ConfigError, Reporter
from runai.reporter.spool import SpoolWriter
from tests._helpers import dead_job, uploader_cli
from tests._users import _forged_spool

pytestmark = pytest.mark.e2e


def _plant(pod_dir: str, header_pod: str, name: str, value: float) -> str:
    """A whole spool file in *pod_dir* whose header names *header_pod*, as a job of that pod would write it."""
    os.makedirs(pod_dir, mode=0o700, exist_ok=True)
    path = os.path.join(pod_dir, "w1-ffffffff.jsonl")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(_forged_spool(header_pod, name, value))
    return path


def test_the_agent_refuses_a_spool_naming_another_pod_and_delivers_the_others(
    gateway: Pushgateway, start_agent, spool_dir: str, pod: str
) -> None:
    victim = f"{pod}-victim"
    # A job of pod "attacker" wrote its report under the victim's name: the directory is named as the victim.
    _plant(os.path.join(spool_dir, victim), f"{pod}-attacker", "loss", 999.0)
    dead_job(spool_dir, pod, 3)
    agent = start_agent(gateway.address)
    wait_for(lambda: gateway.value(pod, metric_name("loss")) == 2, 15, "the honest pod delivered")
    wait_for(lambda: agent.sample("runai_uploader_refused_pods") == 1, 10, "the forged pod counted as refused")
    assert gateway.value(victim, metric_name("loss")) is None, "a forged report was pushed under another pod's name"
    log = agent.stderr()
    assert log.count(f"pod {victim}: cannot deliver it") == 1, log
    assert f"names pod '{pod}-attacker'" in log, log


def test_recover_delivers_a_pods_own_files_and_never_one_naming_another_pod(
    env: dict[str, str], gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    writer = SpoolWriter(pod_dir, pod)
    writer.write_metric("real", 7.0)
    writer.close()
    _plant(pod_dir, "someone-else", "forged", 666.0)
    done = uploader_cli(env, "recover", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert gateway.value(pod, metric_name("real")) == 7.0
    assert gateway.value(pod, metric_name("forged")) is None, "another pod's report was pushed under this one"
    assert "names pod 'someone-else'" in done.stderr, done.stderr


def test_a_writer_refuses_a_pod_directory_holding_another_pods_spool(
    env: dict[str, str], spool_dir: str, pod: str
) -> None:
    # Made before this pod started, by a job with the same uid that used this pod's name.
    pod_dir = os.path.join(spool_dir, pod)
    _plant(pod_dir, "another-pod", "loss", 1.0)
    with pytest.raises(ConfigError) as refused:
        Reporter()
    message = str(refused.value)
    assert "not this pod's own directory" in message and "another-pod" in message and "podUUID" in message
    assert os.listdir(pod_dir) == ["w1-ffffffff.jsonl"], "nothing was written into another pod's directory"


def test_a_restarted_container_of_the_same_pod_reuses_its_directory(
    env: dict[str, str], gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    dead_job(spool_dir, pod, 2)  # the first container, killed: its spool stays, its header names this pod
    reporter = Reporter()
    reporter.reportMetric("after_restart", 1.0)
    assert reporter.finish(timeout=20)
    assert gateway.value(pod, metric_name("after_restart")) == 1.0
    assert gateway.value(pod, metric_name("loss")) == 1.0
