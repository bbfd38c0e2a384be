"""The agent's HTTP endpoint: ``/healthz`` fails when the main loop is wedged, idle connections are bounded and
dropped (issue 22, points 5 and 14)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from harness import wait_for
from uploader.agent.endpoint import IDLE_SECONDS, MAX_CONNECTIONS, Heartbeat


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Threads:"))


def test_a_heartbeat_is_stale_only_past_its_bound_after_a_first_turn() -> None:
    now = [100.0]
    heartbeat = Heartbeat(bound=60, clock=lambda: now[0])
    assert not heartbeat.stale() and heartbeat.age() is None  # before the loop's first turn: starting, not wedged
    heartbeat.beat()
    now[0] += 60
    assert not heartbeat.stale()
    now[0] += 0.5
    assert heartbeat.stale() and heartbeat.age() == 60.5
    heartbeat.beat()
    assert not heartbeat.stale()


@pytest.mark.e2e
def test_healthz_answers_503_once_the_loop_stops_turning() -> None:
    from uploader.agent.metrics import AgentMetrics

    metrics = AgentMetrics()
    metrics.heartbeat.bound = 0.5
    port = metrics.serve("127.0.0.1", 0)
    try:
        metrics.heartbeat.beat()  # the loop turned once, then is wedged (nothing beats again)
        assert _status(port, "/healthz") == 200
        wait_for(lambda: _status(port, "/healthz") == 503, 10, "/healthz failing for a wedged loop")
        metrics.heartbeat.beat()
        assert _status(port, "/healthz") == 200
        assert _status(port, "/metrics") == 200 and _status(port, "/nothing") == 404
    finally:
        metrics.close()


@pytest.mark.e2e
def test_healthz_answers_200_on_a_live_agent(gateway, start_agent) -> None:
    agent = start_agent(gateway.address)
    assert _status(agent.port, "/healthz") == 200


@pytest.mark.e2e
def test_300_idle_connections_pin_no_threads_and_a_scrape_still_answers(gateway, start_agent) -> None:
    agent = start_agent(gateway.address)
    before = _threads(agent.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", agent.port), timeout=10) for _ in range(300)]
    try:
        assert agent.sample("runai_uploader_pods") is not None  # a scrape answers meanwhile (or its slot is free)
        threads = _threads(agent.proc.pid)
        assert threads <= before + MAX_CONNECTIONS + 2, f"{threads} threads (was {before}) for 300 idle sockets"

        def all_dropped() -> bool:
            for sock in idle:
                sock.settimeout(0.01)
                try:
                    if sock.recv(1) != b"":
                        return False
                except TimeoutError:
                    return False
                except OSError:
                    pass  # reset: dropped
            return True

        wait_for(all_dropped, IDLE_SECONDS + 10, "every idle connection dropped by the agent")
    finally:
        for sock in idle:
            sock.close()
