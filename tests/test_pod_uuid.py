"""The podUUID: refused where it cannot name a directory or be sent, delivered exactly where it can
(a leading dash, a space, the longest name the file system allows)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid

import pytest

import runai.reporter
from harness import REPO, Pushgateway, job_env, metric_name
from runai.reporter import ConfigError, Reporter
from runai.reporter.spool import SpoolWriter
from tests._helpers import cli_env, finished_spool, uploader_cli
from tests._users import _venv

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("bad", ["../escape", "a/b", "..", ".", "", "a\0b", "..\\x", "/abs", "  ", "x\n"])
def test_pod_uuid_path_tricks_are_refused(
    env: dict[str, str], spool_dir: str, tmp_path: os.PathLike[str], bad: str
) -> None:
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ConfigError, match="pod_uuid="):
        Reporter(pod_uuid=bad)
    assert sorted(os.listdir(tmp_path)) == before
    assert os.listdir(spool_dir) == []


def test_pod_uuid_from_environment_is_checked_too(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], spool_dir: str
) -> None:
    monkeypatch.setenv("podUUID", "../../etc")
    with pytest.raises(ConfigError, match="podUUID='../../etc' cannot be used as a directory name"):
        runai.reporter.reportMetric("a", 1)
    assert os.listdir(spool_dir) == []


def test_a_pod_uuid_that_is_not_utf8_is_refused_at_creation(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    undecodable = os.fsdecode(b"caf\xe9")  # 'caf\udce9': a lone surrogate
    with pytest.raises(ConfigError, match="pod_uuid"):
        Reporter(pod_uuid=undecodable)
    monkeypatch.setenv("podUUID", undecodable)
    with pytest.raises(ConfigError, match="podUUID"):
        Reporter()


def test_a_pod_uuid_longer_than_the_file_system_allows_is_refused(
    env: dict[str, str], gateway: Pushgateway, spool_dir: str
) -> None:
    name_max = os.pathconf(spool_dir, "PC_NAME_MAX")
    with pytest.raises(ConfigError, match=f"podUUID.*at most {name_max} bytes"):
        Reporter(pod_uuid="é" * (name_max // 2 + 1))  # few characters, too many bytes
    longest = "p" * name_max
    with Reporter(pod_uuid=longest) as reporter:
        reporter.reportMetric("long_pod", 1.0)
    assert reporter.finish() is True
    assert gateway.value(longest, metric_name("long_pod")) == 1.0


def test_the_printed_recover_command_works_for_a_pod_uuid_starting_with_a_dash(
    env: dict[str, str], gateway: Pushgateway, spool_dir: str
) -> None:
    pod = f"-{uuid.uuid4()}"
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.write_metric("dashed", 3.0)
    writer.close()
    status = json.loads(uploader_cli(env, "status", "--json").stdout)
    (command,) = [p["recover_command"] for p in status["pods"] if p["pod_uuid"] == pod]
    argv = shlex.split(command)
    assert argv[:2] == ["runai-uploader", "recover"]
    # The printed command, run for real (as `python -m uploader`, so that this checkout is what runs).
    done = subprocess.run(
        [sys.executable, "-m", "uploader", *argv[1:]],
        env=job_env(),
        text=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert gateway.value(pod, metric_name("dashed")) == 3.0


def test_the_minimum_prometheus_client_keeps_a_space_in_the_grouping_key(
    tmp_path, env: dict[str, str], gateway: Pushgateway, spool_dir: str
) -> None:
    with open(os.path.join(REPO, "setup.py")) as f:
        (minimum,) = re.findall(r'"prometheus_client>=([0-9.]+)"', f.read())
    python = _venv(str(tmp_path / "venv"), sys.executable, f"prometheus_client=={minimum}", "watchdog>=4")
    version = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('prometheus_client'))"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    assert version in (minimum, minimum + ".0")  # the pin installed that very release

    pod = f"my pod {uuid.uuid4()}"
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.write_metric("spaced", 4.0)
    writer.close()
    # A clean venv: only the pinned prometheus_client and watchdog, and this checkout's code.
    done = subprocess.run(
        [python, "-m", "uploader", "recover", f"--pod-uuid={pod}", "--timeout", "20"],
        env={**job_env(), "PYTHONPATH": REPO},
        text=True,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    groups = [g["labels"].get("podUUID") for g in gateway.groups()]
    assert pod.replace(" ", "+") not in groups, f"prometheus_client {minimum} sent the space as '+'"
    assert gateway.value(pod, metric_name("spaced")) == 4.0


def test_a_pod_uuid_starting_with_a_dash_is_delivered(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    """Issue 10, point 13: `--pod-uuid -x` killed the uploader at argument parsing."""
    dashed = "-" + pod
    reporter = Reporter(pod_uuid=dashed)
    reporter.reportMetric("x", 13)
    assert reporter.finish(timeout=10) is True
    assert gateway.value(dashed, metric_name("x")) == 13


def test_an_unencodable_pod_uuid_is_a_clear_error(gateway: Pushgateway, spool_dir: str) -> None:
    pod = os.fsdecode(b"pod-caf\xe9")
    finished_spool(spool_dir, pod, {"x": 1.0})
    env = cli_env(spool_dir, pod, gateway.address)
    for command in ("recover", "run"):  # a usage error, said once, never a crash or a respawn loop
        done = uploader_cli(env, command)
        assert done.returncode == 2, (command, done.stderr)
        assert "undecodable bytes" in done.stderr and "Traceback" not in done.stderr, done.stderr
    # It costs only that pod: `recover --all` delivers the others.
    good = f"pod-{uuid.uuid4()}"
    finished_spool(spool_dir, good, {"y": 2.0})
    done = uploader_cli(env, "recover", "--all")
    assert done.returncode == 1 and "1 of 2 pods not fully delivered" in done.stderr, done.stderr
    assert gateway.value(good, metric_name("y")) == 2
    gateway.delete_group(good)


def test_a_pod_uuid_with_spaces_gets_its_own_group(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], gateway: Pushgateway, pod: str
) -> None:
    spaced = f"my pod {pod}"
    with Reporter(pod_uuid=spaced) as reporter:
        reporter.reportMetric("spaced", 3)
    assert gateway.value(spaced, metric_name("spaced")) == 3  # base64 grouping key, decoded by the gateway
    assert gateway.value(pod, metric_name("spaced")) is None
