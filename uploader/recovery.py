"""Recovering pods: upload what a dead job left in its spool, then stop.

This module does the work and never prints: it returns a :class:`Recovered`
per pod and tells a :class:`RecoveryListener` what happens as it happens
(waiting for a running uploader, progress, each pod's result). The command
line prints them.
"""

from __future__ import annotations

import enum
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from runai.reporter.settings import ConfigError, Settings, warn_insecure_auth
from runai.reporter.spool import GATEWAY, PodLock, holder_pid, lock_holders, spool_file_names

from .delivery import DeliveryOptions, build_uploader
from .delivery.intent import intended
from .delivery.loops import SinkLoops
from .delivery.pending import pending
from .runtime.signals import StopOnSignals

__all__ = ["Outcome", "ProgressSink", "Recovered", "RecoveryListener", "pending_on_disk", "recover_pod", "recover_pods"]

_RECOVER_SCAN_BYTES = 4 << 20  # about 50,000 reports, a push and a checkpoint each


class Outcome(enum.Enum):
    """How recovering one pod ended."""

    EMPTY = "empty"  # no spool files: nothing to send
    DELIVERED = "delivered"  # everything on disk is delivered now (perhaps it already was)
    BUSY = "busy"  # another uploader kept the pod's lock past the timeout
    STOPPED = "stopped"  # a signal stopped the delivery
    UNREACHABLE = "unreachable"  # the gateway could not be reached in time
    REFUSED = "refused"  # the pod's settings are refused (say, its name is not UTF-8)
    SKIPPED = "skipped"  # its job named other receivers (recover --all): left as it is, on purpose


@dataclass
class Recovered:
    """What recovering one pod did, for the final summary."""

    pod: str
    outcome: Outcome = Outcome.DELIVERED
    delivered: int = 0
    pending: int | None = 0  # None: unknown, the pod directory cannot be read (refused)
    skipped: Counter[str] = field(default_factory=Counter)  # reports skipped as corrupt, by reason
    rejected: dict[str, str] = field(default_factory=dict)  # names the gateway refused -> its answer
    ignored_files: dict[str, str] = field(default_factory=dict)  # unreadable spool files -> why
    pod_dir: str = ""
    url: str = ""  # every configured receiver's, joined by "and"
    receiver: str = "gateway"  # what they are, for messages: "gateway", "remote-write receiver" or "receivers"
    elapsed: float = 0.0  # seconds the delivery took
    error: str = ""  # REFUSED, SKIPPED, and BUSY after a take-over refused or timed out: why; UNREACHABLE: the
    # receiver's last error
    holder: int | None = None  # BUSY: the pid of the uploader holding the pod

    @property
    def ok(self) -> bool:
        """Nothing is left pending that this command was asked to deliver."""
        return self.outcome in (Outcome.EMPTY, Outcome.DELIVERED, Outcome.SKIPPED)


class ProgressSink(Protocol):
    """Shows one pod's progress (:class:`uploader.views.progress.Progress` is one)."""

    def update(self, records: int, delivered_bytes: int, total_bytes: int | None = None) -> None: ...

    def close(self) -> None: ...


class RecoveryListener(Protocol):
    """Told what recovery does, as it does it."""

    def waiting(self, pod: str, holder: int | None, timeout: float) -> None:
        """An uploader (pid *holder*) holds *pod*; recovery waits up to *timeout* seconds for it."""

    def taking_over(self, pod: str, holder: int, timeout: float) -> None:
        """*pod*'s uploader (pid *holder*) was sent SIGTERM; recovery waits up to *timeout* seconds for its lock."""

    def progress(self, pod: str) -> ProgressSink:
        """Where *pod*'s delivery reports its progress; closed when the delivery ends."""

    def recovered(self, result: Recovered) -> None:
        """One pod is done, delivered or not."""


def recover_pods(
    pods: Iterable[str],
    settings_for: Callable[[str], Settings],
    spool_dir: str,
    timeout: float,
    stopper: StopOnSignals,
    listener: RecoveryListener,
    *,
    take_over: bool = False,
    follow_intent: bool = False,
) -> list[Recovered]:
    """Recover each of *pods* in turn, until done or *stopper* has stopped; one result per pod tried.

    *follow_intent* (``recover --all``): each pod goes only to the receivers of the kinds its job named
    (:mod:`uploader.delivery.intent`); one whose job named none of them is SKIPPED, with the reason.
    """
    results = []
    warned = False
    for pod in pods:
        if stopper.stopped():
            break
        try:
            settings = settings_for(pod)  # root may recover another user's pod
        except ConfigError as exc:
            # This pod cannot be delivered (say, its name is not UTF-8); the others can.
            result = Recovered(pod, Outcome.REFUSED, pending=pending_on_disk(spool_dir, pod), error=str(exc))
        else:
            if not warned:  # once: every pod is pushed with the same gateway and credentials
                warn_insecure_auth(settings)
                warned = True
            meant, skipped = intended(settings, any_receiver=not follow_intent)
            if meant is None:
                result = Recovered(pod, Outcome.SKIPPED, error=skipped or "", pod_dir=settings.pod_dir)
            else:
                result = recover_pod(meant, timeout, stopper, listener, take_over=take_over)
        listener.recovered(result)
        results.append(result)
    return results


def recover_pod(
    settings: Settings, timeout: float, stopper: StopOnSignals, listener: RecoveryListener, *, take_over: bool = False
) -> Recovered:
    """Deliver everything *settings*' pod has pending, waiting up to *timeout* s for its uploader or gateway.

    With *take_over*, a live uploader holding the pod is stopped (SIGTERM) once the pod's writers are all gone,
    and its lock awaited for up to *timeout* s, instead of waiting for it to finish.
    """
    pod = settings.pod_uuid
    urls = " and ".join(url for url in (settings.gateway_url, settings.remote_write_url) if url)
    receiver = (
        "receivers" if len(settings.sinks) > 1 else "gateway" if settings.gateway_url else "remote-write receiver"
    )
    result = Recovered(pod, pod_dir=settings.pod_dir, url=urls, receiver=receiver)
    if not spool_file_names(settings.pod_dir):
        result.outcome = Outcome.EMPTY
        return result
    lock = PodLock(settings.pod_dir)
    if not lock.acquire():
        result.holder = holder_pid(settings.pod_dir)
        if take_over:
            taken = _take_over(settings, lock, timeout, stopper, listener, result)
        else:
            listener.waiting(pod, result.holder, timeout)
            taken = lock.acquire(timeout=timeout, stopped=stopper.stopped)
        if not taken:
            result.outcome, result.pending = Outcome.BUSY, _pending_on_disk(settings)
            return result
    started = time.monotonic()
    try:
        uploader, delivered = _deliver(settings, timeout, stopper, listener.progress(pod))
    finally:
        lock.release()
    result.elapsed = time.monotonic() - started
    result.delivered = uploader.delivered_records
    result.skipped, result.rejected = uploader.skip_reasons(), uploader.rejected
    result.ignored_files = uploader.ignored_files
    if delivered:
        return result
    result.outcome = Outcome.STOPPED if stopper.stopped() else Outcome.UNREACHABLE
    result.error = uploader.last_error
    # Counted from disk: the uploader's own count misses what it had not read yet when it gave up.
    result.pending = _pending_on_disk(settings)
    return result


def _take_over(
    settings: Settings,
    lock: PodLock,
    timeout: float,
    stopper: StopOnSignals,
    listener: RecoveryListener,
    result: Recovered,
) -> bool:
    """Stop the uploader holding the pod (its writers all gone) and take its lock; False, with why in *result*."""
    writers = pending(settings.pod_dir, settings.sinks, settings.pod_uuid).writers_alive
    holder = result.holder
    if writers:
        result.error = (
            f"its job is still running ({writers} writers alive), and its uploader (pid {holder}) "
            "delivers what it writes: --take-over stops an uploader only once the job's writers are gone"
        )
        return False
    error = _stop_holder(settings.pod_dir, holder) if holder else _NOT_SEEN.format(holder=holder)
    if error or not holder:
        result.error = error or result.error
        return False
    listener.taking_over(settings.pod_uuid, holder, timeout)
    if lock.acquire(timeout=timeout, stopped=stopper.stopped):
        return True
    result.error = f"its uploader (pid {holder}) was sent SIGTERM but still held the pod after {timeout:.0f} s"
    return False


# 0: it wrote no pid; not among the holders: another pid namespace (a node agent's container), or reused.
_NOT_SEEN = (
    "the pid its lock file names ({holder}) is not seen holding the lock from here (another container's "
    "uploader, such as a node agent's?): stop that uploader where it runs, then run recover again"
)


def _stop_holder(pod_dir: str, holder: int) -> str | None:
    """SIGTERM the uploader *holder* once the kernel shows it holding *pod_dir*'s lock; why not, or None."""
    try:
        pidfd = os.pidfd_open(holder)  # pinned before the check: a pid reused after it is never signalled
    except ProcessLookupError:
        return None  # it ended meanwhile: its lock is free, or about to be
    except OSError as exc:
        return f"cannot stop its uploader (pid {holder}): {exc.strerror}"
    try:
        if holder not in lock_holders(pod_dir):
            return _NOT_SEEN.format(holder=holder)
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it ended meanwhile
    except PermissionError as exc:
        return f"cannot stop its uploader (pid {holder}): {exc.strerror}; run recover as its user or root"
    finally:
        os.close(pidfd)
    return None


def _deliver(
    settings: Settings, timeout: float, stopper: StopOnSignals, progress: ProgressSink
) -> tuple[SinkLoops, bool]:
    """Run a one-shot delivery of the pod (its lock held); return it, and whether it delivered everything."""
    # Imported here: the service imports prometheus_client and watchdog, which `--help` does not need.
    from .delivery.service import EXIT_DELIVERED

    uploader: SinkLoops | None = None

    def on_progress(records: int, sent: int) -> None:
        # The Uploader calls this only while it runs, so it is assigned by then.
        total = sent + uploader.undelivered_bytes() if uploader is not None else None
        progress.update(records, sent, total_bytes=total)

    # Smaller steps than a follower's: each commits, so the bar moves while a big spool is read.
    options = DeliveryOptions(
        push_interval=settings.push_interval,
        retry_timeout=timeout,
        follow=False,
        use_watchdog=False,
        scan_bytes=_RECOVER_SCAN_BYTES,
    )
    built = uploader = build_uploader(settings, options, on_progress=on_progress)
    stopper.watch(built)
    try:
        return built, built.run() == EXIT_DELIVERED
    finally:
        progress.close()


def pending_on_disk(spool_dir: str, pod: str, sinks: tuple[str, ...] = (GATEWAY,)) -> int | None:
    """Reports of *pod* not yet delivered to one of *sinks*, counted from disk; None if it cannot be read."""
    left = pending(os.path.join(spool_dir, pod), sinks)
    return None if left.refused else left.reports


def _pending_on_disk(settings: Settings) -> int | None:
    """:func:`pending_on_disk` of *settings*' pod, wherever its directory is (reporterPodDir)."""
    left = pending(settings.pod_dir, settings.sinks, settings.pod_uuid)
    return None if left.refused else left.reports
