"""The agent's HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` for the kubelet's liveness probe.

Its own small server rather than ``prometheus_client.start_http_server``,
which gives every connection a thread for as long as the client keeps it open:
300 idle sockets pinned 300 threads for over 30 s. Here at most
:data:`MAX_CONNECTIONS` are open at once, a thread each: one more makes the
oldest connection that has sent nothing yet close (a scrape sends its request
at once, so idle sockets never crowd it out), and a client that sends or reads
nothing for :data:`IDLE_SECONDS` is dropped.

``/healthz`` answers 503 when the agent's main loop has not turned for
:data:`~.config.STALE_SECONDS` (a :class:`Heartbeat` the loop beats): a wedged
agent is restarted, not merely one whose port is closed.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence
from urllib.parse import parse_qs, urlsplit

from .config import STALE_SECONDS

__all__ = ["Heartbeat", "IDLE_SECONDS", "MAX_CONNECTIONS", "MetricsServer"]

MAX_CONNECTIONS = 16  # served at once: a scrape, a probe, and room for a few more
IDLE_SECONDS = 5.0  # a client silent this long (its request unsent, or its answer unread) is dropped


class Heartbeat:
    """When the agent's loop last turned; stale past *bound* seconds (healthy until its first turn)."""

    def __init__(self, bound: float = STALE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = bound
        self._clock = clock
        self._last: float | None = None

    def beat(self) -> None:
        """The loop turned (called once per turn: a plain store, safe from any thread)."""
        self._last = self._clock()

    def age(self) -> float | None:
        """Seconds since the last turn; None before the first."""
        last = self._last
        return None if last is None else self._clock() - last

    def stale(self) -> bool:
        age = self.age()
        return age is not None and age > self.bound


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of connects waits in the kernel, not 1 s for a SYN resent

    def __init__(
        self, address: tuple[str, int], render: Callable[[str, Sequence[str]], tuple[bytes, str]], heartbeat: Heartbeat
    ) -> None:
        self.render = render  # the Accept header and the names asked for -> (the page, its content type)
        self.heartbeat = heartbeat
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()
        self._waiting: dict[Any, None] = {}  # connections that have not sent their request yet, oldest first
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            # Full: the oldest connection still silent makes room (a scrape sends its request at once, so
            # idle sockets cannot crowd it out); if none is silent, this one is closed, never given a thread.
            if not (self._evict_oldest() and self._slots.acquire(timeout=1.0)):
                self.shutdown_request(request)
                return
        with self._lock:
            self._waiting[request] = None
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def request_read(self, request: Any) -> None:
        """*request*'s connection sent its request: it is answered, never evicted."""
        with self._lock:
            self._waiting.pop(request, None)

    def _evict_oldest(self) -> bool:
        with self._lock:
            oldest = next(iter(self._waiting), None)
            if oldest is None:
                return False
            del self._waiting[oldest]
        try:
            oldest.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once, and the thread ends
        except OSError:
            pass
        return True

    def _done(self, request: Any) -> None:
        with self._lock:
            self._waiting.pop(request, None)
        self._slots.release()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = IDLE_SECONDS  # every read and write of the socket (StreamRequestHandler sets it)
    protocol_version = "HTTP/1.0"  # one request per connection: nothing is kept open after the answer

    def parse_request(self) -> bool:
        self.server.request_read(self.request)
        return super().parse_request()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._healthz()
        elif path in ("/metrics", "/"):
            names = parse_qs(urlsplit(self.path).query).get("name[]", [])
            body, content_type = self.server.render(self.headers.get("Accept", ""), names)
            self._answer(200, body, content_type)
        else:
            self._answer(404, b"not found: /metrics or /healthz\n")

    def _healthz(self) -> None:
        heartbeat = self.server.heartbeat
        age = heartbeat.age()
        if heartbeat.stale():
            self._answer(503, f"the agent's loop last turned {age:.0f} s ago (bound {heartbeat.bound:g} s)\n".encode())
        else:
            self._answer(200, b"ok\n")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        pass  # a scrape every 15 s is no news; the agent's log is for its pods


class MetricsServer:
    """Serves *render*'s page and *heartbeat*'s health on *address*:*port* (0: a free one) in a daemon thread."""

    def __init__(
        self, address: str, port: int, render: Callable[[str, Sequence[str]], tuple[bytes, str]], heartbeat: Heartbeat
    ) -> None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        server_class = type("_Server", (_Server,), {"address_family": family})
        self._server = server_class((address, port), render, heartbeat)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
