"""Real servers on 127.0.0.1 for the tests, benchmarks and demo: Debian's
Pushgateway and Prometheus, each a child process on a free port.

Standard library only, so that ``scripts/demo.py`` and the benchmarks can use
it too.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, TypeVar

__all__ = ["Prometheus", "Pushgateway", "free_port", "wait_for"]

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


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(f"{names[0]} is not installed: run the README's test command, which installs Debian's "
                       f"{names[0]} with apt-get")


class _Server:
    """A server process on 127.0.0.1 with a ``/-/ready`` endpoint, its output in a log file."""

    what = "server"

    def __init__(self, log_dir: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_dir = log_dir
        self.log_path = os.path.join(log_dir, f"{self.what.lower()}-{self.port}.log")
        self.scheme = "http"
        self._context: ssl.SSLContext | None = None
        self._auth: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def _open(self, path: str, method: str = "GET", data: bytes | None = None) -> Any:
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if self._auth:
            request.add_header("Authorization", self._auth)
        return urllib.request.urlopen(request, timeout=5, context=self._context)

    def start(self, ready_timeout: float = 30) -> Any:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        try:
            wait_for(self._ready, ready_timeout, f"the {self.what} on {self.address} to be ready")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the process; safe to call twice, or before start."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            with open(self.log_path, errors="replace") as f:
                raise RuntimeError(f"the {self.what} exited: {f.read()[-2000:]}")
        try:
            with self._open("/-/ready") as r:
                return r.status == 200
        except OSError:
            return False


class Pushgateway(_Server):
    """A real Pushgateway on 127.0.0.1, without persistence.

    With *web_config* it runs with ``--web.config.file`` (TLS, basic auth); then
    *ca_file* and *auth* are what this helper itself uses to talk to it.
    """

    what = "Pushgateway"

    def __init__(self, log_dir: str, port: int | None = None, extra_args: tuple[str, ...] = (),
                 web_config: str | None = None, ca_file: str | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        super().__init__(log_dir, port)
        self.extra_args = extra_args + ((f"--web.config.file={web_config}",) if web_config else ())
        self.scheme = "https" if ca_file else "http"
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._auth = "Basic " + base64.b64encode(":".join(auth).encode()).decode() if auth else None

    def command(self) -> list[str]:
        return [_binary("prometheus-pushgateway", "pushgateway"), f"--web.listen-address={self.address}",
                "--persistence.file=", *self.extra_args]

    def groups(self) -> list[dict[str, Any]]:
        with self._open("/api/v1/metrics") as r:
            return json.load(r)["data"]  # type: ignore[no-any-return]

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
                return r.status  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            return exc.code

    def exposition(self) -> str:
        """The gateway's ``/metrics`` page, as Prometheus scrapes it."""
        with self._open("/metrics") as r:
            return r.read().decode()  # type: ignore[no-any-return]


class Prometheus(_Server):
    """A real Prometheus on 127.0.0.1 that scrapes *gateway* every *scrape_interval* seconds.

    ``honor_labels: true`` is what makes the pushed ``job`` and ``podUUID``
    labels the series' own, as the Pushgateway's documentation asks.
    """

    what = "Prometheus"

    def __init__(self, log_dir: str, gateway: Pushgateway, port: int | None = None,
                 scrape_interval: float = 1.0) -> None:
        super().__init__(log_dir, port)
        self.gateway = gateway
        self.scrape_interval = scrape_interval
        self.config_path = os.path.join(log_dir, f"prometheus-{self.port}.yml")
        self.data_dir = os.path.join(log_dir, f"prometheus-{self.port}-data")

    def command(self) -> list[str]:
        interval = f"{int(self.scrape_interval * 1000)}ms"
        with open(self.config_path, "w") as f:
            f.write(f"""global:
  scrape_interval: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ["{self.gateway.address}"]
""")
        return [_binary("prometheus"), f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}", f"--web.listen-address={self.address}",
                "--log.level=warn"]

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        try:
            with self._open(f"/api/v1/{path}?{query}") as r:
                answer = json.load(r)
        except urllib.error.HTTPError as exc:  # a bad query: Prometheus says why in the body
            raise RuntimeError(f"Prometheus refused {params}: {exc.read().decode(errors='replace')}") from None
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus answered {answer}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector *expr* evaluates to now: ``[{"metric": {labels}, "value": [ts, "v"]}, ...]``."""
        data = self._api("query", query=expr)
        if data["resultType"] != "vector":
            raise ValueError(f"{expr!r} is a {data['resultType']}, not an instant vector")
        return data["result"]  # type: ignore[no-any-return]

    def query_range(self, expr: str, seconds: float) -> list[dict[str, Any]]:
        """*expr* over the last *seconds*, at the scrape interval."""
        end = time.time()
        return self._api("query_range", query=expr, start=end - seconds, end=end,  # type: ignore[no-any-return]
                         step=self.scrape_interval)["result"]

    def wait_until_scraping(self, timeout: float = 30) -> None:
        """Wait for the first scrape of the gateway (Prometheus starts its targets a few seconds late)."""
        wait_for(lambda: self.query('up{job="pushgateway"} == 1'), timeout, f"{self.what} to scrape the gateway")

    def label_values(self, label: str, match: str) -> list[str]:
        """What Grafana's ``label_values(match, label)`` lists."""
        return self._api(f"label/{label}/values", **{"match[]": match})  # type: ignore[no-any-return]
