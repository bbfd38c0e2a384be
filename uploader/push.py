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
"""
from __future__ import annotations

import base64
import http.client
import logging
import ssl
from typing import Callable, Iterator, Sequence
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, pushadd_to_gateway
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runai.reporter.spool import METRIC, Record

__all__ = ["GatewayError", "Pusher", "JOB", "METRIC_PREFIX", "PARAMETER_PREFIX", "exposition_name"]

logger = logging.getLogger(__name__)

JOB = "reporter_pod_info"
METRIC_PREFIX = "reporter_push_gateway_metric_"
PARAMETER_PREFIX = "reporter_push_gateway_parameter_"
# runai 0.4.1 pushed an empty HELP; the same keeps mixed fleets consistent on
# one gateway (a gateway may refuse one name with two HELP texts).
_HELP = ""


class GatewayError(OSError):
    """The Pushgateway answered with an HTTP error status."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"Pushgateway answered {status} {reason}: {body.strip()[:500]}")
        self.status = status
        self.body = body

    @property
    def rejects_content(self) -> bool:
        """True for 400: the gateway refused what was pushed, not how it was sent."""
        return self.status == 400


def exposition_name(record: Record) -> str:
    return (METRIC_PREFIX if record.kind == METRIC else PARAMETER_PREFIX) + record.name


class _Samples(Collector):
    def __init__(self, records: Sequence[Record]) -> None:
        self._records = records

    def collect(self) -> Iterator[Metric]:
        for record in self._records:
            if record.kind == METRIC:
                family = GaugeMetricFamily(exposition_name(record), _HELP,
                                           labels=("metric_name", "push_gateway_type"))
                family.add_metric((record.name, "metric"), record.value)  # type: ignore[arg-type]
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
    """

    def __init__(self, authorization: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self._conn: http.client.HTTPConnection | None = None
        self._origin = ""
        self._authorization = authorization  # a ready "Basic ..." header value, never logged
        self._ssl_context = ssl_context

    def __call__(self, url: str, method: str, timeout: float | None,
                 headers: list[tuple[str, str]], data: bytes) -> Callable[[], None]:
        return lambda: self._send(url, method, timeout, headers, data)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _send(self, url: str, method: str, timeout: float | None,
              headers: list[tuple[str, str]], data: bytes) -> None:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        reused = self._conn is not None and origin == self._origin
        for attempt in range(2 if reused else 1):
            if self._conn is None or origin != self._origin:
                self.close()
                if parts.scheme == "https":
                    self._conn = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=self._ssl_context)
                else:
                    self._conn = http.client.HTTPConnection(parts.netloc, timeout=timeout)
                self._origin = origin
            try:
                status, reason, body = self._request(method, path, headers, data)
                break
            except (http.client.HTTPException, OSError):
                # A gateway may close an idle keep-alive connection; a reused
                # one earns a second try on a fresh connection.
                self.close()
                if attempt == 1 or not reused:
                    raise
        if not 200 <= status < 300:
            raise GatewayError(status, reason, body)

    def _request(self, method: str, path: str, headers: list[tuple[str, str]],
                 data: bytes) -> tuple[int, str, str]:
        assert self._conn is not None
        all_headers = dict(headers)
        if self._authorization:
            all_headers["Authorization"] = self._authorization
        self._conn.request(method, path, body=data, headers=all_headers)
        response = self._conn.getresponse()
        body = response.read().decode("utf-8", errors="replace")
        if response.will_close:
            self.close()
        return response.status, response.reason, body


class Pusher:
    """Pushes records of one pod to one Pushgateway."""

    def __init__(self, gateway_url: str, pod_uuid: str, *, timeout: float = 10.0,
                 handler: Handler | None = None, username: str | None = None, password: str | None = None,
                 ca_file: str | None = None) -> None:
        self.gateway_url = gateway_url
        self.pod_uuid = pod_uuid
        self.timeout = timeout
        self.pushes = 0  # HTTP requests that succeeded
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

    def push(self, records: Sequence[Record]) -> list[tuple[Record, GatewayError]]:
        """Push *records*; return the ones the gateway rejected (400), with why.

        A 400 names what the gateway refused (say, a name already used with
        another type in another group). Halving the batch until the refused
        records stand alone lets every other record through.

        Raises :class:`GatewayError` for other error statuses, and OSError
        when the gateway cannot be reached; nothing is lost then, the caller
        retries.
        """
        if not records:
            return []
        try:
            self._send(records)
            return []
        except GatewayError as exc:
            if not exc.rejects_content:
                raise
            if len(records) == 1:
                return [(records[0], exc)]
        middle = len(records) // 2
        return self.push(records[:middle]) + self.push(records[middle:])

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

