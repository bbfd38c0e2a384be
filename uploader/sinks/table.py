"""A sink's name -> what builds it for a pod's settings; each imports its sink's dependencies when called."""

from __future__ import annotations

from typing import Callable

from runai.reporter.settings import Settings
from runai.reporter.spool import GATEWAY, REMOTE_WRITE

from . import Sink

__all__ = ["BUILDERS", "build_sink"]


def _gateway(settings: Settings) -> Sink:
    from .pushgateway import Pusher

    return Pusher.for_settings(settings)


def _remote_write(settings: Settings) -> Sink:
    from .remote_write import RemoteWriter

    return RemoteWriter.for_settings(settings)


# A sink's name -> what builds it for a pod's settings (each imports its own dependencies when called).
BUILDERS: dict[str, Callable[[Settings], Sink]] = {GATEWAY: _gateway, REMOTE_WRITE: _remote_write}


def build_sink(settings: Settings, name: str) -> Sink:
    """The sink *name* (one of :attr:`Settings.sinks`) of *settings*' pod."""
    return BUILDERS[name](settings)
