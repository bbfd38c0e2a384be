"""Fixtures: a real Pushgateway per session (and per test where a test stops it), the fault proxy, Prometheus
and VictoriaMetrics receivers, the node agent, a private spool directory per test, the shared directories of
the other-uid attacks (tests/_users.py), and a check that no uploader outlives its test.

And the ``e2e`` marker's guard: a test that starts a real server or process must be marked ``e2e``
(``pytest -m "not e2e"`` runs the others alone, in seconds). A test using a fixture that starts a server fails
before the fixture runs; a test that starts a process or listens on a socket fails at its end.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import uuid
from typing import Any, Iterator

import pytest

# Keras 3 runs on any backend; the tests use torch (a CPU build), here and in
# the jobs they start.
os.environ.setdefault("KERAS_BACKEND", "torch")

from harness import (  # noqa: E402
    FaultProxy,
    Prometheus,
    Pushgateway,
    VictoriaMetrics,
    kill_uploaders,
    uploader_pids,
    wait_for,
)
from tests._agent import Agent  # noqa: E402

# Fixtures (here and in test modules) that start a real server or process, directly or through a fixture.
SERVER_FIXTURES = frozenset(
    {
        "gateway",
        "own_gateway",
        "proxy",
        "start_agent",
        "strict_prometheus",
        "victoria",  # here
        "prometheus",
        "receiver",
        "stack",
        "secure_gateway",
        "full_listener",
        "bare_python",
        "world_python",
        "small_disk",
    }
)
# Audit events (PEP 578) of starting another program.
PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.exec", "os.system", "os.forkpty"})


class _Guard:
    """What the running test started while it is not marked ``e2e``: processes (seen by an audit hook, which
    cannot be removed, so it is installed once) and listening sockets."""

    def __init__(self) -> None:
        self.watching = False
        self.started: list[str] = []
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if self.watching and event in PROCESS_EVENTS:
            self.started.append(f"a process ({event}: {str(args[0])[:120]})")

    def listening(self, sock: socket.socket) -> None:
        if self.watching:
            self.started.append(f"a server (a socket listening on {sock.getsockname()})")

    def watch(self, on: bool) -> None:
        self.watching, self.started = on, []

    def stop(self) -> list[str]:
        self.watching = False
        return self.started


_guard = _Guard()


@pytest.fixture(scope="session", autouse=True)
def _listening_sockets_seen() -> Iterator[None]:
    """socket.listen() has no audit event: the guard is told of it by a wrapper, for the session."""
    listen = socket.socket.listen

    def watched(self: socket.socket, *args: int) -> None:
        _guard.listening(self)
        listen(self, *args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "listen", watched)
        yield


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    e2e = item.get_closest_marker("e2e") is not None
    servers = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if servers and not e2e:
        pytest.fail(
            f"{item.nodeid} uses {', '.join(servers)} (starting a real server or process): mark it "
            f"@pytest.mark.e2e (or the module, pytestmark = pytest.mark.e2e)",
            pytrace=False,
        )
    _guard.watch(not e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    if call.when != "teardown":
        return
    started = _guard.stop()
    report = outcome.get_result()
    if started and report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} started {'; '.join(dict.fromkeys(started))} without the e2e marker: "
            f"mark it @pytest.mark.e2e (or the module, pytestmark = pytest.mark.e2e)"
        )


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushgateway]:
    """One real Pushgateway shared by tests that do not stop it; tests use their own pods."""
    gw = Pushgateway(str(tmp_path_factory.mktemp("gateway"))).start()
    yield gw
    gw.stop()


@pytest.fixture
def own_gateway(tmp_path: os.PathLike[str]) -> Iterator[Pushgateway]:
    """A Pushgateway this test may stop and restart (not started yet)."""
    gw = Pushgateway(str(tmp_path))
    yield gw
    gw.stop()


@pytest.fixture
def spool_dir(tmp_path: os.PathLike[str]) -> str:
    path = os.path.join(str(tmp_path), "spool")
    os.makedirs(path)
    return path


@pytest.fixture
def pod() -> str:
    return f"pod-{uuid.uuid4()}"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, spool_dir: str, pod: str, gateway: Pushgateway) -> dict[str, str]:
    """Reporter settings in os.environ, for this process and the jobs it starts."""
    values = {"podUUID": pod, "reporterGatewayURL": gateway.address, "reporterSpoolDir": spool_dir}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture(autouse=True)
def no_uploader_left(tmp_path: os.PathLike[str]) -> Iterator[None]:
    """Every uploader a test started must have exited by the test's end."""
    yield
    marker = str(tmp_path)
    try:
        wait_for(lambda: not uploader_pids(marker), 15, "the test's uploaders to exit")
    except AssertionError:
        pids = kill_uploaders(marker)
        pytest.fail(f"uploaders {pids} were still running after the test; killed them")


@pytest.fixture(autouse=True)
def _reset_global_reporter() -> Iterator[None]:
    yield
    import runai.reporter as reporter

    if reporter._global is not None:
        reporter._global.finish(timeout=5)
        reporter._global = None


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A world-writable sticky directory, as /tmp is: the TMPDIR of every user in the attack."""
    path = tempfile.mkdtemp(prefix="runai-shared-", dir="/tmp")
    os.chmod(path, 0o1777)
    yield path
    kill_uploaders(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def elsewhere(shared_tmp: str) -> str:
    """A root-owned sticky directory the attacker would like the spool in (as /dev/shm is)."""
    path = os.path.join(shared_tmp, "elsewhere")
    os.mkdir(path)
    os.chmod(path, 0o1777)
    return path


@pytest.fixture
def proxy(gateway: Pushgateway) -> Iterator[FaultProxy]:
    p = FaultProxy(gateway.address).start()
    yield p
    p.stop()


@pytest.fixture
def start_agent(spool_dir: str, tmp_path) -> Iterator:
    agents: list[Agent] = []

    def start(gateway: str, *options: str) -> Agent:
        agents.append(Agent(spool_dir, gateway, str(tmp_path / f"agent-{len(agents)}.log"), *options))
        return agents[-1]

    yield start
    for agent in agents:
        agent.close()


@pytest.fixture
def strict_prometheus(tmp_path: Any) -> Iterator[Prometheus]:
    """Prometheus 2.42 taking remote writes, without an out-of-order window (its default)."""
    with Prometheus(str(tmp_path), remote_write=True) as server:
        yield server


@pytest.fixture
def victoria(tmp_path: Any) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(str(tmp_path)) as server:
        yield server
