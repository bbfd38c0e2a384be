"""How one pod's delivery runs: the knobs of its loops, in one frozen value.

Each command builds its own (``run`` follows, ``recover`` drains once, the agent
never gives up); the settings' part of it is :func:`follower_options`.
"""

from __future__ import annotations

from dataclasses import dataclass

from runai.reporter.settings import Settings

from .scan import MAX_PENDING_VALUES, SCAN_BYTES

__all__ = ["DeliveryOptions", "FOLLOWER", "follower_options"]


@dataclass(frozen=True)
class DeliveryOptions:
    """What each sink's loop of one pod's delivery does; the defaults are a follower's."""

    push_interval: float = 1.0  # seconds: at most one push per interval (a flush goes at once)
    retry_timeout: float = 600.0  # seconds a receiver may fail, with no writer alive, before the loop gives up
    follow: bool = True  # until the writers are gone; False: deliver what is on disk now, then stop
    poll_interval: float = 0.5  # the longest sleep, and how often writers' liveness is checked
    backoff: tuple[float, float] = (0.1, 5.0)  # a failed push's first retry delay, and its cap
    use_watchdog: bool = True  # file events wake the loop (it polls as well)
    history_bytes: int | None = None  # a bound on the delivered spool kept; None keeps everything
    fsync_interval: float | None = None  # fsync growing spool files this often; None never
    scan_bytes: int = SCAN_BYTES  # read per scan before pushing and committing
    max_pending: int = MAX_PENDING_VALUES  # distinct values held before reading pauses


FOLLOWER = DeliveryOptions()  # the defaults


def follower_options(settings: Settings) -> DeliveryOptions:
    """A follower's options from *settings* (``run``, and the agent with its own changes)."""
    return DeliveryOptions(
        push_interval=settings.push_interval,
        retry_timeout=settings.retry_timeout,
        history_bytes=settings.history_bytes,
        fsync_interval=settings.fsync_interval if settings.fsync == "interval" else None,
    )
