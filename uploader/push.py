"""Pushing to the Pushgateway in runai 0.4.1's wire format.

Dashboards built on runai 0.4.1 read exactly these names, so they must not
change:

* group ``job="reporter_pod_info"``, grouping key ``podUUID=<pod>``;
* metric ``<name>``: gauge ``reporter_push_gateway_metric_<name>`` with labels
  ``metric_name=<name>``, ``push_gateway_type="metric"``;
* parameter ``<name>``: gauge ``reporter_push_gateway_parameter_<name>`` with
  labels ``param_name=<name>``, ``param_value=<value>``,
  ``push_gateway_type="parameter"``, value 1.

Every push is a POST (``pushadd``): it replaces the metrics it names and
leaves the group's others alone, so pushing only what changed is correct.

Limits (docs/operations.md, "Limits"): a push carries at most
:data:`MAX_PUSH_VALUES` values and :data:`MAX_PUSH_BYTES` of request body;
``timeout`` bounds a whole request, connection to last byte; at most
:data:`MAX_ANSWER_BYTES` of an answer are read.
"""
from __future__ import annotations

import base64
import http.client
import logging
import re
import socket
import ssl
import threading
import time
from typing import Callable, Iterator, Sequence, TypeAlias
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, pushadd_to_gateway
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runai.reporter._config import check_pod_uuid
from runai.reporter.spool import METRIC
from runai.reporter.spool import Metric as MetricRecord
from runai.reporter.spool import Report as Record

__all__ = [
    "GatewayError", "Pusher", "JOB", "MAX_ANSWER_BYTES", "MAX_PUSH_BYTES", "MAX_PUSH_VALUES", "METRIC_PREFIX",
    "PARAMETER_PREFIX", "exposition_name",
]

logger = logging.getLogger(__name__)

JOB = "reporter_pod_info"
METRIC_PREFIX = "reporter_push_gateway_metric_"
PARAMETER_PREFIX = "reporter_push_gateway_parameter_"
# runai 0.4.1 pushed an empty HELP; the same keeps mixed fleets consistent on
# one gateway (a gateway may refuse one name with two HELP texts).
_HELP = ""

MAX_PUSH_BYTES = 1 << 20  # request body of one push; a bigger batch is sent in several
MAX_PUSH_VALUES = 10_000  # values in one push
MAX_ANSWER_BYTES = 64 << 10  # of an answer's body read; past it the connection is dropped

# Statuses that refuse what was pushed, not how it was sent: 400 (say, a name
# already used with another type in another group) and 413 (too big).
_REFUSALS = (400, 413)
_GATEWAY_TIMEOUT = 504  # a proxy in front of the gateway gave up waiting: a timeout, as the uploader's own
_EXPOSITION_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class GatewayError(OSError):
    """The Pushgateway answered with an HTTP error status."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"Pushgateway answered {status} {reason}: {body.strip()[:500]}")
        self.status = status
        self.body = body

    @property
    def rejects_content(self) -> bool:
        """True for 400 and 413: the gateway refused what was pushed, not how it was sent."""
        return self.status in _REFUSALS


# Why a record was refused: the gateway's answer, or why it was not sent.
Refusal: TypeAlias = "GatewayError | ValueError"


def exposition_name(record: Record) -> str:
    return (METRIC_PREFIX if record.kind == METRIC else PARAMETER_PREFIX) + record.name


class _Samples(Collector):
    def __init__(self, records: Sequence[Record]) -> None:
        self._records = records

    def collect(self) -> Iterator[Metric]:
        for record in self._records:
            if isinstance(record, MetricRecord):
                family = GaugeMetricFamily(exposition_name(record), _HELP,
                                           labels=("metric_name", "push_gateway_type"))
                family.add_metric((record.name, "metric"), record.value)
            else:
                family = GaugeMetricFamily(exposition_name(record), _HELP,
                                           labels=("param_name", "param_value", "push_gateway_type"))
                family.add_metric((record.name, str(record.value), "parameter"), 1.0)
            yield family


Handler = Callable[[str, str, "float | None", "list[tuple[str, str]]", bytes], Callable[[], None]]


class _KeepAliveHandler:
    """A prometheus_client push handler that reuses one HTTP connection.

    The stock handler opens a connection per push; at one push per interval
    that hardly matters, but on a busy gateway keep-alive saves a TCP
    handshake per push and keeps latency low.

    *timeout* bounds the whole request: a socket timeout bounds each read
    only, and a gateway that trickles its answer a byte at a time would hold
    a push for ever. A timer shuts the socket down at the deadline instead.
    """

    def __init__(self, authorization: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._conn: http.client.HTTPConnection | None = None
        self._origin = ""
        self._authorization = authorization  # a ready "Basic ..." header value, never logged
        self._ssl_context = ssl_context
        self._aborted = False
        self._expired = False
        # The socket being connected: http.client sets conn.sock only once
        # connect() returns, and a gateway that never completes the handshake
        # would hold a stop or a timeout until then.
        self._connecting: socket.socket | None = None

    def __call__(self, url: str, method: str, timeout: float | None,
                 headers: list[tuple[str, str]], data: bytes) -> Callable[[], None]:
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

    def _connect(self, address: tuple[str, int], timeout: float | None,
                 source_address: tuple[str, int] | None = None) -> socket.socket:
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

    def _send(self, url: str, method: str, timeout: float | None,
              headers: list[tuple[str, str]], data: bytes) -> None:
        if self._aborted:
            raise ConnectionAbortedError("the uploader is stopping; the push was not sent")
        self._expired = False
        timer = None
        if timeout is not None:
            timer = threading.Timer(timeout, self._expire)
            timer.daemon = True
            timer.start()
        try:
            status, reason, body = self._attempts(url, method, timeout, headers, data)
        except (http.client.HTTPException, OSError) as exc:
            self.close()
            if not (self._aborted or self._expired):
                if isinstance(exc, OSError):
                    raise
                # A malformed answer (say, a header line longer than http.client allows).
                raise ConnectionError(f"the gateway's answer is not valid HTTP: {exc!r}") from None
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()  # no late _expire() on the next request's socket
        if self._aborted or self._expired:
            # Cut short, even where http.client took the truncated answer for a whole
            # one: sending again is harmless (a push replaces what it names), trusting it is not.
            self.close()
            if self._aborted:
                raise ConnectionAbortedError("the uploader is stopping; the push was cut short")
            raise TimeoutError(f"the gateway did not answer in full within {timeout} s")
        if not 200 <= status < 300:
            raise GatewayError(status, reason, body)

    def _attempts(self, url: str, method: str, timeout: float | None,
                  headers: list[tuple[str, str]], data: bytes) -> tuple[int, str, str]:
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
                # A gateway may close an idle keep-alive connection; a reused
                # one earns a second try on a fresh connection.
                self.close()
                if attempt == 1 or not reused or self._expired or self._aborted:
                    raise
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, headers: list[tuple[str, str]],
                 data: bytes) -> tuple[int, str, str]:
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
        return response.status, response.reason, body.decode("utf-8", errors="replace")


class Pusher:
    """Pushes records of one pod to one Pushgateway."""

    def __init__(self, gateway_url: str, pod_uuid: str, *, timeout: float = 10.0,
                 handler: Handler | None = None, username: str | None = None, password: str | None = None,
                 ca_file: str | None = None) -> None:
        self.gateway_url = gateway_url
        self.pod_uuid = pod_uuid
        self.timeout = timeout
        self.pushes = 0  # HTTP requests that succeeded
        # The grouping key goes into the URL as UTF-8: a podUUID that cannot be
        # encoded would fail every push (settings made by load_settings are checked).
        check_pod_uuid(pod_uuid)
        authorization = None
        if username is not None and password is not None:
            token = base64.b64encode(f"{username}:{password}".encode()).decode()
            authorization = f"Basic {token}"
        context = ssl.create_default_context(cafile=ca_file) if gateway_url.startswith("https://") else None
        self._own_handler = _KeepAliveHandler(authorization, context) if handler is None else None
        self._handler: Handler = handler or self._own_handler  # type: ignore[assignment]

    def close(self) -> None:
        if self._own_handler is not None:
            self._own_handler.close()

    def abort(self) -> None:
        """Cut a push in flight and make later ones fail at once; safe in a signal handler."""
        if self._own_handler is not None:
            self._own_handler.abort()

    def push(self, records: Sequence[Record]) -> list[tuple[Record, Refusal]]:
        """Push *records*; return the ones refused by name, with why.

        Records go in batches of at most :data:`MAX_PUSH_VALUES` values and
        :data:`MAX_PUSH_BYTES`. A batch the gateway refuses (400, 413) is
        halved until the refused records stand alone, which lets every other
        record through. A batch that times out, or that a proxy answers with
        504, is split too, after one value alone got through (a gateway that
        cannot take even one value in time is slow or down, not overwhelmed).
        A record that cannot be encoded (say, a lone surrogate in a parameter
        value) or is bigger than a push may be is refused without being sent
        (with a ValueError saying why).

        Raises :class:`GatewayError` for other error statuses, and OSError
        (TimeoutError included) when the gateway cannot be reached or does
        not answer in time; nothing is lost then, the caller retries.
        """
        refused: list[tuple[Record, Refusal]] = []
        batch: list[Record] = []
        batch_bytes = 0
        for record in records:
            try:
                size = _encoded_size(record)
            except ValueError as exc:
                refused.append((record, exc))
                continue
            if len(batch) >= MAX_PUSH_VALUES or batch_bytes + size > MAX_PUSH_BYTES:
                refused += self._push_batch(batch)
                batch, batch_bytes = [], 0
            batch.append(record)
            batch_bytes += size
        return refused + self._push_batch(batch)

    def _push_batch(self, records: Sequence[Record]) -> list[tuple[Record, Refusal]]:
        if not records:
            return []
        try:
            self._send(records)
            return []
        except (GatewayError, TimeoutError) as exc:
            if isinstance(exc, GatewayError) and exc.status != _GATEWAY_TIMEOUT:
                if not exc.rejects_content:
                    raise
                if len(records) == 1:
                    return [(records[0], exc)]
                refused = []
            else:  # timed out
                if len(records) == 1:
                    raise  # even one value is too slow: an outage, retried with backoff
                refused = self._push_batch(records[:1])  # raises if the gateway is slow or down
                records = records[1:]
        middle = len(records) // 2
        return refused + self._push_batch(records[:middle]) + self._push_batch(records[middle:])

    def _send(self, records: Sequence[Record]) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Samples(records))
        pushadd_to_gateway(
            self.gateway_url,
            job=JOB,
            registry=registry,
            grouping_key={"podUUID": self.pod_uuid},
            timeout=self.timeout,
            handler=self._handler,
        )
        self.pushes += 1


def _encoded_size(record: Record) -> int:
    """An upper bound of *record*'s bytes in a push; ValueError if it cannot be pushed at all."""
    name = exposition_name(record)
    if not _EXPOSITION_NAME.fullmatch(name):
        raise ValueError(f"not sent: {ascii(name)} is not a valid Prometheus metric name")
    try:
        value = str(record.value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"not sent: its value cannot be encoded as UTF-8 ({exc.reason} at character {exc.start}; "
                         "undecodable bytes, as os.fsdecode() gives them, do that)") from None
    # The name three times (HELP, TYPE, sample), the label values escaped
    # (at most doubled), and the fixed text of the lines.
    size = 3 * len(name) + 2 * (len(record.name) + len(value)) + 128
    if size > MAX_PUSH_BYTES:
        raise ValueError(f"not sent: it takes up to {size} bytes in a push, more than one push may carry "
                         f"({MAX_PUSH_BYTES} bytes)")
    return size
