"""What a delivery tells an observer: pushes, failed pushes, reports delivered.

A Protocol with a no-op default, as OpenTelemetry's exporters report their own
metrics: the loop calls the hooks it is given, and whoever counts (the node
agent's metrics) implements them, with no wrapper around a sink.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DeliveryHooks", "NO_HOOKS", "NoHooks"]


class DeliveryHooks(Protocol):
    """Called in the thread of the sink's loop; *sink* is the sink's name (``Sink.name``)."""

    def pushed(self, sink: str) -> None:
        """A push of at least one report succeeded (some may have been refused by name)."""

    def push_failed(self, sink: str) -> None:
        """A push raised: nothing of it is committed, and it is retried."""

    def delivered(self, sink: str, reports: int) -> None:
        """A commit covered *reports* more reports (its checkpoints are written)."""


class NoHooks:
    """Observes nothing: the default."""

    def pushed(self, sink: str) -> None:
        pass

    def push_failed(self, sink: str) -> None:
        pass

    def delivered(self, sink: str, reports: int) -> None:
        pass


NO_HOOKS: DeliveryHooks = NoHooks()
