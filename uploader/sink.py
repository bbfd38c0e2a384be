"""What the uploader loop drives: a sink, one receiver of one pod's reports.

Two sinks exist: :class:`uploader.push.Pusher` (the Pushgateway, latest value
per name, 0.4.1's wire format) and :class:`uploader.remote_write.RemoteWriter`
(Prometheus remote write, every report with its own timestamp). Both answer a
push the same way, so the loop needs to know neither: delivered, refused by
name (returned), or to be retried (an ``OSError`` raised).
"""
from __future__ import annotations

from typing import AbstractSet, ClassVar, Sequence, TypeAlias

from runai.reporter.settings import check_pod_uuid
from runai.reporter.spool import Report

from .keepalive import GatewayError

__all__ = ["Refusal", "Sink"]

# Why one report was not delivered and never will be: the receiver's answer, or why it was not sent.
Refusal: TypeAlias = "GatewayError | ValueError"


class Sink:
    """One receiver of one pod's reports, at *url*.

    ``push`` returns the reports refused by name, with why, and raises
    ``OSError`` for what must be retried; ``abort`` cuts a push in flight and
    is safe in a signal handler; ``close`` is safe to call twice.
    """

    # Its receiver may refuse a resend of what it already has (a TSDB refuses a sample older than the series'
    # newest): the loop then records in each checkpoint how far a push reaches before starting it, and passes
    # the ids of records an earlier uploader's push may have delivered as *resent*.
    marks_sending: ClassVar[bool] = False

    def __init__(self, url: str, pod_uuid: str, timeout: float) -> None:
        self.url = url
        self.pod_uuid = pod_uuid
        self.timeout = timeout  # seconds one request may take, answer included
        self.pushes = 0  # HTTP requests that succeeded
        self.reached = True  # some request of the last push may have reached the receiver
        # The pod's UUID goes on the wire as UTF-8 (the gateway's grouping key, a
        # series' label): one that cannot be encoded would fail every push
        # (settings made by load_settings are checked already).
        check_pod_uuid(pod_uuid)

    def push(self, records: Sequence[Report], resent: AbstractSet[int] = frozenset()) -> list[tuple[Report, Refusal]]:
        """Deliver *records*; *resent*: the ids of those an earlier push may have delivered (see marks_sending)."""
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
