"""Pushing to the Pushgateway in runai 0.4.1's wire format (:mod:`uploader.sinks.exposition`).

Every push is a POST (``pushadd``): it replaces the metrics it names and
leaves the group's others alone, so pushing only what changed is correct.

Limits (docs/operations.md, "Limits"): a push carries at most
:data:`MAX_PUSH_VALUES` values and :data:`MAX_PUSH_BYTES` of request body;
``timeout`` bounds a whole request, connection to last byte; at most
:data:`MAX_ANSWER_BYTES` of an answer are read (:mod:`uploader.sinks.http`).
"""

from __future__ import annotations

from typing import AbstractSet, Sequence, Unpack

from prometheus_client import CollectorRegistry, pushadd_to_gateway

from runai.reporter.settings import Settings
from runai.reporter.spool import GATEWAY, Report

from .. import RECEIVERS, Refusal
from ..base import SinkBase
from ..exposition import JOB, encoded_size
from ..http import MAX_ANSWER_BYTES, Auth, Handler, KeepAliveHandler, StatusError
from .samples import Samples

__all__ = ["GatewayError", "Pusher", "MAX_ANSWER_BYTES", "MAX_PUSH_BYTES", "MAX_PUSH_VALUES"]

MAX_PUSH_BYTES = 1 << 20  # request body of one push; a bigger batch is sent in several
MAX_PUSH_VALUES = 10_000  # values in one push

_GATEWAY_TIMEOUT = 504  # a proxy in front of the gateway gave up waiting: a timeout, as the uploader's own
# Statuses that refuse what was pushed, not how it was sent: 400 (say, a name
# already used with another type in another group) and 413 (too big).
_REFUSALS = (400, 413)


class GatewayError(StatusError):
    """The Pushgateway answered with an HTTP error status."""

    def __init__(self, status: int, reason: str, body: str, retry_after: float | None = None) -> None:
        super().__init__(status, reason, body, who="Pushgateway", retry_after=retry_after)

    @property
    def rejects_content(self) -> bool:
        """True for 400 and 413: the gateway refused what was pushed, not how it was sent."""
        return self.status in _REFUSALS


class Pusher(SinkBase):
    """Pushes records of one pod to one Pushgateway (a :class:`~uploader.sinks.Sink`).

    *auth*: :class:`~uploader.sinks.http.Auth`, none of it ever logged; *handler*, if given, replaces the HTTP side.
    """

    name = GATEWAY
    receiver = RECEIVERS[GATEWAY]
    coalesces = True  # the gateway keeps the latest value of each name
    marks_sending = False  # a push replaces what it names: a resend is never refused

    def __init__(
        self, url: str, pod_uuid: str, *, timeout: float = 10.0, handler: Handler | None = None, **auth: Unpack[Auth]
    ) -> None:
        super().__init__(url, pod_uuid, timeout)
        self._answered = False  # some request of the push under way was answered in time
        self._own_handler = None if handler is not None else KeepAliveHandler.for_url(url, **auth)
        self._handler: Handler = handler or self._own_handler  # type: ignore[assignment]

    @classmethod
    def for_settings(cls, settings: Settings) -> Pusher:
        """The gateway sink of *settings*' pod."""
        assert settings.gateway_url is not None  # settings.sinks names it only when it is set
        auth = Auth(username=settings.username, password=settings.password, ca_file=settings.ca_file)
        return cls(settings.gateway_url, settings.pod_uuid, timeout=settings.push_timeout, **auth)

    def close(self) -> None:
        if self._own_handler is not None:
            self._own_handler.close()

    def abort(self) -> None:
        """Cut a push in flight and make later ones fail at once; safe in a signal handler."""
        if self._own_handler is not None:
            self._own_handler.abort()

    def push(self, records: Sequence[Report], resent: AbstractSet[int] = frozenset()) -> list[tuple[Report, Refusal]]:
        """Push *records*; return the ones refused by name, with why. (*resent* does not matter: a push replaces.)

        Records go in batches of at most :data:`MAX_PUSH_VALUES` values and
        :data:`MAX_PUSH_BYTES`. A batch the gateway refuses (400, 413) is
        halved until the refused records stand alone, which lets every other
        record through. A batch that times out, or that a proxy answers with
        504, is halved too (see :meth:`_timed_out`): a value that alone stalls
        a push is refused by name once another got through and an empty push
        right after it is answered in time; a gateway that takes nothing in
        time is slow or down (raised).
        A record that cannot be encoded (say, a lone surrogate in a parameter
        value) or is bigger than a push may be is refused without being sent
        (with a ValueError saying why).

        Raises :class:`GatewayError` for other error statuses, and OSError
        (TimeoutError included) when the gateway cannot be reached or does
        not answer in time; nothing is lost then, the caller retries.
        """
        refused: list[tuple[Report, Refusal]] = []
        batch: list[Report] = []
        batch_bytes = 0
        self._answered = False
        for record in records:
            try:
                size = _push_size(record)
            except ValueError as exc:
                refused.append((record, exc))
                continue
            if len(batch) >= MAX_PUSH_VALUES or batch_bytes + size > MAX_PUSH_BYTES:
                refused += self._push_batch(batch)
                batch, batch_bytes = [], 0
            batch.append(record)
            batch_bytes += size
        return refused + self._push_batch(batch)

    def _push_batch(self, records: Sequence[Report], split_timeouts: bool = True) -> list[tuple[Report, Refusal]]:
        if not records:
            return []
        try:
            self._send(records)
            return []
        except (GatewayError, TimeoutError) as exc:
            if _timed_out(exc):
                if not split_timeouts:
                    raise
                return self._timed_out(records, exc)
            assert isinstance(exc, GatewayError)
            self._answered = True  # in time: the gateway is up
            if not exc.rejects_content:
                raise
            if len(records) == 1:
                return [(records[0], exc)]
        middle = len(records) // 2
        return self._push_batch(records[:middle]) + self._push_batch(records[middle:])

    def _timed_out(self, records: Sequence[Report], exc: OSError) -> list[tuple[Report, Refusal]]:
        """*records*' push timed out: find what the gateway takes, or raise if it takes nothing in time.

        A lone value whose push times out while another push of this one got an answer, and the empty
        push sent right after it is answered in time (:meth:`_probe`), stalls the gateway by itself
        (say, a proxy in front chokes on it): refused by name. Until something is
        answered, the second half is tried whole before the first is halved again, so that a stalling
        value first is no reason to retry the whole batch for ever, and a gateway that is down costs
        about two timeouts per halving, not one per value.
        """
        if len(records) == 1:
            if self._answered:
                self._probe()
                return [
                    (
                        records[0],
                        ValueError(
                            f"not delivered: a push of it alone had no answer in time ({exc}) while the gateway "
                            "answered other pushes, an empty one right after it included: it stalls the gateway or "
                            "a proxy in front of it"
                        ),
                    )
                ]
            raise exc  # even one value is too slow, and nothing else got through: an outage, retried
        middle = len(records) // 2
        first, second = records[:middle], records[middle:]
        if self._answered:
            return self._push_batch(first) + self._push_batch(second)
        try:
            refused = self._push_batch(second, split_timeouts=False)
        except (GatewayError, TimeoutError) as again:
            if not _timed_out(again):
                raise
            refused = self._push_batch(first)  # raises when nothing of it is answered in time either
            return refused + self._push_batch(second)
        return refused + self._push_batch(first)

    def _probe(self) -> None:
        """Raise unless the gateway takes an empty push in time, before a lone value is refused for stalling.

        Another push answered earlier is no proof that the gateway still answers: a proxy in front of it
        may answer 504 for a while (the gateway restarting). Only a prompt answer now makes the value's
        own stall the reason; otherwise the timeout or error is raised, and the push retried with backoff.
        An empty push changes nothing but the group's push time.
        """
        self._send(())

    def _send(self, records: Sequence[Report]) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Samples(records))
        try:
            pushadd_to_gateway(
                self.url,
                job=JOB,
                registry=registry,
                grouping_key={"podUUID": self.pod_uuid},
                timeout=self.timeout,
                handler=self._handler,
            )
        except StatusError as exc:
            raise GatewayError(exc.status, exc.reason, exc.body, exc.retry_after) from None
        self.pushes += 1
        self._answered = True


def _timed_out(exc: OSError) -> bool:
    """The push had no answer in time: the uploader's own timeout, or a proxy's 504."""
    return isinstance(exc, TimeoutError) or (isinstance(exc, GatewayError) and exc.status == _GATEWAY_TIMEOUT)


def _push_size(record: Report) -> int:
    """An upper bound of *record*'s bytes in a push; ValueError if it cannot be pushed at all."""
    size = encoded_size(record)
    if size > MAX_PUSH_BYTES:
        raise ValueError(
            f"not sent: it takes up to {size} bytes in a push, more than one push may carry ({MAX_PUSH_BYTES} bytes)"
        )
    return size
