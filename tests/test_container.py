"""deploy/container/: the image, built by build.sh with a real engine, runs the node agent over a dead pod's spool.

No image registry is reachable from CI: the base is Debian bookworm's python3, made by mmdebstrap and imported
(cached across runs under ~/.cache/runai-reporter). The agent container runs as the DaemonSet runs it (root with
its capabilities only, a read-only root, the ConfigMap's variables), on the host's network, and delivers to a
real Pushgateway on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from typing import Any, Iterator

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
from runai.reporter.spool import SPOOL_SUFFIX
from tests._container import base_image, find_engine, run_args, sh

pytestmark = pytest.mark.e2e

BUILD = os.path.join(REPO, "deploy", "container", "build.sh")
DAEMONSET = os.path.join(REPO, "deploy", "kubernetes", "daemonset.yaml")
JOB = os.path.join(REPO, "deploy", "kubernetes", "example-job", "job.yaml")
IMAGE = "localhost/runai-reporter:e2e"
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


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[list[str], str]]:
    """(the engine's command line, the image build.sh built and named)."""
    engine = find_engine()
    base = base_image(engine)
    env = dict(os.environ, ENGINE=engine[0], PYTHON=sys.executable)
    started = time.monotonic()
    done = sh(BUILD, "--base", base, "--tag", IMAGE, env=env)
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
    done = sh(*engine, "run", "--rm", *run_args(engine), "--network=none", "--entrypoint", "python3", tag, "-c", check)
    assert done.stdout.strip().split(maxsplit=2) == ["65534", __version__, "[] []"]  # nobody by default
    version = sh(*engine, "run", "--rm", *run_args(engine), "--network=none", tag, "--version")
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
    sh(
        *engine,
        "run",
        "--detach",
        "--name",
        name,
        *run_args(engine),
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
        sh(*engine, "stop", "--time=10", name, timeout=60)
        stopped = time.monotonic() - started
        print(f"{engine[0]} stop took {stopped:.2f} s")
        status = sh(*engine, "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        logs = _logs(engine, name)
        assert status == "0", logs
        assert stopped < 2, f"podman stop took {stopped:.2f} s: {logs}"
        assert "delivered by the agent" in logs
    finally:
        subprocess.run([*engine, "rm", "--force", name], capture_output=True, timeout=60)


def _logs(engine: list[str], name: str) -> str:
    done = subprocess.run([*engine, "logs", name], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr


def _job_pod() -> dict[str, Any]:
    with open(JOB, encoding="utf-8") as f:
        return yaml.safe_load(f)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _init_step(engine: list[str], tag: str, root: str, pod: str) -> subprocess.CompletedProcess[str]:
    """The job's init container, as the kubelet runs it: root with its capabilities only, the spool root mounted."""
    (init,) = _job_pod()["initContainers"]
    (mount,) = init["volumeMounts"]
    context = init["securityContext"]
    argv = [a.replace("$(POD_UID)", pod) for a in init["command"]]
    command = (
        *engine,
        "run",
        "--rm",
        *run_args(engine),
        "--network=none",
        "--read-only",
        f"--user={context['runAsUser']}",
        "--cap-drop=ALL",
        *[f"--cap-add={c}" for c in context["capabilities"]["add"]],
        "--security-opt=no-new-privileges",
        "--volume",
        f"{root}:{mount['mountPath']}",
        "--entrypoint",
        argv[0],
        tag,
        *argv[1:],
    )
    return subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_the_example_jobs_init_step_and_subpath_mount_deliver_and_hide_the_node_spool(
    image: tuple[list[str], str], gateway: Pushgateway, tmp_path: str, pod: str
) -> None:
    engine, tag = image
    pod_spec = _job_pod()
    (train,) = pod_spec["containers"]
    (mount,) = train["volumeMounts"]
    env = {e["name"]: e.get("value") for e in train["env"]}
    user = f"{pod_spec['securityContext']['runAsUser']}:{pod_spec['securityContext']['runAsGroup']}"
    # The node's spool root as the agent makes it (root's, sticky), with another pod's directory in it.
    root = os.path.join(str(tmp_path), "node-spool")
    os.makedirs(os.path.join(root, "pod-other"), mode=0o700)
    os.chmod(root, 0o1777)
    # One the kubelet made (root's, 0750) is the job's once the init step ran; the pod restarted, it stays so;
    # one another uid made under the pod's name is refused, not taken over.
    os.mkdir(os.path.join(root, pod), 0o750)
    for _ in range(2):
        assert _init_step(engine, tag, root, pod).returncode == 0
        info = os.stat(os.path.join(root, pod))
        assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1000, 1000, 0o700)
    os.chown(os.path.join(root, "pod-other"), 54322, 54322)
    refused = _init_step(engine, tag, root, "pod-other")
    assert refused.returncode == 1 and "another user made it" in refused.stderr, refused.stderr
    assert os.stat(os.path.join(root, "pod-other")).st_uid == 54322
    # The job's own program, then what it can see: its directory alone, where reporterPodDir says, not the root.
    seen = f"print(json.dumps([os.path.exists({SPOOL!r}), sorted(os.listdir({mount['mountPath']!r}))]))"
    program = f"{train['command'][-1]}\nimport json, os\n{seen}"
    done = sh(
        *engine,
        "run",
        "--rm",
        *run_args(engine),
        "--network=host",
        f"--user={user}",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--volume",
        f"{os.path.join(root, pod)}:{mount['mountPath']}",  # subPathExpr: $(POD_UID), as the kubelet mounts it
        "--env",
        f"podUUID={pod}",
        "--env",
        f"reporterPodDir={env['reporterPodDir']}",
        "--env",
        f"reporterSpoolDir={SPOOL}",  # the ConfigMap's: the node's root, not mounted in the job
        "--env",
        f"reporterGatewayURL={gateway.url}",
        "--entrypoint",
        "python3",
        tag,
        "-c",
        program,
        timeout=120,
    )
    root_seen, listing = json.loads(done.stdout.strip().splitlines()[-1])
    assert root_seen is False and "pod-other" not in listing
    assert any(name.endswith(SPOOL_SUFFIX) for name in listing), listing
    # The job's own uploader delivered everything under the pod's own name, before finish() returned.
    assert {k: v for k, (_, v) in gateway.series(pod).items()} == {
        metric_name("loss"): 0.1,
        parameter_name("optimizer"): 1.0,
    }, done.stderr
    assert gateway.series("pod-other") == {}
