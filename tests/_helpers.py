"""Test helpers: a real Pushgateway process, condition waits, job subprocesses."""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from typing import Any, Callable, TypeVar

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll *condition* until it returns something truthy; fail after *timeout* s."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pushgateway_binary() -> str:
    path = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if not path:
        raise RuntimeError(
            "prometheus-pushgateway is not installed: run the README's test command, "
            "which installs Debian's prometheus-pushgateway"
        )
    return path


class Pushgateway:
    """A real Pushgateway on 127.0.0.1, without persistence.

    With *web_config* it runs with ``--web.config.file`` (TLS, basic auth); then
    *ca_file* and *auth* are what this helper itself uses to talk to it.
    """

    def __init__(self, log_dir: str, port: int | None = None, extra_args: tuple[str, ...] = (),
                 web_config: str | None = None, ca_file: str | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        self.port = port or free_port()
        self.log_path = os.path.join(log_dir, f"pushgateway-{self.port}.log")
        self.extra_args = extra_args + ((f"--web.config.file={web_config}",) if web_config else ())
        self.scheme = "https" if ca_file else "http"
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._auth = "Basic " + base64.b64encode(":".join(auth).encode()).decode() if auth else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def _open(self, path: str, method: str = "GET", data: bytes | None = None) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if self._auth:
            request.add_header("Authorization", self._auth)
        return urllib.request.urlopen(request, timeout=5, context=self._context)

    def start(self) -> Pushgateway:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [pushgateway_binary(), f"--web.listen-address={self.address}", "--persistence.file=",
                 *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        wait_for(self._ready, 20, f"the Pushgateway on {self.address} to be ready")
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            with open(self.log_path, errors="replace") as f:
                raise RuntimeError(f"the Pushgateway exited: {f.read()[-2000:]}")
        try:
            with self._open("/-/ready") as r:
                return r.status == 200
        except OSError:
            return False

    def groups(self) -> list[dict[str, Any]]:
        with self._open("/api/v1/metrics") as r:
            return json.load(r)["data"]

    def series(self, pod_uuid: str) -> dict[str, tuple[dict[str, str], float]]:
        """{metric name: (labels, value)} of the pod's group, as the gateway holds it."""
        out: dict[str, tuple[dict[str, str], float]] = {}
        for group in self.groups():
            if group["labels"].get("podUUID") != pod_uuid:
                continue
            for name, family in group.items():
                if isinstance(family, dict) and "metrics" in family and name.startswith("reporter_"):
                    for metric in family["metrics"]:
                        out[name] = (metric["labels"], float(metric["value"]))
        return out

    def value(self, pod_uuid: str, name: str) -> float | None:
        got = self.series(pod_uuid).get(name)
        return None if got is None else got[1]

    def delete_group(self, pod_uuid: str) -> None:
        self._open(f"/metrics/job/reporter_pod_info/podUUID/{pod_uuid}", method="DELETE").close()

    def push_text(self, path: str, text: str) -> int:
        try:
            with self._open(f"/metrics/{path}", method="POST", data=text.encode()) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code


def metric_name(name: str) -> str:
    return f"reporter_push_gateway_metric_{name}"


def parameter_name(name: str) -> str:
    return f"reporter_push_gateway_parameter_{name}"


def job_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env.update(overrides)
    return env


def start_job(code: str, env: dict[str, str], *, wrapper: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    """Run *code* in a fresh interpreter, as a training job would run."""
    return subprocess.Popen(
        [*wrapper, sys.executable, "-c", code], env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )


def uploader_pids(marker: str) -> list[int]:
    """Pids of live uploader processes whose command line mentions *marker*."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state == b"Z":
            continue
        if b"uploader" in argv and b"run" in argv and any(marker.encode() in a for a in argv):
            pids.append(int(entry))
    return pids


def kill_uploaders(marker: str) -> list[int]:
    pids = uploader_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def spool_records(pod_dir: str) -> list:
    """Every valid record of every spool file in *pod_dir*, in file order."""
    from runai.reporter.spool import decode, is_spool_file

    records = []
    for name in sorted(os.listdir(pod_dir)):
        if is_spool_file(name):
            with open(os.path.join(pod_dir, name), "rb") as f:
                for line in f.read().splitlines():
                    try:
                        records.append(decode(line))
                    except ValueError:
                        pass
    return records


def wait_for_give_up(pod_dir: str, marker: str, timeout: float = 15) -> None:
    """Wait until the pod's uploader has logged that it gives up, and has exited.

    Waiting only for "no uploader running" could pass before the uploader has
    even started.
    """
    log = os.path.join(pod_dir, "uploader.log")

    def gave_up() -> bool:
        try:
            with open(log) as f:
                return "giving up" in f.read()
        except FileNotFoundError:
            return False

    wait_for(gave_up, timeout, f"the uploader of {pod_dir} to give up")
    wait_for(lambda: not uploader_pids(marker), timeout, "the uploader to exit")


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a live process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
