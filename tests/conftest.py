"""Fixtures: a real Pushgateway per session (and per test where a test stops it),
a private spool directory per test, and a check that no uploader outlives its test."""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

# Keras 3 runs on any backend; the tests use torch (a CPU build), here and in
# the jobs they start.
os.environ.setdefault("KERAS_BACKEND", "torch")

from harness import Pushgateway, kill_uploaders, uploader_pids, wait_for


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
