"""The delivery's hooks, driven with a fake sink: the node agent's metrics count what each sink's loop did.

Unit tests: no server, no subprocess. The fake is a small class that satisfies the
Sink Protocol (uploader.sinks.Sink); the loop calls the hooks, nothing is wrapped.
"""

from __future__ import annotations

from typing import AbstractSet, Sequence

import pytest

from runai.reporter.spool import GATEWAY, REMOTE_WRITE, Report, SpoolWriter
from uploader.agent.metrics import AgentMetrics, PodHooks
from uploader.delivery import NO_HOOKS, DeliveryOptions
from uploader.delivery.service import EXIT_DELIVERED, Uploader
from uploader.sinks import Refusal, Sink

ONCE = DeliveryOptions(follow=False, use_watchdog=False, backoff=(0.001, 0.002), push_interval=0.0)


class FakeSink:
    """Fails its first *failures* pushes (as an unreachable receiver does), then takes everything but *refuse*."""

    receiver = "the fake receiver"
    url = "fake://receiver"

    def __init__(self, name: str, failures: int = 0, refuse: str | None = None) -> None:
        self.name = name
        self.coalesces = name == GATEWAY
        self.marks_sending = name == REMOTE_WRITE
        self.reached = True
        self.failures = failures
        self.refuse = refuse
        self.received: list[Report] = []
        self.closed = False

    def push(self, records: Sequence[Report], resent: AbstractSet[int] = frozenset()) -> list[tuple[Report, Refusal]]:
        if self.failures:
            self.failures -= 1
            self.reached = False
            raise ConnectionRefusedError("the fake receiver is down")
        self.reached = True
        refused: list[tuple[Report, Refusal]] = [
            (r, ValueError("not sent: a fake refusal")) for r in records if r.name == self.refuse
        ]
        self.received += [r for r in records if r.name != self.refuse]
        return refused

    def abort(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def spool(pod_dir: str, pod: str, names: Sequence[str], reports: int) -> None:
    writer = SpoolWriter(pod_dir, pod)
    for i in range(reports):
        for name in names:
            writer.write_metric(name, float(i))
    writer.close()


def sample(metrics: AgentMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.mark.parametrize("sink_name", [GATEWAY, REMOTE_WRITE])
def test_the_agents_hooks_count_failed_pushes_successes_and_delivered_reports(
    tmp_path, pod: str, sink_name: str
) -> None:
    pod_dir = str(tmp_path / pod)
    spool(pod_dir, pod, ["loss"], 5)
    metrics = AgentMetrics()
    sink: Sink = FakeSink(sink_name, failures=2)
    uploader = Uploader(pod_dir, sink, ONCE, hooks=PodHooks(metrics, pod))
    assert uploader.run() == EXIT_DELIVERED
    assert sample(metrics, "runai_uploader_push_failures_total", sink=sink_name) == 2
    assert sample(metrics, "runai_uploader_delivered_reports_total", podUUID=pod, sink=sink_name) == 5
    assert (sample(metrics, "runai_uploader_last_success_timestamp_seconds", podUUID=pod, sink=sink_name) or 0) > 0
    other = REMOTE_WRITE if sink_name == GATEWAY else GATEWAY
    assert sample(metrics, "runai_uploader_delivered_reports_total", podUUID=pod, sink=other) is None
    metrics.forget(pod)  # the pod's series go with it, by the sinks the hooks noted
    assert sample(metrics, "runai_uploader_delivered_reports_total", podUUID=pod, sink=sink_name) is None


def test_a_report_refused_by_name_is_delivered_not_failed(tmp_path, pod: str) -> None:
    pod_dir = str(tmp_path / pod)
    spool(pod_dir, pod, ["loss", "bad"], 3)
    metrics = AgentMetrics()
    sink = FakeSink(GATEWAY, refuse="bad")
    uploader = Uploader(pod_dir, sink, ONCE, hooks=PodHooks(metrics, pod))
    assert uploader.run() == EXIT_DELIVERED
    assert [r.name for r in sink.received] == ["loss"] and sink.closed
    assert "reporter_push_gateway_metric_bad" in uploader.rejected
    assert sample(metrics, "runai_uploader_push_failures_total", sink=GATEWAY) is None
    # A refusal is a delivery's end too: its checkpoint covers it, so it counts as delivered (not pending).
    assert sample(metrics, "runai_uploader_delivered_reports_total", podUUID=pod, sink=GATEWAY) == 6


def test_without_hooks_nothing_is_counted_and_nothing_breaks(tmp_path, pod: str) -> None:
    pod_dir = str(tmp_path / pod)
    spool(pod_dir, pod, ["loss"], 2)
    sink = FakeSink(REMOTE_WRITE, failures=1)
    uploader = Uploader(pod_dir, sink, ONCE, hooks=NO_HOOKS)
    assert uploader.run() == EXIT_DELIVERED
    assert [r.value for r in sink.received] == [0.0, 1.0]  # every report, for a sink that does not coalesce
