"""The pods queued for one of the node agent's ``--max-deliveries`` slots, and the deliveries that ended."""

from __future__ import annotations

from collections import deque
from typing import Callable

__all__ = ["Slots"]


class Slots:
    """The pods queued for one of *size* delivery slots, in order, and the deliveries that ended (from any thread).

    *wake* wakes the agent's loop (called in the delivery's thread when it ends).
    """

    def __init__(self, size: int, wake: Callable[[], None]) -> None:
        self.size = size
        self._wake = wake
        self._queue: deque[str] = deque()
        self._ended: deque[str] = deque()

    def queue(self, name: str) -> None:
        self._queue.append(name)

    def next_queued(self, busy: int) -> str | None:
        """The next queued name while fewer than *size* are *busy* (it leaves the queue), else None."""
        return self._queue.popleft() if self._queue and busy < self.size else None

    def ended(self, name: str) -> None:
        """*name*'s delivery ended: called last in its thread (deque.append takes no lock a reader could hold)."""
        self._ended.append(name)
        self._wake()

    def pop_ended(self) -> list[str]:
        out = []
        while self._ended:
            out.append(self._ended.popleft())
        return out
