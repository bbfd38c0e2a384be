"""An HTTP proxy in front of a real Pushgateway: counts what passes and injects faults.

Faults (set :attr:`FaultProxy.fault`):

* ``None``: forward everything;
* ``"refuse"``: stop listening, so connections are refused (``start()`` again to heal);
* ``"reset"``: read the request, then reset the connection (RST) without an answer;
* ``"500"``: answer 500 without forwarding;
* ``"401"``: answer 401 Unauthorized to a push without forwarding it (a gateway whose credentials changed);
* ``"slow"``: forward, then wait :attr:`slow_seconds` before answering, longer
  than a push may take (the gateway applies pushes in order; only its answer is late);
* ``"413"``: answer 413 to a push whose body is over :attr:`max_body` bytes
  (as a gateway behind a proxy with a body limit does), forward the others;
* ``"hold_big"``: hold a push whose body is over :attr:`max_body` bytes for
  :attr:`slow_seconds` without forwarding it, then drop the connection (a
  gateway that cannot take a big push in time); forward the others;
* ``"fail_after"``: forward :attr:`fail_after` pushes, then answer 500;
* ``"answer"``: answer the next :attr:`answer_times` pushes with :attr:`answer_status` and
  :attr:`answer_headers` (a redirect, a 408, a 429 with ``Retry-After``) without forwarding them,
  then forward;
* ``"answer_after_400"``: forward until the gateway answers a push 400, then play ``"answer"`` (a gateway
  that refuses one value, then restarts behind an ingress answering 504);
* ``"stall_on"``: hold a push whose body contains :attr:`stall_bytes` for :attr:`slow_seconds` without
  forwarding it, then drop the connection (a receiver that chokes on one value); forward the others.

:attr:`push_times` is when each push arrived (``time.monotonic()``), forwarded or not.

:attr:`largest_push` is the biggest body forwarded, :attr:`most_values` the
most sample lines in one.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FaultProxy"]


class FaultProxy:
    """The proxy on 127.0.0.1 (a free port unless *port* is given) in front of the gateway at *upstream*."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        self.upstream = upstream
        self.fault: str | None = None
        self.slow_seconds = 3.0
        self.pushes = 0  # pushes forwarded to the gateway
        self.push_bytes = 0
        self.max_body = 1 << 20
        self.fail_after = 0
        self.answer_status, self.answer_headers, self.answer_times = 503, [("Retry-After", "1")], 1
        self.stall_bytes = b""
        self.push_times: list[float] = []
        self.largest_push = 0
        self.most_values = 0
        self._lock = threading.Lock()
        self._release = threading.Event()  # ends "slow" waits early on stop
        self._connections: set[socket.socket] = set()  # open client connections
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> FaultProxy:
        """Listen (again, on the same port after a "refuse")."""
        if self._server is not None:
            return self
        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), self._handler_class())
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (safe to call twice)."""
        server, self._server = self._server, None
        self._release.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        # Keep-alive connections outlive the listener; cut them too, as a
        # gateway that went away would.
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def refuse(self) -> None:
        self.fault = "refuse"
        self.stop()

    def heal(self) -> None:
        self.fault = None
        self.start()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the uploader uses it

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # An answer goes out as two writes (head, body): without this, Nagle's algorithm meets the
                # client's delayed ACK and every answer with a body takes 40 ms.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with proxy._lock:
                    proxy._connections.add(self.connection)

            def finish(self) -> None:
                with proxy._lock:
                    proxy._connections.discard(self.connection)
                try:
                    super().finish()
                except OSError:
                    pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                is_push = self.command in ("POST", "PUT")
                if is_push:
                    with proxy._lock:
                        proxy.push_times.append(time.monotonic())
                fault = proxy.fault if is_push else None
                if fault is not None and self._inject(fault, body):
                    return
                status, headers, data = self._upstream(body)
                if fault == "answer_after_400" and status == 400:
                    proxy.fault = "answer"
                if is_push and 200 <= status < 300:
                    values = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
                    with proxy._lock:
                        proxy.pushes += 1
                        proxy.push_bytes += len(body)
                        proxy.largest_push = max(proxy.largest_push, len(body))
                        proxy.most_values = max(proxy.most_values, values)
                if fault == "slow":
                    proxy._release.wait(proxy.slow_seconds)
                self._answer(status, data, headers)

            def _inject(self, fault: str, body: bytes) -> bool:
                """Play *fault* on a push of *body*; False when the push is to be forwarded after all."""
                if fault in ("reset", "refuse"):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                elif fault == "401":
                    self._answer(401, b"Unauthorized\n", [("WWW-Authenticate", 'Basic realm="gateway"')])
                elif fault == "500" or (fault == "fail_after" and proxy.pushes >= proxy.fail_after):
                    self._answer(500, b"injected failure\n", [])
                elif fault == "413" and len(body) > proxy.max_body:
                    self._answer(413, b"request entity too large\n", [])
                elif (fault == "hold_big" and len(body) > proxy.max_body) or (
                    fault == "stall_on" and proxy.stall_bytes in body
                ):
                    proxy._release.wait(proxy.slow_seconds)
                    self.close_connection = True
                elif fault == "answer" and self._answer_times_left():
                    self._answer(proxy.answer_status, b"injected answer\n", proxy.answer_headers)
                else:
                    return False
                return True

            def _answer_times_left(self) -> bool:
                with proxy._lock:
                    proxy.answer_times -= 1
                    return proxy.answer_times >= 0

            def _upstream(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(proxy.upstream, timeout=10)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    return response.status, response.getheaders(), response.read()
                finally:
                    conn.close()

            def _answer(self, status: int, data: bytes, headers: list[tuple[str, str]]) -> None:
                try:
                    self.send_response(status)
                    for key, value in headers:
                        if key.lower() not in ("content-length", "connection", "transfer-encoding", "date", "server"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a push timeout): nothing to tell it

            do_GET = do_POST = do_PUT = do_DELETE = _forward

        return Handler
