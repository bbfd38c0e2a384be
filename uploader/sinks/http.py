"""The HTTP side of every sink: a keep-alive transport with a whole-request deadline.

It knows no receiver: an error status is a :class:`StatusError` that says "the
server", and each sink raises its own subclass naming its receiver. The handler
is prometheus_client's push handler signature, which the remote-write sink calls
directly. At most :data:`MAX_ANSWER_BYTES` of an answer are read; ``timeout`` bounds a
whole request, connection to last byte (docs/operations.md, "Limits").
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import http.client
import socket
import ssl
import threading
import time
from typing import Callable, TypedDict, Unpack
from urllib.parse import urlsplit

__all__ = ["Auth", "Handler", "KeepAliveHandler", "MAX_ANSWER_BYTES", "StatusError", "retry_after"]

MAX_ANSWER_BYTES = 64 << 10  # of an answer's body read; past it the connection is dropped
_ASKS_TO_WAIT = (429, 503)  # the statuses whose Retry-After the delivery loop honours (RFC 9110, RFC 6585)


class Auth(TypedDict, total=False):
    """How a sink proves itself to its receiver, never logged: basic auth (*username* and *password*) or a
    *bearer_token*; *ca_file* verifies an https receiver."""

    username: str | None
    password: str | None
    bearer_token: str | None
    ca_file: str | None


class StatusError(OSError):
    """A receiver answered with an HTTP error status; *who* names it in the message (a sink's subclass does).

    :attr:`retry_after`: the seconds a 429 or 503 asked the sender to wait (its ``Retry-After``), or None.
    """

    def __init__(
        self, status: int, reason: str, body: str, who: str = "the server", retry_after: float | None = None
    ) -> None:
        # One printable line, whatever the server sent: an error page must not forge lines in the pod's log.
        text, reason = " ".join(body.split())[:500], " ".join(reason.split())
        text, reason = (part if part.isprintable() else repr(part) for part in (text, reason))
        super().__init__(f"{who} answered {status}{' ' + reason if reason else ''}: {text}")
        self.status = status
        self.reason = reason
        self.body = body
        self.retry_after = retry_after if status in _ASKS_TO_WAIT else None


def retry_after(value: str | None, now: float) -> float | None:
    """A ``Retry-After`` header's wait in seconds from *now* (a Unix time): delay-seconds or an HTTP date.

    None for no header or one that is neither; a date in the past is 0. The delivery loop bounds it
    (:data:`uploader.delivery.schedule.MAX_RETRY_AFTER`).
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime's form names no zone: RFC 9110 has every HTTP date in GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - now)


Handler = Callable[[str, str, "float | None", "list[tuple[str, str]]", bytes], Callable[[], None]]


class KeepAliveHandler:
    """A prometheus_client push handler that reuses one HTTP connection.

    The stock handler opens a connection per push; at one push per interval
    that hardly matters, but on a busy receiver keep-alive saves a TCP
    handshake per push and keeps latency low.

    *timeout* bounds the whole request: a socket timeout bounds each read
    only, and a receiver that trickles its answer a byte at a time would hold
    a push for ever. A timer shuts the socket down at the deadline instead.
    """

    @classmethod
    def for_url(cls, url: str, **auth: Unpack[Auth]) -> KeepAliveHandler:
        """A handler for *url* with *auth*: basic auth (*username*, *password*) or a *bearer_token*, and *ca_file*."""
        username, password, bearer_token = auth.get("username"), auth.get("password"), auth.get("bearer_token")
        authorization = None
        if username is not None and password is not None:
            authorization = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        elif bearer_token is not None:
            authorization = f"Bearer {bearer_token}"
        # As _attempts reads the scheme (urlsplit lowercases it): "HTTPS://..." must not drop *ca_file*.
        context = ssl.create_default_context(cafile=auth.get("ca_file")) if urlsplit(url).scheme == "https" else None
        return cls(authorization, context)

    def __init__(self, authorization: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._conn: http.client.HTTPConnection | None = None
        self._origin = ""
        self._authorization = authorization  # a ready "Basic ..." header value, never logged
        self._ssl_context = ssl_context
        self._aborted = False
        self._expired = False
        # The socket being connected: http.client sets conn.sock only once
        # connect() returns, and a receiver that never completes the handshake
        # would hold a stop or a timeout until then.
        self._connecting: socket.socket | None = None

    def __call__(
        self, url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        return lambda: self._send(url, method, timeout, headers, data)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._connecting = None
        if conn is not None:
            conn.close()

    def abort(self) -> None:
        """Cut the request in flight, and refuse later ones.

        Called from signal handlers, so it takes no lock: it sets a flag and
        shuts the socket down, which wakes a blocked read at once.
        """
        self._aborted = True
        self._cut()

    def _cut(self) -> None:
        conn = self._conn
        for sock in (conn.sock if conn is not None else None, self._connecting):
            if sock is not None:
                try:
                    # socket.socket's own shutdown: an SSLSocket's would also drop its TLS state
                    # under the reader. On Linux it also aborts a connect() in progress.
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    def _connect(
        self, address: tuple[str, int], timeout: float | None, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        """socket.create_connection, publishing each socket to :meth:`_cut` before connecting it."""
        host, port = address
        error: OSError = ConnectionError(f"cannot resolve {host!r}")
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            self._connecting = sock
            try:
                if self._aborted or self._expired:  # cut before this socket existed
                    raise ConnectionAbortedError("cut short while connecting")
                sock.settimeout(timeout)
                if source_address is not None:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
                if self._aborted or self._expired:
                    break
        raise error

    def _expire(self) -> None:
        self._expired = True
        self._cut()

    def _send(self, url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes) -> None:
        if self._aborted:
            raise ConnectionAbortedError("the uploader is stopping; the push was not sent")
        self._expired = False
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, self._expire)
            timer.daemon = True
            timer.start()
        try:
            status, reason, body, wait = self._attempts(url, method, timeout, headers, data)
        except (http.client.HTTPException, OSError) as exc:
            self.close()
            if not (self._aborted or self._expired):
                if isinstance(exc, OSError):
                    raise
                # A malformed answer (say, a header line longer than http.client allows).
                raise ConnectionError(f"the server's answer is not valid HTTP: {exc!r}") from None
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()  # no late _expire() on the next request's socket
        if self._aborted or self._expired:
            # Cut short, even where http.client took the truncated answer for a whole
            # one: sending again is harmless (each sink's resend is safe), trusting it is not.
            self.close()
            if self._aborted:
                raise ConnectionAbortedError("the uploader is stopping; the push was cut short")
            raise TimeoutError(f"the server did not answer in full within {timeout} s")
        if not 200 <= status < 300:
            raise StatusError(status, reason, body, retry_after=retry_after(wait, time.time()))

    def _attempts(
        self, url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> tuple[int, str, str, str | None]:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        reused = self._conn is not None and origin == self._origin
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in range(2 if reused else 1):
            if self._conn is None or origin != self._origin:
                self.close()
                if deadline is not None:  # connecting is not cut by the timer: give it what is left
                    timeout = max(0.001, deadline - time.monotonic())
                if parts.scheme == "https":
                    self._conn = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=self._ssl_context)
                else:
                    self._conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
                self._conn._create_connection = self._connect  # type: ignore[attr-defined]
                self._origin = origin
            try:
                return self._request(method, path, headers, data)
            except (http.client.HTTPException, OSError):
                # A receiver may close an idle keep-alive connection; a reused
                # one earns a second try on a fresh connection.
                self.close()
                if attempt == 1 or not reused or self._expired or self._aborted:
                    raise
        raise AssertionError("unreachable")

    def _request(
        self, method: str, path: str, headers: list[tuple[str, str]], data: bytes
    ) -> tuple[int, str, str, str | None]:
        """(status, reason, the start of the body, its Retry-After header)."""
        assert self._conn is not None
        all_headers = dict(headers)
        if self._authorization:
            all_headers["Authorization"] = self._authorization
        self._conn.request(method, path, body=data, headers=all_headers)
        if self._aborted or self._expired:  # cut while connecting, before the socket could be shut down
            raise ConnectionAbortedError("cut short")
        response = self._conn.getresponse()
        # An error page can be any size: read the start, which says why, and drop the rest with the connection.
        body = b""
        while len(body) < MAX_ANSWER_BYTES:
            chunk = response.read(MAX_ANSWER_BYTES - len(body))
            if not chunk:
                break
            body += chunk
        if response.will_close or not response.isclosed():
            self.close()
        return (
            response.status,
            response.reason,
            body.decode("utf-8", errors="replace"),
            response.getheader("Retry-After"),
        )
