"""A server child process on 127.0.0.1 (a free port, a ``/-/ready`` endpoint, its output in a log file):
what the Pushgateway and Prometheus helpers share."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import urllib.request
from typing import Any

from .waiting import wait_for

__all__ = ["LocalServer", "binary", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(*names: str) -> str:
    """The path of the first of *names* on PATH; a RuntimeError that says how to install it if none is."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(
        f"{names[0]} is not installed: run the README's test command, which installs Debian's {names[0]} with apt-get"
    )


class LocalServer:
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
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
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
