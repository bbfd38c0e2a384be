"""``runai-uploader recover``: upload what a dead job left in its spool, and print how it went.

:mod:`uploader.recovery` does the work and reports it to :class:`RecoveryPrinter`;
this module parses the command and prints a line per pod as it is done, its
progress, and the summary.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from typing import Callable

from runai.reporter.settings import Settings, add_options, redact_url, resolve_spool_dir

from ..delivery.intent import ANY_RECEIVER
from ..recovery import Outcome, Recovered, recover_pods
from ..runtime.limits import raise_open_files_limit
from ..runtime.logsetup import log_to_stderr
from ..runtime.signals import StopOnSignals
from ..views.progress import Progress
from ..views.status import spool_pods
from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, INTERRUPTED, Commands, command_settings

__all__ = ["RecoveryPrinter", "add_recover", "print_summary"]


def add_recover(commands: Commands, common: tuple[str, ...]) -> None:
    recover = commands.add_parser("recover", help="upload everything a pod (or every pod) left undelivered")
    add_options(recover, [*common, "own_pod_dir"])
    recover.add_argument(
        "--all",
        action="store_true",
        help="recover every pod in the spool directory, each only to the receivers of the kinds its "
        "job named (a job that sent only by remote write is not pushed to a gateway)",
    )
    recover.add_argument(
        ANY_RECEIVER,
        action="store_true",
        help="with --all: send every pod to every receiver given, whatever its job named",
    )
    recover.add_argument(
        "--take-over",
        action="store_true",
        help="stop the pod's running uploader (SIGTERM) once the job's writers are gone, and deliver "
        "with the receivers given here instead of waiting for it",
    )
    recover.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to keep trying the receivers, and to wait for a running uploader or its lock (default: 60)",
    )
    recover.set_defaults(func=_recover)


def _recover(args: argparse.Namespace) -> int:
    log_to_stderr(logging.WARNING)
    raise_open_files_limit()
    if args.all and args.pod_dir:
        print(
            "runai-uploader: --pod-dir is one pod's directory: name the pod with --pod-uuid, not --all", file=sys.stderr
        )
        return EXIT_USAGE
    if args.all:
        spool_dir = resolve_spool_dir(args.spool_dir)
        pods = spool_pods(spool_dir)
        if not pods:
            print(f"no pods with spool files in {spool_dir}: nothing to send")
            return EXIT_OK
    else:
        first = command_settings(args, for_writing=False, also={"pod_uuid": "--all"})
        spool_dir, pods = first.spool_dir, [first.pod_uuid]

    def settings_for(pod: str) -> Settings:
        return command_settings(args, pod, for_writing=False, one_pod=not args.all)

    with StopOnSignals() as stopper:
        # A pod named by itself goes where this command says; --all follows each job's own receivers.
        results = recover_pods(
            pods,
            settings_for,
            spool_dir,
            args.timeout,
            stopper,
            RecoveryPrinter(args.timeout),
            take_over=args.take_over,
            follow_intent=args.all and not args.any_receiver,
        )
    print_summary(results)
    if stopper.signum is not None:
        print(INTERRUPTED, file=sys.stderr)
        return 128 + stopper.signum
    failed = [r.pod for r in results if not r.ok]
    if failed:
        print(
            f"runai-uploader: {len(failed)} of {len(pods)} pods not fully delivered: {', '.join(failed)}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


class RecoveryPrinter:
    """Prints what recovery does, as it does it (a :class:`~uploader.recovery.RecoveryListener`)."""

    def __init__(self, timeout: float = 60.0) -> None:
        self.timeout = timeout

    def waiting(self, pod: str, holder: int | None, timeout: float) -> None:
        print(
            f"pod {pod}: an uploader (pid {holder}) is delivering it; waiting up to {timeout:.0f} s for it to "
            f"finish (--take-over stops it and delivers with the receivers given here)",
            file=sys.stderr,
        )

    def taking_over(self, pod: str, holder: int, timeout: float) -> None:
        print(
            f"pod {pod}: its writers are gone; sent SIGTERM to its uploader (pid {holder}), waiting up to "
            f"{timeout:.0f} s for it to let go",
            file=sys.stderr,
        )

    def progress(self, pod: str) -> Progress:
        return Progress(f"pod {pod}", 0, sys.stderr)

    def recovered(self, r: Recovered) -> None:
        extra = _notes(r)
        if r.outcome in _FAILED:
            print(f"runai-uploader: pod {r.pod}: {_FAILED[r.outcome](r, self.timeout)}{extra}", file=sys.stderr)
        elif r.outcome is Outcome.SKIPPED:
            print(f"pod {r.pod}: {r.error}")
        elif r.outcome is Outcome.EMPTY:
            print(f"pod {r.pod}: no spool files in {r.pod_dir}: nothing to send")
        elif r.delivered == 0 and not r.skipped:
            print(f"pod {r.pod}: nothing to send; everything was already delivered")
        else:
            print(f"pod {r.pod}: delivered {r.delivered} reports in {r.elapsed:.1f} s{extra}")


def _notes(r: Recovered) -> str:
    skipped = sum(r.skipped.values())
    notes = []
    if skipped:
        notes.append(f"{skipped} skipped as corrupt")
    if r.rejected:
        notes.append(f"{len(r.rejected)} names rejected by the {r.receiver}: {', '.join(sorted(r.rejected))}")
    return f" ({'; '.join(notes)})" if notes else ""


def _busy(r: Recovered, timeout: float) -> str:
    if r.error:  # a take-over refused, or its uploader did not stop in time
        return f"not taken over: {r.error}"
    return (
        f"an uploader (pid {r.holder}) is still delivering it after {timeout:g} s: wait for it "
        f"(`runai-uploader status` shows its progress and last error), or rerun with --take-over to stop it "
        f"and deliver with the receivers given here"
    )


def _unreachable(r: Recovered, timeout: float) -> str:
    return (
        f"{r.receiver} {redact_url(r.url)} unreachable for {timeout:g} s ({r.error}); "
        f"{r.pending} reports still pending, "
        f"delivered {r.delivered}. Nothing is lost: check the URL; if it is right, the receiver is down: run this "
        f"again once it is up (or with a longer --timeout); `runai-uploader status` shows the pod's last error"
    )


# The outcomes printed to stderr as failures: what each one says.
_FAILED: dict[Outcome, Callable[[Recovered, float], str]] = {
    Outcome.REFUSED: lambda r, _: r.error,
    Outcome.BUSY: _busy,
    Outcome.STOPPED: lambda r, _: f"stopped; {r.pending} reports still pending, delivered {r.delivered}",
    Outcome.UNREACHABLE: _unreachable,
}


def _unknown_pending(results: list[Recovered]) -> str:
    unknown = sum(r.pending is None for r in results)
    return f", and the reports of {unknown} refused pod{'s' if unknown != 1 else ''}, not counted" if unknown else ""


def print_summary(results: list[Recovered]) -> None:
    skipped: Counter[str] = Counter()
    for r in results:
        skipped.update(r.skipped)
    rejected = sum(len(r.rejected) for r in results)
    receivers = {r.receiver for r in results if r.outcome is not Outcome.SKIPPED} or {"gateway"}
    receiver = receivers.pop() if len(receivers) == 1 else "receivers"
    print(
        f"summary: {len(results)} pod{'s' if len(results) != 1 else ''}, "
        f"{sum(r.delivered for r in results):,} reports delivered, "
        f"{sum(skipped.values()):,} skipped as corrupt, {rejected:,} names rejected by the {receiver}, "
        f"{sum(r.pending or 0 for r in results):,} still pending{_unknown_pending(results)}"
    )
    not_sent = sum(r.outcome is Outcome.SKIPPED for r in results)
    if not_sent:
        print(
            f"  not sent: {not_sent} pod{'s' if not_sent != 1 else ''} whose jobs named other receivers "
            f"(each named above; {ANY_RECEIVER} sends them anyway)"
        )
    for reason, count in skipped.most_common():
        print(f"  skipped {count:,}: {reason}")
    for r in results:
        for name, answer in sorted(r.rejected.items()):
            print(f"  rejected {name} (pod {r.pod}): {answer}")
        for path, why in sorted(r.ignored_files.items()):
            print(f"  ignored file {path}: {why}")
