"""Building a pod's delivery from its :class:`Settings`: one loop per configured sink, under one :class:`SinkLoops`.

``prometheus_client``, ``watchdog`` and the remote-write sink's ``cramjam`` are
imported only when a delivery is built: ``--help`` and argument errors need none.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from runai.reporter.settings import Settings
from runai.reporter.spool import PodLock

from ..sinks.table import build_sink
from .hooks import NO_HOOKS, DeliveryHooks
from .loops import SinkLoops
from .options import DeliveryOptions
from .pending import pending

if TYPE_CHECKING:
    from .service import Uploader

__all__ = ["build_uploader"]


def build_uploader(
    settings: Settings,
    options: DeliveryOptions,
    *,
    lock: PodLock | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    hooks: DeliveryHooks = NO_HOOKS,
) -> SinkLoops:
    """The delivery of *settings*' pod: a :class:`SinkLoops` of one loop per configured sink.

    The pod's *lock* (held already, if given) is its one loop's, or its own for several, handed off when done;
    *on_progress* is called with the records and bytes delivered to every sink after each commit; *hooks*
    are each loop's (:class:`DeliveryHooks`).
    """
    from .service import Uploader  # imports watchdog's users and the sinks' dependencies

    sinks = settings.sinks
    loops: SinkLoops | None = None

    def progress(records: int, size: int) -> None:
        if on_progress is not None and loops is not None:  # assigned before any loop runs
            on_progress(loops.delivered_records, loops.delivered_bytes)

    one = len(sinks) == 1  # a single loop holds the lock itself, and looks again in memory before handing off

    def build() -> list[Uploader]:
        # One fsyncs the spool for all (fsync_interval); each reads, delivers and checkpoints on its own.
        return [
            Uploader(
                settings.pod_dir,
                build_sink(settings, sink),
                options if i == 0 else replace(options, fsync_interval=None),
                all_sinks=sinks,
                on_progress=progress if on_progress is not None else None,
                hooks=hooks,
                lock=lock if one else None,
                pod=settings.pod_uuid,  # its directory's name only under the spool root (reporterPodDir)
            )
            for i, sink in enumerate(sinks)
        ]

    def pending_on_disk() -> bool:
        left = pending(settings.pod_dir, sinks, settings.pod_uuid)
        return bool(left.writers_alive or left.reports)

    loops = SinkLoops(build, lock=None if one else lock, follow=options.follow, pending_on_disk=pending_on_disk)
    return loops
