"""Every report a pod's spool still holds, in report order, each with its run and the job's own step.

The gateway keeps only the last value of each name; the spool keeps them all
(for as long as the history bound allows), whether or not the gateway was
ever reachable.

A *run* is one writing process (``w<pid>``, from its spool files' names): two
jobs that shared a podUUID, one after the other, are two runs. A report's
*step* is the job's own: the ``global_step`` (else ``step``) its run reported
nearest in time to it. The integrations report the step beside their metrics
(the Keras autolog just before a batch's, Transformers just after a log's), so
a validation metric reported once an epoch and a training loss reported every
batch fall on one axis.
"""

from __future__ import annotations

import bisect
import os
from typing import Iterable, NamedTuple

from runai.reporter.spool import METRIC, PARAMETER, BadSpoolError, open_spool, spool_file_names, writer_pid

__all__ = ["STEP_NAMES", "Entry", "read_history", "run_of"]

STEP_NAMES = ("global_step", "step")  # the names a job reports its step as, the first preferred


class Entry(NamedTuple):
    ts: float  # seconds since the Unix epoch
    seq: int
    kind: str  # "metric" or "parameter"
    name: str
    value: float | str
    spool_file: str  # which writer's file it came from
    run: str = ""  # the writing process: w<pid> (see run_of)
    step: float | None = None  # the job's own step for this report; None where its run reported none
    pod: str = ""  # the podUUID


def run_of(spool_file: str) -> str:
    """The run a spool file belongs to: ``w<pid>`` of its writer (its rotated files share it), else its name."""
    pid = writer_pid(spool_file)
    return spool_file if pid is None else f"w{pid}"


def read_history(
    pod_dir: str, names: Iterable[str] = (), runs: Iterable[str] = (), pod: str | None = None
) -> list[Entry]:
    """The reports of *pod_dir* (only *names* and *runs*, if given), in report order, with their steps.

    *pod*: the pod they are shown as (default: the directory's name; one given directly may have any name).

    A parameter appears only when its value changed, so it reads as its
    history of changes.
    """
    wanted, wanted_runs = set(names), {_run_name(run) for run in runs}
    pod = os.path.basename(pod_dir) if pod is None else pod
    entries: list[tuple[float, int, int, Entry]] = []
    steps: dict[str, dict[str, list[tuple[float, float]]]] = {}  # run -> step name -> (ts, value), by time
    for order, name in enumerate(spool_file_names(pod_dir)):
        run = run_of(name)
        if wanted_runs and run not in wanted_runs:
            continue
        try:
            opened = open_spool(os.path.join(pod_dir, name), resume=False)  # every report, delivered or not
        except (OSError, BadSpoolError):
            continue
        if opened is None:
            continue
        with opened.tail as tail:
            for record in tail.read_all():  # reports only: metrics and parameters
                if record.kind == METRIC and record.name in STEP_NAMES:
                    steps.setdefault(run, {}).setdefault(record.name, []).append((record.ts, float(record.value)))
                if not wanted or record.name in wanted:
                    entry = Entry(record.ts, record.seq, record.kind, record.name, record.value, name, run, None, pod)
                    entries.append((record.ts, order, record.seq, entry))
    entries.sort(key=lambda e: e[:3])
    return _changes_only(_with_steps([entry for *_, entry in entries], steps))


def _run_name(run: str) -> str:
    """``--run 1234`` means ``w1234``."""
    return f"w{run}" if run.isdecimal() else run


def _with_steps(entries: list[Entry], steps: dict[str, dict[str, list[tuple[float, float]]]]) -> list[Entry]:
    """*entries*, each with its run's step report nearest in time (the later of two as near)."""
    series = {}
    for run, by_name in steps.items():
        points = sorted(next(by_name[name] for name in STEP_NAMES if name in by_name))
        series[run] = ([ts for ts, _ in points], [value for _, value in points])
    out = []
    for entry in entries:
        found = series.get(entry.run)
        if found is None:
            out.append(entry)
            continue
        times, values = found
        i = bisect.bisect_left(times, entry.ts)  # times[i] is the first at or after the report
        if i == len(times) or (i > 0 and entry.ts - times[i - 1] < times[i] - entry.ts):
            i -= 1
        out.append(entry._replace(step=values[i]))
    return out


def _changes_only(entries: list[Entry]) -> list[Entry]:
    out: list[Entry] = []
    last_parameter: dict[tuple[str, str], object] = {}
    for entry in entries:
        if entry.kind == PARAMETER:
            key = (entry.run, entry.name)  # each run's own parameters
            if last_parameter.get(key, object()) == entry.value:
                continue
            last_parameter[key] = entry.value
        out.append(entry)
    return out
