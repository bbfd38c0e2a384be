"""What ``runai-uploader recover`` prints: a line per pod as it is done, its progress, and the summary.

:mod:`uploader.recovery` does the work and reports it here; the recover
command is the only caller.
"""
from __future__ import annotations

import logging
import sys
from collections import Counter

from .progress import Progress
from .recovery import Outcome, Recovered

__all__ = ["RecoveryPrinter", "print_summary"]

logger = logging.getLogger(__name__)


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
            print(f"runai-uploader: pod {r.pod}: {r.receiver} {r.gateway_url} unreachable ({r.error}); "
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
