"""The sinks: the receivers one pod's reports are delivered to, behind one :class:`Sink` Protocol.

Two exist: :mod:`.pushgateway` (the Pushgateway, latest value per name, 0.4.1's
wire format) and :mod:`.remote_write` (Prometheus remote write, every report with
its own timestamp). Both answer a push the same way, so the delivery loop knows
neither: delivered, refused by name (returned), or to be retried (an ``OSError``
raised). :mod:`.table` builds the one a name in :attr:`Settings.sinks` names.

Light on purpose: this module imports neither sink, and the table imports a
sink's dependencies (prometheus_client, cramjam) only when it builds one, so
``status`` may read :data:`RECEIVERS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, AbstractSet, Protocol, Sequence, TypeAlias

from runai.reporter.spool import GATEWAY, REMOTE_WRITE, Report

if TYPE_CHECKING:
    from .http import StatusError

__all__ = ["RECEIVERS", "Refusal", "Sink"]

# Why one report was not delivered and never will be: the receiver's answer, or why it was not sent.
Refusal: TypeAlias = "StatusError | ValueError"

# What each sink's receiver is called in the pod's log (its refusal lines begin so: runai.reporter.spool.log).
RECEIVERS = {GATEWAY: "the gateway", REMOTE_WRITE: "the remote-write receiver"}


class Sink(Protocol):
    """One receiver of one pod's reports, at :attr:`url`.

    ``push`` returns the reports refused by name, with why, and raises
    ``OSError`` for what must be retried; ``abort`` cuts a push in flight and
    is safe in a signal handler; ``close`` is safe to call twice.
    """

    @property
    def name(self) -> str:
        """Its name in checkpoints, settings and metrics (:data:`~runai.reporter.spool.SINKS`)."""

    @property
    def receiver(self) -> str:
        """What its receiver is called in messages (:data:`RECEIVERS`)."""

    @property
    def url(self) -> str:
        """Where its receiver is."""

    @property
    def coalesces(self) -> bool:
        """It takes only the latest value of each name (a push replaces); else every report, in whole
        milliseconds (a receiver keeps one value per series and timestamp)."""

    @property
    def marks_sending(self) -> bool:
        """Its receiver may refuse a resend of what it already has (a TSDB refuses a sample older than the
        series' newest): the loop then records in each checkpoint how far a push reaches before starting it,
        and passes the ids of records an earlier uploader's push may have delivered as *resent*."""

    @property
    def reached(self) -> bool:
        """Some request of the last push may have reached the receiver."""

    def push(self, records: Sequence[Report], resent: AbstractSet[int] = frozenset()) -> list[tuple[Report, Refusal]]:
        """Deliver *records*; *resent*: the ids of those an earlier push may have delivered (see marks_sending)."""

    def abort(self) -> None: ...

    def close(self) -> None: ...
