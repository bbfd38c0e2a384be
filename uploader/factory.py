"""Building an :class:`~uploader.service.Uploader` from :class:`Settings`, and the process limits it needs.

``prometheus_client`` and ``watchdog`` are imported only when an Uploader is
built: ``--help`` and argument errors need neither.
"""
from __future__ import annotations

import logging
import resource
from typing import TYPE_CHECKING, Any

from runai.reporter.settings import Settings

if TYPE_CHECKING:
    from .service import Uploader

__all__ = ["build_uploader", "raise_open_files_limit"]

logger = logging.getLogger(__name__)


def build_uploader(settings: Settings, **kwargs: Any) -> Uploader:
    """An Uploader of *settings*' pod pushing to its gateway; *kwargs* go to :class:`Uploader`."""
    # Imported here: `--help` and argument errors need neither prometheus_client nor watchdog.
    from .push import Pusher
    from .service import Uploader

    pusher = Pusher(settings.gateway_url, settings.pod_uuid, timeout=settings.push_timeout,
                    username=settings.username, password=settings.password, ca_file=settings.ca_file)
    return Uploader(settings.pod_dir, pusher, push_interval=settings.push_interval, **kwargs)


def raise_open_files_limit() -> None:
    """Raise the soft limit on open descriptors to the hard limit: the uploader holds one per spool file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            logger.debug("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
