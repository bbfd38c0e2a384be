"""Delivering one pod: its spool files read, pushed to each sink, and checkpointed.

* :mod:`.build`: :func:`build_uploader`, a pod's delivery from its settings (one loop per sink);
* :mod:`.loops`: :class:`SinkLoops`, the fan-out over the sinks, the pod lock and its handoff;
* :mod:`.service`: :class:`Uploader`, one sink's read -> push -> commit loop;
* :mod:`.followed`, :mod:`.scan`, :mod:`.schedule`, :mod:`.retention`, :mod:`.watch`: its parts;
* :mod:`.options` and :mod:`.hooks`: what a caller chooses, and what it is told;
* :mod:`.pending`: what a pod has left to deliver, from disk.

Nothing here prints or configures logging; ``watchdog`` and the sinks' dependencies
are imported only once a delivery is built.
"""

from __future__ import annotations

from .build import build_uploader
from .hooks import NO_HOOKS, DeliveryHooks
from .options import DeliveryOptions, follower_options

__all__ = ["DeliveryHooks", "DeliveryOptions", "NO_HOOKS", "build_uploader", "follower_options"]
