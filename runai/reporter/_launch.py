"""Starting the pod's uploader from the training process.

The uploader is a fresh interpreter started with ``posix_spawn``: the
training process is never forked, so CUDA contexts and threads in it are
never duplicated. It gets a session of its own, so it outlives the job;
/dev/null for stdin and stdout, so it never holds the job's terminal or
pipes open; and the pod's ``uploader.log`` for stderr, so that an uploader
that cannot even start (a missing package, say) says why there.

It is not started as ``python -m uploader``: that puts the job's working
directory first on the import path, and an ``uploader.py`` there would run
instead. A short bootstrap drops every relative entry from ``sys.path``
first (``-P`` would do, but only from Python 3.11).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

from ._setting_argv import command_line
from ._setting_fields import Settings
from .spool import LOG_NAME, holder_pid, last_line, open_log

__all__ = ["ensure_uploader", "reap", "startup_failure", "uploader_command"]

logger = logging.getLogger(__name__)

# Run as ``python -c _BOOT ROOT uploader run ...`` ("uploader" and "run" stay
# argv elements of their own, so ps and the tests see what runs). ROOT, the
# directory holding runai/ and uploader/, goes first on sys.path; every
# relative entry goes, and so does the working directory however it got there
# (an empty PYTHONPATH entry, say, which Python makes absolute).
_BOOT = (
    "import os, sys; root = sys.argv[1]\n"
    "try: cwd = os.getcwd()\n"
    "except OSError: cwd = ''\n"  # removed under the job: nothing of it to drop
    "sys.path[:] = [root] + [p for p in sys.path if os.path.isabs(p) and p not in (root, cwd)]; "
    "from uploader.cli import main; sys.exit(main(sys.argv[3:]))"
)
# The directory holding both packages (setup.py ships them side by side):
# found from this file, never by importing `uploader` in the job, which could
# import an uploader.py from the job's directory.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# An uploader that exits with an error (it could not start, or crashed) is
# started again only after a pause that doubles with each failure, up to this.
_BACKOFF_FIRST = 1.0
_BACKOFF_MAX = 30.0
# An uploader that ran this long before it died is restarted after the shortest pause again.
_HEALTHY_SECONDS = 60.0
_SIGNALS = {int(s) for s in signal.Signals}


@dataclass
class _Failures:
    count: int
    retry_at: float  # time.monotonic() before which none is started
    reason: str  # for finish()'s warning: the exit status and the last line of uploader.log


# Uploaders this process started and that have not exited yet, by pod
# directory. Reaping them keeps them from lingering as zombies.
_children: dict[str, tuple[int, float]] = {}  # pod dir -> (pid, time.monotonic() at start)
_failures: dict[str, _Failures] = {}
_gone_warned: set[str] = set()
_log_warned: set[str] = set()
# Never waited on: a report's tick, finish() in another thread, or a signal
# handler that interrupted this very thread may all get here at once. Whoever
# finds it taken skips: the next probe comes within a second.
_lock = threading.Lock()


_fork_hook_registered = False


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # a thread of the parent may have held it
    _children.clear()  # the parent's, not this process's to wait for


def uploader_command(settings: Settings) -> list[str]:
    """The uploader's argv for *settings*: each setting that travels on a command line, as ``--option=VALUE``."""
    return [sys.executable, "-c", _BOOT, _ROOT, "uploader", "run", *command_line(settings)]


def ensure_uploader(settings: Settings) -> None:
    """Start an uploader for the pod unless one runs. Never raises, never waits.

    One this process started that is still starting up does not hold the lock
    yet, so it counts as running too. After an uploader exited with an error,
    the next one is started only after a growing pause (see :func:`startup_failure`).
    """
    global _fork_hook_registered
    if not _fork_hook_registered:
        _fork_hook_registered = True
        os.register_at_fork(after_in_child=_after_fork)
    if not _lock.acquire(blocking=False):
        return
    pod_dir = settings.pod_dir
    try:
        _reap()
        if pod_dir in _children or holder_pid(pod_dir) is not None:
            return
        failed = _failures.get(pod_dir)
        if failed is not None and time.monotonic() < failed.retry_at:
            return
        if not os.path.isdir(pod_dir):
            if pod_dir not in _gone_warned:
                _gone_warned.add(pod_dir)
                logger.warning("the spool directory %s is gone; not starting an uploader", pod_dir)
            return
        _children[pod_dir] = (_spawn(uploader_command(settings), pod_dir), time.monotonic())
    except OSError as exc:
        _note_failure(pod_dir, f"{sys.executable} could not be started: {exc}")
        if _failures[pod_dir].count == 1:
            logger.warning(
                "cannot start the uploader for pod %s (%s); reports stay in %s for recovery",
                settings.pod_uuid,
                exc,
                pod_dir,
            )
    finally:
        _lock.release()


def startup_failure(pod_dir: str) -> str | None:
    """Why the last uploader started for *pod_dir* failed, if it did (and none started since ran well)."""
    failed = _failures.get(pod_dir)
    return None if failed is None else failed.reason


def reap() -> None:
    """Collect the exit status of uploaders this process started that have ended."""
    if _lock.acquire(blocking=False):
        try:
            _reap()
        finally:
            _lock.release()


def _reap() -> None:
    for pod_dir, (pid, started) in list(_children.items()):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # reaped by someone else (a SIGCHLD handler, say)
            done, status = pid, 0
        if not done:
            continue
        del _children[pod_dir]
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            _failures.pop(pod_dir, None)
            continue
        if time.monotonic() - started > _HEALTHY_SECONDS:
            _failures.pop(pod_dir, None)  # it ran well for a while: start over at the shortest pause
        # Killed by a signal counts too: one that crashes at start (SIGSEGV), or
        # the OOM killer, must not be restarted every second for ever.
        why = (
            f"it exited with status {code}"
            if code > 0
            else f"it was killed by {signal.Signals(-code).name}"
            if -code in _SIGNALS
            else f"it was killed by signal {-code}"
        )
        _note_failure(pod_dir, f"{why}: {_last_log_line(pod_dir)}")


def _note_failure(pod_dir: str, reason: str) -> None:
    count = _failures[pod_dir].count + 1 if pod_dir in _failures else 1
    pause = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2.0 ** (count - 1))
    _failures[pod_dir] = _Failures(count, time.monotonic() + pause, reason)
    logger.debug("uploader for %s failed (%s); next try in %.0f s", pod_dir, reason, pause)


def _last_log_line(pod_dir: str) -> str:
    try:
        line = last_line(pod_dir)
    except OSError as exc:
        return f"{LOG_NAME} cannot be read ({exc.strerror})"
    return line if line is not None else f"{LOG_NAME} says nothing"


def _spawn(argv: list[str], pod_dir: str) -> int:
    try:
        log = open_log(pod_dir, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    except OSError as exc:
        # A directory, a symlink or a FIFO in the log's place must not stop delivery: the uploader says so in
        # its own log handling, and its stderr goes nowhere.
        if pod_dir not in _log_warned:
            _log_warned.add(pod_dir)
            logger.warning(
                "cannot open %s in %s (%s); the uploader's start-up errors will not be recorded", LOG_NAME, pod_dir, exc
            )
        log = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    devnull = os.devnull
    try:
        pid = os.posix_spawn(
            argv[0],
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
        )
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.write(
                log,
                f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR the uploader could not be started: "
                f"{sys.executable}: {exc}\n".encode(),
            )
        raise
    finally:
        os.close(log)
    logger.debug("started uploader pid %d: %s", pid, " ".join(argv))
    return pid
