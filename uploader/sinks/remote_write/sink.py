"""Sending reports to a Prometheus remote-write receiver (remote write 1.0), every one with its own timestamp.

The series are exactly what a Prometheus scraping the gateway with
``honor_labels: true`` shows (:mod:`uploader.sinks.exposition`)::

    reporter_push_gateway_metric_<name>{job="reporter_pod_info", podUUID, metric_name, push_gateway_type="metric"}
    reporter_push_gateway_parameter_<name>{job="reporter_pod_info", podUUID, param_name, param_value,
                                           push_gateway_type="parameter"}   value 1

Every report is a sample at its own time, in milliseconds; two reports of one
series in the same millisecond keep the last (by ``seq``), since a receiver
keeps one value per timestamp. That holds within one push; the spool is read in
whole milliseconds for this sink (:class:`uploader.delivery.scan.Scanner`) so that a
millisecond's reports go in one push.

How reports become samples and requests is :mod:`.samples`; what each answer of a receiver means is
:mod:`.receiver_answers`.
"""

from __future__ import annotations

import logging
from itertools import chain
from typing import AbstractSet, Sequence, Unpack

import cramjam

from runai.reporter import __version__
from runai.reporter.settings import ENV_RW_BEARER_TOKEN_FILE, ConfigError, Settings, read_secret_file
from runai.reporter.spool import REMOTE_WRITE, Report

from .. import RECEIVERS, Refusal
from ..base import SinkBase
from ..http import Auth, KeepAliveHandler, StatusError
from .receiver_answers import LongValues, ReceiverError, may_have_arrived
from .samples import Point, batches, to_points
from .write_request import encode_write_request

__all__ = ["ReceiverError", "RemoteWriter"]

logger = logging.getLogger(__name__)

_HEADERS = [
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
    ("User-Agent", f"runai-uploader/{__version__}"),
]


class RemoteWriter(SinkBase):
    """Writes reports of one pod to one remote-write receiver, such as ``http://host:9090/api/v1/write``.

    A :class:`~uploader.sinks.Sink`. Auth: *username* and *password* (basic), or
    *bearer_token*; *tenant* is sent as ``X-Scope-OrgID`` (Mimir, Cortex);
    *ca_file* verifies an https receiver. None of them is ever logged.
    """

    name = REMOTE_WRITE
    receiver = RECEIVERS[REMOTE_WRITE]
    coalesces = False  # every report is a sample at its own time
    marks_sending = True  # a TSDB refuses a sample older than its series' newest: see Sink.marks_sending

    def __init__(
        self, url: str, pod_uuid: str, *, timeout: float = 10.0, tenant: str | None = None, **auth: Unpack[Auth]
    ) -> None:
        super().__init__(url, pod_uuid, timeout)
        if auth.get("bearer_token") is not None and auth.get("username") is not None:
            raise ValueError("give the remote-write receiver a username and password or a bearer token, not both")
        if tenant and not (tenant.isascii() and tenant.isprintable()):
            # http.client would refuse the header on every request, with a ValueError no push expects.
            raise ConfigError(
                f"the remote-write tenant {tenant!r} cannot be sent as X-Scope-OrgID: "
                "give one of printable ASCII, on one line"
            )
        self._headers = _HEADERS + ([("X-Scope-OrgID", tenant)] if tenant else [])
        self._http = KeepAliveHandler.for_url(url, **auth)
        self._sent: set[tuple[tuple[str, ...], int, float]] = set()  # delivered by a push that then raised
        self._unsure: set[tuple[tuple[str, ...], int, float]] = set()  # sent in requests whose answer never came
        self._delivered: list[list[Point]] = []  # by the push under way
        self._long_values = LongValues()  # warns of a parameter value VictoriaMetrics would cut short

    @classmethod
    def for_settings(cls, settings: Settings) -> RemoteWriter:
        """The remote-write sink of *settings*' pod."""
        assert settings.remote_write_url is not None  # settings.sinks names it only when it is set
        auth = Auth(
            username=settings.rw_username,
            password=settings.rw_password,
            bearer_token=_bearer_token(settings.rw_bearer_token_file),
            ca_file=settings.rw_ca_file,
        )
        return cls(
            settings.remote_write_url,
            settings.pod_uuid,
            timeout=settings.push_timeout,
            tenant=settings.rw_tenant,
            **auth,
        )

    def close(self) -> None:
        self._http.close()

    def abort(self) -> None:
        """Cut a request in flight and make later ones fail at once; safe in a signal handler."""
        self._http.abort()

    def push(self, records: Sequence[Report], resent: AbstractSet[int] = frozenset()) -> list[tuple[Report, Refusal]]:
        """Write *records*, each a sample; return the ones refused by name, with why.

        The samples are sorted by time (a Prometheus without an out-of-order
        window silently drops a series' samples out of order within one
        request) and go in requests of at most :data:`MAX_WRITE_SAMPLES`
        samples and :data:`MAX_WRITE_BYTES`. A record that cannot be encoded
        is refused without being sent (a ValueError saying why).

        Raises OSError (:class:`ReceiverError`, TimeoutError, ConnectionError)
        when the receiver is away or overloaded; nothing is lost then, the
        caller sends the same records again.

        *resent*: the ids of records that an earlier uploader's push covered
        before it died (they may be stored); they go first, in requests of
        their own.
        """
        refused: list[tuple[Report, Refusal]] = []
        self.reached = False
        points = to_points(records, refused, resent, self._sent, self.pod_uuid, self._long_values)
        again = [point for point in points if point.resent] if resent else []
        if again:
            points = [point for point in points if not point.resent]
        try:
            for batch in chain(batches(again), batches(points)):
                refused += self._write(batch)
        except BaseException:
            # Delivered before the failure: the caller sends these again, and a Prometheus
            # without an out-of-order window would refuse them as out of order.
            self._sent.update((point.series, point.ms, point.value) for batch in self._delivered for point in batch)
            raise
        else:
            self._sent.clear()  # all of it is delivered or refused: the caller moves on
            self._unsure.clear()
        finally:
            self._delivered.clear()
        return refused

    def _write(self, batch: list[Point], twice: bool = False) -> list[tuple[Report, Refusal]]:
        """Send *batch*, splitting it around refused samples; *twice*: a 5xx on it means its content."""
        try:
            if batch:
                self._try_send(batch)
            return []
        except TimeoutError:
            if len(batch) == 1:
                raise  # even one sample is too slow: the receiver is slow or down, retried with backoff
            return self._write_in_parts(batch, twice)
        except ReceiverError as exc:
            if exc.outage:
                raise
            if len(batch) == 1:
                return self._judge_alone(batch[0], exc, twice)
            if 400 <= exc.status < 500 and not exc.content_refused:
                return [(point.record, exc) for point in batch]
            if exc.status >= 500 and not twice and not exc.names_a_sample:
                return self._write(batch, twice=True)  # once more: a passing fault gets through now
            logger.debug("the receiver refused %d samples (%s); splitting them", len(batch), exc)
        middle = len(batch) // 2
        return self._write(batch[:middle], twice=True) + self._write(batch[middle:], twice=True)

    def _write_in_parts(self, batch: list[Point], twice: bool) -> list[tuple[Report, Refusal]]:
        """A batch that timed out, split as the gateway sink splits one: only once one sample alone got through,
        so that a receiver that cannot take even one is retried, never given ever smaller requests."""
        refused = self._write(batch[:1], twice)  # raises if the receiver is slow or down
        rest = batch[1:]
        middle = len(rest) // 2
        return refused + self._write(rest[:middle], twice) + self._write(rest[middle:], twice)

    def _try_send(self, batch: list[Point]) -> None:
        try:
            self._send(batch)
        except OSError as exc:
            if may_have_arrived(exc):
                self.reached = True
                self._unsure.update((point.series, point.ms, point.value) for point in batch)
            raise
        self.reached = True

    def _judge_alone(self, point: Point, exc: ReceiverError, twice: bool) -> list[tuple[Report, Refusal]]:
        maybe_stored = point.resent or (point.series, point.ms, point.value) in self._unsure
        if exc.already_there or (maybe_stored and exc.there_if_resent):
            return []  # sent before: the receiver has it
        if exc.status < 500 or exc.names_a_sample:
            return [(point.record, exc)]
        if not twice:
            return self._write([point], twice=True)
        raise exc  # an error that names no sample, on one sample: the receiver is in trouble, not the sample

    def _send(self, batch: list[Point]) -> None:
        # By series, keyed by its encoded labels (one per series, and a bytes object keeps its hash: no
        # tuple hashed per sample), in time order as the batch is, so each series' samples are too.
        series: dict[bytes, list[tuple[int, float]]] = {}
        for point in batch:
            samples = series.get(point.labels)
            if samples is None:
                samples = series[point.labels] = []
            samples.append((point.ms, point.value))
        self._post(bytes(cramjam.snappy.compress_raw(encode_write_request(series.items()))))
        self.pushes += 1
        self._delivered.append(batch)

    def _post(self, body: bytes) -> None:
        """One request; ReceiverError for an error status. (Unit tests stand in for a receiver here.)"""
        try:
            self._http(self.url, "POST", self.timeout, self._headers, body)()
        except StatusError as exc:
            raise ReceiverError(exc.status, exc.body, exc.retry_after) from None


def _bearer_token(path: str | None) -> str | None:
    """The token in *path* (read when the sink is built, so that a rotated token is used by the next uploader).

    Read as the settings read a password file; a token that cannot go in an HTTP header (a line break inside,
    a character outside ASCII) is a ConfigError here, not a ValueError out of every push.
    """
    if path is None:
        return None
    token = read_secret_file(path, ENV_RW_BEARER_TOKEN_FILE).strip()
    if not (token.isascii() and token.isprintable()):
        raise ConfigError(f"{ENV_RW_BEARER_TOKEN_FILE}={path!r} does not hold one token of printable ASCII on one line")
    return token
