"""Local mode's run id, and the one line a Reporter prints when it is created.

With no receiver configured, a Reporter keeps every report in the spool
(local mode); without a ``podUUID`` either, the process gets a run id of its
own to file them under (:func:`local_run_id`). The start line says where the
reports go: it is the one write to stderr the library makes itself, since it
never configures logging (``reporterQuiet=1`` silences it).
"""

from __future__ import annotations

import datetime
import secrets
import sys
import threading

from ._redact import redact_url
from ._setting_fields import Settings
from ._validate import ENV_GATEWAY_URL, ENV_QUIET, ENV_REMOTE_WRITE_URL

__all__ = ["announce", "local_run_id", "start_line"]

# One per process, made on first use: the non-scoped API and every Reporter of the process share it, and so
# does a forked child (it inherits this module's state). A process started afresh (torchrun's ranks,
# multiprocessing's "spawn") makes its own: set podUUID to file several processes' reports under one pod.
_run_id: str | None = None
_run_id_lock = threading.Lock()


def local_run_id() -> str:
    """This process's run id, ``local-<UTC time>-<random>``: unique per run, and safe as a podUUID."""
    global _run_id
    with _run_id_lock:
        if _run_id is None:
            now = datetime.datetime.now(datetime.timezone.utc)
            _run_id = f"local-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
        return _run_id


def start_line(settings: Settings) -> str:
    """What a Reporter of *settings* prints when created: its pod, its spool and where its reports go."""
    receivers = [
        f"{who} {redact_url(url)}"
        for who, url in (
            ("the gateway", settings.gateway_url),
            ("the remote-write receiver", settings.remote_write_url),
        )
        if url is not None
    ]
    where = (
        f"reporting to {' and '.join(receivers)}"
        if receivers
        else f"kept locally, not delivered (neither {ENV_GATEWAY_URL} nor {ENV_REMOTE_WRITE_URL} is set)"
    )
    return f"runai.reporter: pod {settings.pod_uuid}, spool {settings.pod_dir}: {where} ({ENV_QUIET}=1 hides this)"


def announce(settings: Settings) -> None:
    """Print :func:`start_line` to stderr unless the settings say quiet; never raises."""
    stream = sys.stderr
    if settings.quiet or stream is None:  # None: pythonw, or a daemon that closed it
        return
    try:
        stream.write(start_line(settings) + "\n")
        stream.flush()
    except (OSError, ValueError):  # a closed or broken stderr must not stop the job
        pass
