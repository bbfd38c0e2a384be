"""deploy/container/: the image, built by build.sh with a real engine, runs the node agent over a dead pod's spool.

No image registry is reachable from CI: the base is Debian bookworm's python3, made by mmdebstrap and imported
(cached across runs under ~/.cache/runai-reporter). The agent container runs as the DaemonSet runs it (root with
its capabilities only, a read-only root, the ConfigMap's variables), on the host's network, and delivers to a
real Pushgateway on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Iterator

import pytest
import yaml

from harness import (
    REPO,
    Pushgateway,
    free_port,
    job_env,
    kill_uploaders,
    metric_name,
    parameter_name,
    uploader_pids,
    wait_for,
)
from runai.reporter import __version__

pytestmark = pytest.mark.e2e

BUILD = os.path.join(REPO, "deploy", "container", "build.sh")
DAEMONSET = os.path.join(REPO, "deploy", "kubernetes", "daemonset.yaml")
BASE = "localhost/runai-base:bookworm"
IMAGE = "localhost/runai-reporter:e2e"
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "runai-reporter")
SPOOL = "/var/lib/runai-reporter"  # where the DaemonSet mounts the node's spool

# A pod that reports, then dies with its uploader before delivering: its gateway never answered.
DYING_JOB = """
import sys
import runai.reporter
reporter = runai.reporter.Reporter()
for i in range(int(sys.argv[2])):
    reporter.reportMetric('loss', 1.0 / (i + 1))
    reporter.reportMetric('epoch', i)
reporter.reportParameter('optimizer', 'adam')
open(sys.argv[1], 'w').close()
sys.stdin.read()  # until killed
"""


def _engine() -> list[str]:
    """The engine's command line (podman with runc where it is there, as build.sh runs it), or a skip."""
    for name in ("podman", "docker"):
        path = shutil.which(name)
        if path:
            runtime = ["--runtime", "runc"] if name == "podman" and shutil.which("runc") else []
            return [path, *runtime]
    pytest.skip("no container engine: apt-get install podman runc mmdebstrap (scripts/test.sh installs them)")


def _run_args(engine: list[str]) -> list[str]:
    # podman's default open-file limit is more than this kind of host lets a container have (build.sh's note).
    return ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"] if "podman" in engine[0] else []


def _sh(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    assert done.returncode == 0, f"{' '.join(args[:4])}... exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _base(engine: list[str]) -> str:
    """A local bookworm image with python3 and venv: imported from a cached mmdebstrap tarball, made if need be."""
    if subprocess.run([*engine, "image", "inspect", BASE], capture_output=True).returncode == 0:
        return BASE
    tarball = os.path.join(CACHE, "rootfs-bookworm.tar")
    if not os.path.exists(tarball):
        if not shutil.which("mmdebstrap"):
            pytest.fail("mmdebstrap is not installed: apt-get install mmdebstrap (scripts/test.sh installs it)")
        os.makedirs(CACHE, exist_ok=True)
        _sh(
            "mmdebstrap",
            "--quiet",
            "--format=tar",
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            tarball + ".part",
        )
        os.replace(tarball + ".part", tarball)
    _sh(*engine, "import", tarball, BASE)
    return BASE


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[list[str], str]]:
    """(the engine's command line, the image build.sh built and named)."""
    engine = _engine()
    base = _base(engine)
    env = dict(os.environ, ENGINE=engine[0], PYTHON=sys.executable)
    started = time.monotonic()
    done = _sh(BUILD, "--base", base, "--tag", IMAGE, env=env)
    print(f"build.sh took {time.monotonic() - started:.1f} s")
    assert done.stdout == f"{IMAGE}\n", "build.sh prints the tag, alone, on stdout"
    yield engine, IMAGE
    subprocess.run([*engine, "rmi", "--force", IMAGE], capture_output=True)


def test_the_image_holds_the_package_and_no_build_tools(image: tuple[list[str], str]) -> None:
    engine, tag = image
    check = (
        "import importlib.util as u, os, shutil, runai.reporter as r; "
        "print(os.getuid(), r.__version__, [m for m in ('torch', 'pip', 'setuptools') if u.find_spec(m)], "
        "[t for t in ('gcc', 'cc', 'make') if shutil.which(t)])"
    )
    done = _sh(
        *engine, "run", "--rm", *_run_args(engine), "--network=none", "--entrypoint", "python3", tag, "-c", check
    )
    assert done.stdout.strip().split(maxsplit=2) == ["65534", __version__, "[] []"]  # nobody by default
    version = _sh(*engine, "run", "--rm", *_run_args(engine), "--network=none", tag, "--version")
    assert __version__ in version.stdout + version.stderr  # the entry point is runai-uploader


def _dead_pod(spool_dir: str, pod: str, reports: int) -> None:
    """A pod whose reports never left its spool: a job and its uploader, killed whole while the gateway was down."""
    ready = os.path.join(spool_dir, f".{pod}.ready")
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = job_env(podUUID=pod, reporterGatewayURL=down, reporterSpoolDir=spool_dir)
    job = subprocess.Popen(
        [sys.executable, "-c", DYING_JOB, ready, str(reports)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(lambda: os.path.exists(ready) or job.poll() is not None, 60, "the job's reports")
        assert job.poll() is None, job.stderr.read() if job.stderr else ""
        wait_for(lambda: uploader_pids(spool_dir), 30, "the job's own uploader")
    finally:
        # The job and the uploader it started (in a session of its own), as a dying pod's.
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        wait_for(lambda: not kill_uploaders(spool_dir), 15, "the job's uploader to be killed")
    os.remove(ready)


def _agent_command(port: int) -> tuple[list[str], list[str]]:
    """(the DaemonSet's agent arguments, its added capabilities), for the host's network on *port*."""
    with open(DAEMONSET, encoding="utf-8") as f:
        (agent,) = yaml.safe_load(f)["spec"]["template"]["spec"]["containers"]
    assert agent["command"][0] == "runai-uploader" and agent["securityContext"]["runAsUser"] == 0
    args = [a.replace("$(POD_IP)", "127.0.0.1") for a in agent["command"][1:]]
    args = [f"--metrics-port={port}" if a.startswith("--metrics-port=") else a for a in args]
    return args, agent["securityContext"]["capabilities"]["add"]


def _pending(port: int, pod: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            page = r.read().decode()
    except OSError:
        return None
    prefix = f'runai_uploader_pending_reports{{podUUID="{pod}"}} '
    values = [float(line[len(prefix) :]) for line in page.splitlines() if line.startswith(prefix)]
    return values[0] if values else 0.0  # a page without the pod's series: nothing of it pending


def test_the_agent_container_delivers_a_dead_pod_and_stops_on_sigterm(
    image: tuple[list[str], str], gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    engine, tag = image
    reports = 50
    _dead_pod(spool_dir, pod, reports)
    assert gateway.series(pod) == {}, "the job's own uploader delivered: the pod is not a dead one"
    port = free_port()
    args, caps = _agent_command(port)
    name = f"runai-agent-{uuid.uuid4().hex[:12]}"
    # As the DaemonSet runs it: root with its capabilities only, a read-only root, the ConfigMap's variables.
    _sh(
        *engine,
        "run",
        "--detach",
        "--name",
        name,
        *_run_args(engine),
        "--network=host",
        "--read-only",
        "--user=0",
        "--cap-drop=ALL",
        *[f"--cap-add={c}" for c in caps],
        "--security-opt=no-new-privileges",
        "--volume",
        f"{spool_dir}:{SPOOL}",
        "--env",
        f"reporterGatewayURL={gateway.url}",
        "--env",
        f"reporterSpoolDir={SPOOL}",
        tag,
        *args,
    )
    try:
        expected = {
            metric_name("loss"): 1.0 / reports,
            metric_name("epoch"): reports - 1.0,
            parameter_name("optimizer"): 1.0,
        }

        def delivered() -> bool:
            return {k: v for k, (_, v) in gateway.series(pod).items()} == expected

        try:
            wait_for(delivered, 60, f"the agent container to deliver {pod}")
            wait_for(lambda: _pending(port, pod) == 0, 30, "the agent's pending_reports of the pod to be 0")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the gateway has {gateway.series(pod)}; {_logs(engine, name)}") from None
        started = time.monotonic()
        _sh(*engine, "stop", "--time=10", name, timeout=60)
        stopped = time.monotonic() - started
        print(f"{engine[0]} stop took {stopped:.2f} s")
        status = _sh(*engine, "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = _logs(engine, name)
        assert status == "0", logs
        assert stopped < 2, f"podman stop took {stopped:.2f} s: {logs}"
        assert "delivered by the agent" in logs
    finally:
        subprocess.run([*engine, "rm", "--force", name], capture_output=True, timeout=60)


def _logs(engine: list[str], name: str) -> str:
    done = subprocess.run([*engine, "logs", name], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr
