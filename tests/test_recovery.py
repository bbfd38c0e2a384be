"""uploader.recovery in-process: results and events, never printing (the CLI prints them)."""

from __future__ import annotations

import os
import socket

import pytest

from harness import Pushgateway
from runai.reporter.settings import ConfigError, Settings, load_settings
from runai.reporter.spool import PodLock, SpoolWriter
from uploader.recovery import Outcome, Recovered, pending_on_disk, recover_pod, recover_pods
from uploader.runtime.signals import StopOnSignals


class _Sink:
    def __init__(self) -> None:
        self.updates: list[tuple[int, int, int | None]] = []
        self.closed = False

    def update(self, records: int, delivered_bytes: int, total_bytes: int | None = None) -> None:
        self.updates.append((records, delivered_bytes, total_bytes))

    def close(self) -> None:
        self.closed = True


class _Listener:
    def __init__(self) -> None:
        self.waits: list[tuple[str, int | None, float]] = []
        self.sinks: list[_Sink] = []
        self.results: list[Recovered] = []

    def waiting(self, pod: str, holder: int | None, timeout: float) -> None:
        self.waits.append((pod, holder, timeout))

    def progress(self, pod: str) -> _Sink:
        self.sinks.append(_Sink())
        return self.sinks[-1]

    def recovered(self, result: Recovered) -> None:
        self.results.append(result)


def _dead_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _settings(spool_dir: str, pod: str, gateway: str) -> Settings:
    return load_settings(pod_uuid=pod, gateway_url=gateway, spool_dir=spool_dir, push_timeout=1, for_writing=False)


def _spool(spool_dir: str, pod: str, reports: int) -> None:
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    for i in range(reports):
        writer.write_metric("loss", i)
    writer.close()


@pytest.mark.e2e
def test_recover_pod_delivers_and_reports_progress_without_printing(
    spool_dir: str, pod: str, gateway: Pushgateway, capfd: pytest.CaptureFixture[str]
) -> None:
    _spool(spool_dir, pod, 5)
    listener = _Listener()
    result = recover_pod(_settings(spool_dir, pod, gateway.address), 10, StopOnSignals(), listener)
    assert (result.outcome, result.ok, result.delivered, result.pending) == (Outcome.DELIVERED, True, 5, 0)
    (sink,) = listener.sinks
    assert sink.closed and sink.updates
    assert all(total is not None and total >= sent for _, sent, total in sink.updates)  # the uploader was there
    assert pending_on_disk(spool_dir, pod) == 0
    assert capfd.readouterr() == ("", "")


def test_recover_pod_gives_up_on_an_unreachable_gateway(spool_dir: str, pod: str) -> None:
    _spool(spool_dir, pod, 3)
    listener = _Listener()
    result = recover_pod(_settings(spool_dir, pod, _dead_port()), 0.5, StopOnSignals(), listener)
    assert (result.outcome, result.ok, result.delivered, result.pending) == (Outcome.UNREACHABLE, False, 0, 3)
    assert result.error
    assert listener.sinks[0].closed


def test_recover_pod_without_spool_files_sends_nothing(spool_dir: str, pod: str) -> None:
    os.mkdir(os.path.join(spool_dir, pod), 0o700)
    listener = _Listener()
    result = recover_pod(_settings(spool_dir, pod, _dead_port()), 1, StopOnSignals(), listener)
    assert (result.outcome, result.ok) == (Outcome.EMPTY, True)
    assert result.pod_dir == os.path.join(spool_dir, pod)
    assert not listener.sinks


def test_recover_pod_waits_for_the_lock_holder_then_gives_up(spool_dir: str, pod: str) -> None:
    _spool(spool_dir, pod, 2)
    listener = _Listener()
    with PodLock(os.path.join(spool_dir, pod)) as held:
        assert held.acquire()
        result = recover_pod(_settings(spool_dir, pod, _dead_port()), 0.2, StopOnSignals(), listener)
    assert listener.waits == [(pod, os.getpid(), 0.2)]
    assert (result.outcome, result.holder, result.pending) == (Outcome.BUSY, os.getpid(), 2)


def test_recover_pods_goes_on_after_a_refused_pod_and_stops_on_a_signal(spool_dir: str, pod: str) -> None:
    listener = _Listener()

    def settings_for(name: str) -> Settings:
        raise ConfigError(f"no settings for {name}")

    results = recover_pods(["a", "b"], settings_for, spool_dir, 1, StopOnSignals(), listener)
    assert [(r.pod, r.outcome, r.error) for r in results] == [
        ("a", Outcome.REFUSED, "no settings for a"),
        ("b", Outcome.REFUSED, "no settings for b"),
    ]
    assert listener.results == results
    stopper = StopOnSignals()
    stopper.signum = 15
    assert recover_pods(["a"], settings_for, spool_dir, 1, stopper, listener) == []
