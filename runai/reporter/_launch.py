"""Starting the pod's uploader from the training process.

The uploader is a fresh interpreter (``python -m uploader run``) started with
``posix_spawn``: the training process is never forked, so CUDA contexts and
threads in it are never duplicated. It gets a session of its own, so it
outlives the job, and /dev/null for stdin, stdout and stderr, so it never
holds the job's terminal or pipes open.
"""
from __future__ import annotations

import logging
import os
import sys

from .lock import holder_pid

from ._config import Settings

__all__ = ["ensure_uploader", "uploader_command"]

logger = logging.getLogger(__name__)

# Uploaders this process started and that have not exited yet, by pod
# directory. Reaping them keeps them from lingering as zombies.
_children: dict[str, int] = {}


def uploader_command(settings: Settings) -> list[str]:
    return [
        sys.executable, "-m", "uploader", "run",
        "--spool-dir", settings.spool_dir,
        "--pod-uuid", settings.pod_uuid,
        "--gateway", settings.gateway_url,
        "--push-interval", repr(settings.push_interval),
        "--retry-timeout", repr(settings.retry_timeout),
        "--push-timeout", repr(settings.push_timeout),
        "--fsync", settings.fsync,
        "--fsync-interval", repr(settings.fsync_interval),
        "--history-bytes", str(settings.history_bytes),
    ]  # fmt: skip


def ensure_uploader(settings: Settings) -> None:
    """Start an uploader for the pod unless one runs. Never raises.

    One this process started that is still starting up does not hold the lock
    yet, so it counts as running too.
    """
    reap()
    try:
        if settings.pod_dir in _children or holder_pid(settings.pod_dir) is not None:
            return
        if not os.path.isdir(settings.pod_dir):
            logger.warning("the spool directory %s is gone; not starting an uploader", settings.pod_dir)
            return
        _children[settings.pod_dir] = _spawn(uploader_command(settings))
    except OSError as exc:
        logger.warning("cannot start the uploader for pod %s (%s); reports stay in %s for recovery",
                       settings.pod_uuid, exc, settings.pod_dir)


def _spawn(argv: list[str]) -> int:
    env = dict(os.environ)
    # Make the uploader importable exactly as this process imported it, also
    # when running from a source checkout rather than an installed package.
    import uploader

    root = os.path.dirname(os.path.dirname(os.path.abspath(uploader.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    devnull = os.devnull
    pid = os.posix_spawn(
        argv[0],
        argv,
        env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, devnull, os.O_WRONLY, 0),
        ],
        setsid=True,
    )
    logger.debug("started uploader pid %d: %s", pid, " ".join(argv))
    return pid


def reap() -> None:
    """Collect the exit status of uploaders this process started that have ended."""
    for pod_dir, pid in list(_children.items()):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else (a SIGCHLD handler, say)
            done = pid
        if done:
            del _children[pod_dir]
