"""Process limits an uploader raises before it follows a pod's files."""

from __future__ import annotations

import logging
import resource

__all__ = ["raise_open_files_limit"]

logger = logging.getLogger(__name__)


def raise_open_files_limit() -> None:
    """Raise the soft limit on open descriptors to the hard limit: the uploader holds one per spool file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            logger.debug("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
