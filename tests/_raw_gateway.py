"""A raw HTTP server on 127.0.0.1 that reads each request whole, then misbehaves: for the hostile-gateway tests."""

from __future__ import annotations

import socket
import threading

HUGE_ANSWER = 300 << 20  # the error page that took the uploader to 641 MB


class RawGateway:
    """A TCP server on 127.0.0.1 that reads each HTTP request whole, then misbehaves.

    * ``hold``: never answers (until stopped);
    * ``trickle``: answers 200, then trickles a header line one byte every 0.1 s;
    * ``huge``: answers 500 with a :data:`HUGE_ANSWER`-byte body, as fast as the client reads;
    * ``accept``: answers 204 to every request at once, keeping the connection
      (a sink that keeps up with any uploader, where the real gateway's own
      cost would dominate a measurement of the uploader's).
    """

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.largest_body = 0
        self.most_values = 0
        self.values = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._clients: list[socket.socket] = []
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def stop(self) -> None:
        self._stop.set()
        for client in self._clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(10)
        self._listener.close()
        for client in self._clients:
            client.close()

    def __enter__(self) -> RawGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._clients.append(client)
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = client.recv(1 << 20)
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(data) < length:
                    chunk = client.recv(1 << 20)
                    if not chunk:
                        return
                    data += chunk
                body, data = data[:length], data[length:]
                values = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
                self.largest_body = max(self.largest_body, len(body))
                self.most_values = max(self.most_values, values)
                self.values += values
                self.requests += 1
                if self.behaviour != "accept":
                    getattr(self, f"_{self.behaviour}")(client)
                    return
                client.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        except OSError:
            pass  # the client hung up: what these servers are for

    def _hold(self, client: socket.socket) -> None:
        self._stop.wait()

    def _trickle(self, client: socket.socket) -> None:
        client.sendall(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
        while not self._stop.wait(0.1):
            client.sendall(b"x")

    def _huge(self, client: socket.socket) -> None:
        client.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % HUGE_ANSWER)
        block = b"e" * (1 << 20)
        for _ in range(HUGE_ANSWER // len(block)):
            if self._stop.is_set():
                return
            client.sendall(block)
