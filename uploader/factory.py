"""Building the uploader of :class:`Settings`: one loop per configured sink, and the process limits it needs.

``prometheus_client``, ``watchdog`` and the remote-write sink's ``cramjam`` are
imported only when an uploader is built: ``--help`` and argument errors need none.
"""
from __future__ import annotations

import logging
import resource
from typing import TYPE_CHECKING, Any

from runai.reporter.settings import ENV_RW_BEARER_TOKEN_FILE, ConfigError, Settings, read_secret_file
from runai.reporter.spool import GATEWAY

if TYPE_CHECKING:
    from .loops import SinkLoops
    from .service import Uploader
    from .sink import Sink

__all__ = ["build_sink", "build_uploader", "raise_open_files_limit"]

logger = logging.getLogger(__name__)


def build_uploader(settings: Settings, **kwargs: Any) -> Uploader | SinkLoops:
    """The uploader of *settings*' pod: one loop per configured sink; *kwargs* go to each :class:`Uploader`.

    With one sink it is that sink's Uploader, exactly as before there were two; with several, a
    :class:`SinkLoops` that runs one Uploader per sink and holds the pod lock (*kwargs*' ``lock``) for them.
    """
    from .service import Uploader

    sinks = settings.sinks
    if len(sinks) == 1:
        return Uploader(settings.pod_dir, build_sink(settings, sinks[0]), push_interval=settings.push_interval,
                        sink=sinks[0], **kwargs)
    from .loops import SinkLoops
    from .status import pod_status

    lock = kwargs.pop("lock", None)
    fsync_interval = kwargs.pop("fsync_interval", None)
    on_progress = kwargs.pop("on_progress", None)
    loops: SinkLoops | None = None

    def progress(records: int, size: int) -> None:
        if on_progress is not None and loops is not None:  # assigned before any loop runs
            on_progress(loops.delivered_records, loops.delivered_bytes)

    def build() -> list[Uploader]:
        # One fsyncs the spool for all (fsync_interval); each reads, delivers and checkpoints on its own.
        return [Uploader(settings.pod_dir, build_sink(settings, sink), push_interval=settings.push_interval,
                         sink=sink, all_sinks=sinks, fsync_interval=fsync_interval if i == 0 else None,
                         on_progress=progress if on_progress is not None else None, **kwargs)
                for i, sink in enumerate(sinks)]

    def pending_on_disk() -> bool:
        status = pod_status(settings.spool_dir, settings.pod_uuid, sinks=sinks)
        return bool(status.writers_alive or status.reports_pending)

    loops = SinkLoops(build, lock=lock, follow=kwargs.get("follow", True), pending_on_disk=pending_on_disk)
    return loops


def build_sink(settings: Settings, sink: str) -> Sink:
    """The sink *sink* ("gateway" or "remote_write") of *settings*' pod."""
    if sink == GATEWAY:
        from .push import Pusher

        assert settings.gateway_url is not None  # settings.sinks names it only when it is set
        return Pusher(settings.gateway_url, settings.pod_uuid, timeout=settings.push_timeout,
                      username=settings.username, password=settings.password, ca_file=settings.ca_file)
    from .remote_write import RemoteWriter

    assert settings.remote_write_url is not None
    return RemoteWriter(settings.remote_write_url, settings.pod_uuid, timeout=settings.push_timeout,
                        username=settings.rw_username, password=settings.rw_password,
                        bearer_token=_bearer_token(settings.rw_bearer_token_file), tenant=settings.rw_tenant,
                        ca_file=settings.rw_ca_file)


def _bearer_token(path: str | None) -> str | None:
    """The token in *path* (read when the sink is built, so that a rotated token is used by the next uploader).

    Read as the settings read a password file; a token that cannot go in an HTTP header (a line break inside,
    a character outside ASCII) is a ConfigError here, not a ValueError out of every push.
    """
    if path is None:
        return None
    token = read_secret_file(path, ENV_RW_BEARER_TOKEN_FILE).strip()
    if not (token.isascii() and token.isprintable()):
        raise ConfigError(f"{ENV_RW_BEARER_TOKEN_FILE}={path!r} does not hold one token of printable ASCII on "
                          "one line")
    return token


def raise_open_files_limit() -> None:
    """Raise the soft limit on open descriptors to the hard limit: the uploader holds one per spool file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            logger.debug("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
