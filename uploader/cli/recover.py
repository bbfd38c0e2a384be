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

from runai.reporter.settings import Settings, add_options, resolve_spool_dir

from ..recovery import Outcome, Recovered, recover_pods
from ..runtime.limits import raise_open_files_limit
from ..runtime.logsetup import log_to_stderr
from ..runtime.signals import StopOnSignals
from ..views.progress import Progress
from ..views.status import spool_pods
from ._common import EXIT_FAILED, EXIT_OK, INTERRUPTED, Commands, command_settings

__all__ = ["RecoveryPrinter", "add_recover", "print_summary"]


def add_recover(commands: Commands, common: tuple[str, ...]) -> None:
    recover = commands.add_parser("recover", help="upload everything a pod (or every pod) left undelivered")
    add_options(recover, common)
    recover.add_argument("--all", action="store_true", help="recover every pod in the spool directory")
    recover.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to keep trying the gateway, and to wait for a running uploader (default: 60)")
    recover.set_defaults(func=_recover)


def _recover(args: argparse.Namespace) -> int:
    log_to_stderr(logging.WARNING)
    raise_open_files_limit()
    if args.all:
        spool_dir = resolve_spool_dir(args.spool_dir)
        pods = spool_pods(spool_dir)
        if not pods:
            print(f"no pods with spool files in {spool_dir}: nothing to send")
            return EXIT_OK
    else:
        first = command_settings(args, for_writing=False)
        spool_dir, pods = first.spool_dir, [first.pod_uuid]

    def settings_for(pod: str) -> Settings:
        return command_settings(args, pod, for_writing=False)

    with StopOnSignals() as stopper:
        results = recover_pods(pods, settings_for, spool_dir, args.timeout, stopper, RecoveryPrinter())
    print_summary(results)
    if stopper.signum is not None:
        print(INTERRUPTED, file=sys.stderr)
        return 128 + stopper.signum
    failed = [r.pod for r in results if not r.ok]
    if failed:
        print(f"runai-uploader: {len(failed)} of {len(pods)} pods not fully delivered: {', '.join(failed)}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


class RecoveryPrinter:
    """Prints what recovery does, as it does it (a :class:`~uploader.recovery.RecoveryListener`)."""

    def waiting(self, pod: str, holder: int | None, timeout: float) -> None:
        print(f"pod {pod}: an uploader (pid {holder}) is delivering it; waiting up to {timeout:.0f} s for it to "
              "finish", file=sys.stderr)

    def progress(self, pod: str) -> Progress:
        return Progress(f"pod {pod}", 0, sys.stderr)

    def recovered(self, r: Recovered) -> None:
        skipped = sum(r.skipped.values())
        notes = []
        if skipped:
            notes.append(f"{skipped} skipped as corrupt")
        if r.rejected:
            notes.append(f"{len(r.rejected)} names rejected by the {r.receiver}: {', '.join(sorted(r.rejected))}")
        extra = f" ({'; '.join(notes)})" if notes else ""
        if r.outcome is Outcome.REFUSED:
            print(f"runai-uploader: pod {r.pod}: {r.error}", file=sys.stderr)
        elif r.outcome is Outcome.EMPTY:
            print(f"pod {r.pod}: no spool files in {r.pod_dir}: nothing to send")
        elif r.outcome is Outcome.BUSY:
            print(f"runai-uploader: pod {r.pod}: the uploader (pid {r.holder}) is still running; try again later",
                  file=sys.stderr)
        elif r.outcome is Outcome.STOPPED:
            print(f"runai-uploader: pod {r.pod}: stopped; {r.pending} reports still pending, "
                  f"delivered {r.delivered}{extra}", file=sys.stderr)
        elif r.outcome is Outcome.UNREACHABLE:
            print(f"runai-uploader: pod {r.pod}: {r.receiver} {r.url} unreachable ({r.error}); "
                  f"{r.pending} reports still pending, delivered {r.delivered}{extra}", file=sys.stderr)
        elif r.delivered == 0 and not skipped:
            print(f"pod {r.pod}: nothing to send; everything was already delivered")
        else:
            print(f"pod {r.pod}: delivered {r.delivered} reports in {r.elapsed:.1f} s{extra}")


def _unknown_pending(results: list[Recovered]) -> str:
    unknown = sum(r.pending is None for r in results)
    return f", and the reports of {unknown} refused pod{'s' if unknown != 1 else ''}, not counted" if unknown else ""


def print_summary(results: list[Recovered]) -> None:
    skipped: Counter[str] = Counter()
    for r in results:
        skipped.update(r.skipped)
    rejected = sum(len(r.rejected) for r in results)
    receivers = {r.receiver for r in results}
    receiver = receivers.pop() if len(receivers) == 1 else "receivers"
    print(f"summary: {len(results)} pod{'s' if len(results) != 1 else ''}, "
          f"{sum(r.delivered for r in results):,} reports delivered, "
          f"{sum(skipped.values()):,} skipped as corrupt, {rejected:,} names rejected by the {receiver}, "
          f"{sum(r.pending or 0 for r in results):,} still pending{_unknown_pending(results)}")
    for reason, count in skipped.most_common():
        print(f"  skipped {count:,}: {reason}")
    for r in results:
        for name, answer in sorted(r.rejected.items()):
            print(f"  rejected {name} (pod {r.pod}): {answer}")
        for path, why in sorted(r.ignored_files.items()):
            print(f"  ignored file {path}: {why}")
