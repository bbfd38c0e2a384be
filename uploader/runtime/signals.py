"""Stopping an uploader on SIGTERM or SIGINT, safely from a signal handler."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Protocol

__all__ = ["Stoppable", "StopOnSignals"]


class Stoppable(Protocol):
    """What a signal stops: :class:`uploader.delivery.service.Uploader`, whose ``stop()`` takes no lock."""

    def stop(self) -> None: ...


class StopOnSignals:
    """While in its ``with`` block, SIGTERM and SIGINT stop the watched uploader.

    The handler runs between two bytecodes of the main thread, wherever that
    thread is, so it only sets a flag and calls :meth:`Uploader.stop`, which
    takes no lock (``threading.Event.set()`` would, and deadlocks when the
    main thread was interrupted inside ``Event.wait()``). ``stop()`` also cuts
    a push in flight, so a signal ends the uploader within about a second
    whatever the receiver does.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._watched: Stoppable | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def watch(self, uploader: Stoppable) -> None:
        """Stop *uploader* on a signal (at once, if one already came)."""
        self._watched = uploader
        if self.signum is not None:
            uploader.stop()

    def stopped(self) -> bool:
        """Whether a signal came (a ``stopped`` callable for :meth:`PodLock.acquire`)."""
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        watched = self._watched
        if watched is not None:
            watched.stop()
