"""Receivers follow the job's intent: ``recover --all`` and the node agent send a pod only to the receivers of the
kinds its job named in its spool headers (``--any-receiver`` overrides); a pod written before headers said so goes
everywhere, as before. Against a real Pushgateway and the real agent."""

from __future__ import annotations

import os

import pytest

from harness import Pushgateway, metric_name, wait_for
from runai.reporter.spool import GATEWAY, REMOTE_WRITE, SpoolWriter
from tests._helpers import recover
from uploader.delivery.intent import intended_sinks

# Each pod's job named these receivers (None: a spool written before headers said).
_PODS = {"gw": (GATEWAY,), "rw": (REMOTE_WRITE,), "both": (GATEWAY, REMOTE_WRITE), "local": (), "old": None}


def _write_pods(spool_dir: str, prefix: str) -> dict[str, str]:
    """One finished pod per entry of _PODS, each reporting loss=1; the pod names by key."""
    names = {}
    for key, receivers in _PODS.items():
        name = names[key] = f"{prefix}-{key}"
        writer = SpoolWriter(os.path.join(spool_dir, name), name, receivers=receivers)
        writer.write_metric("loss", 1.0)
        writer.close()
    return names


def test_a_pod_goes_only_to_the_receivers_its_job_named(spool_dir: str) -> None:
    pods = _write_pods(spool_dir, "p")
    both = (GATEWAY, REMOTE_WRITE)

    def sinks(key: str, given: tuple[str, ...], **kw: bool) -> tuple[str, ...]:
        return intended_sinks(given, os.path.join(spool_dir, pods[key]), **kw).sinks

    assert [sinks(key, both) for key in _PODS] == [(GATEWAY,), (REMOTE_WRITE,), both, (), both]
    assert sinks("rw", (GATEWAY,)) == () and sinks("rw", (GATEWAY,), any_receiver=True) == (GATEWAY,)
    skipped = intended_sinks((GATEWAY,), os.path.join(spool_dir, pods["rw"])).skipped
    assert skipped == (
        "not sent to the gateway: its job sent only to the remote-write receiver; give --remote-write "
        "to send it there, or --any-receiver to send it to the gateway too"
    )
    local = intended_sinks((GATEWAY,), os.path.join(spool_dir, pods["local"])).skipped
    assert local is not None and "kept locally" in local and f"--pod-uuid={pods['local']}" in local


@pytest.mark.e2e
def test_recover_all_does_not_push_a_remote_write_only_pod_to_the_gateway(
    env: dict[str, str], gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    pods = _write_pods(spool_dir, pod)
    done = recover(env, "--all")
    assert done.returncode == 0, done.stderr
    sent = {key for key, name in pods.items() if gateway.value(name, metric_name("loss")) == 1}
    assert sent == {"gw", "both", "old"}
    # Each pod left alone is named, with its reason, on one line; the summary counts them.
    assert f"pod {pods['rw']}: not sent to the gateway: its job sent only to the remote-write receiver" in done.stdout
    assert f"pod {pods['local']}: not sent: its job named no receiver" in done.stdout
    assert "not sent: 2 pods whose jobs named other receivers" in done.stdout
    assert "summary: 5 pods, 3 reports delivered" in done.stdout
    # The override sends them too; the pod named by itself goes where the command says.
    again = recover(env, "--all", "--any-receiver")
    assert again.returncode == 0, again.stderr
    assert [gateway.value(pods[key], metric_name("loss")) for key in ("rw", "local")] == [1, 1]


@pytest.mark.e2e
def test_the_agent_sends_a_pod_only_to_the_receivers_its_job_named(
    env: dict[str, str], gateway: Pushgateway, start_agent, spool_dir: str, pod: str
) -> None:
    pods = _write_pods(spool_dir, pod)
    agent = start_agent(gateway.address)
    wait_for(
        lambda: all(gateway.value(pods[key], metric_name("loss")) == 1 for key in ("gw", "both", "old")),
        30,
        "the agent delivering the gateway's pods",
    )
    wait_for(lambda: f"pod {pods['rw']}: not sent to the gateway" in agent.stderr(), 15, "the agent naming the skip")
    assert f"pod {pods['local']}: not sent: its job named no receiver" in agent.stderr()
    # The judging of the skipped pods came before the deliveries above ended: they were never sent.
    assert gateway.value(pods["rw"], metric_name("loss")) is None
    assert gateway.value(pods["local"], metric_name("loss")) is None
    assert agent.stderr().count(f"pod {pods['rw']}: not sent") == 1  # once, not once a poll
