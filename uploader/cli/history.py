"""``runai-uploader history``: every report a pod's spool holds (the model is :mod:`uploader.views.history`)."""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys

from runai.reporter.safefs import open_pod_dir
from runai.reporter.settings import (
    ENV_POD_DIR,
    ENV_POD_UUID,
    add_options,
    check_pod_uuid,
    parse_pod_dir,
    resolve_spool_dir,
)

from ..views.history import Entry, read_history
from ..views.plot import X_AXES, plot_history
from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Commands

__all__ = ["add_history"]

# The CSV's and JSON's fields: the first seven as before runs and steps were shown; the new ones after them.
_FIELDS = ["time", "ts", "seq", "kind", "name", "value", "spool_file", "run", "step", "pod_uuid"]
_TABLE = "{time:32s}  {pod}{run:>9}  {step:>9}  {seq:>8}  {kind:9s}  {name:24s}  {value}"


def add_history(commands: Commands) -> None:
    history = commands.add_parser(
        "history", help="every report a pod's spool holds, in order (table, CSV, JSON or a plot)"
    )
    add_options(history, ["spool_dir", "own_pod_dir"])
    history.add_argument(
        "--pod-uuid",
        action="append",
        default=[],
        metavar="POD",
        help="the pod (default: $podUUID); repeat to compare pods: a plot overlays them",
    )
    history.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME",
        help="only this name (a metric or a parameter); repeat for more",
    )
    history.add_argument(
        "--run",
        "--writer",
        action="append",
        default=[],
        metavar="RUN",
        help="only this run: a writing process, w<pid> as the `run` column shows it (two jobs that "
        "shared a podUUID are two runs); repeat for more",
    )
    output = history.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV with a header row; the value is in `value`")
    output.add_argument("--json", action="store_true", help="a JSON list of reports")
    output.add_argument("--plot", metavar="FILE.png", help="draw the metrics as a PNG (needs runai[plot])")
    history.add_argument(
        "--x",
        choices=X_AXES,
        default="time",
        help="--plot's x axis: the report's time (default), or step: the job's own global_step "
        "(or step) reported nearest in time, so that metrics reported at different rates "
        "share one axis (where a run reported no step, the n-th report of each name)",
    )
    history.set_defaults(func=_history)


def _history(args: argparse.Namespace) -> int:
    root = resolve_spool_dir(args.spool_dir)
    pods = [check_pod_uuid(pod, "--pod-uuid") for pod in args.pod_uuid] or [
        check_pod_uuid(os.environ.get(ENV_POD_UUID), f"--pod-uuid (or {ENV_POD_UUID})")
    ]
    own = _own_pod_dir(args)
    if own and len(set(pods)) > 1:
        print("runai-uploader: --pod-dir is one pod's directory: name one --pod-uuid with it", file=sys.stderr)
        return EXIT_USAGE
    entries = []
    for pod in dict.fromkeys(pods):
        pod_dir = own or os.path.join(root, pod)
        if os.path.lexists(pod_dir):
            os.close(open_pod_dir(pod_dir))  # an unsafe one: main() says why, not "no reports"
        entries += read_history(pod_dir, args.metric, args.run, pod)
    if args.plot:
        return _plot(entries, pods, args.plot, args.x)
    rows = [_row(e) for e in entries]
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    elif not rows:
        runs = f" (run {', '.join(args.run)})" if args.run else ""
        print(f"no reports for pod {', '.join(pods)}{runs} in {own or root}")
    else:
        _table(rows, several=len(set(pods)) > 1)
    return EXIT_OK


def _own_pod_dir(args: argparse.Namespace) -> str | None:
    """--pod-dir; else $reporterPodDir when no pod or root is named (in a job's container: this pod's own)."""
    if args.pod_dir:
        return parse_pod_dir(args.pod_dir, "--pod-dir")
    if args.pod_uuid or args.spool_dir or not os.environ.get(ENV_POD_DIR):
        return None
    return parse_pod_dir(os.environ[ENV_POD_DIR], ENV_POD_DIR)


def _row(e: Entry) -> dict[str, object]:
    return {
        "time": datetime.datetime.fromtimestamp(e.ts, datetime.timezone.utc).isoformat(),
        "ts": e.ts,
        "seq": e.seq,
        "kind": e.kind,
        "name": e.name,
        "value": e.value,
        "spool_file": e.spool_file,
        "run": e.run,
        "step": _number(e.step),
        "pod_uuid": e.pod,
    }


def _number(step: float | None) -> float | int | None:
    """A step as the job reported it: 12, not 12.0."""
    return int(step) if step is not None and step.is_integer() else step


def _table(rows: list[dict[str, object]], several: bool) -> None:
    width = max(len(str(row["pod_uuid"])) for row in rows) if several else 0

    def pod(text: object) -> str:
        return f"{text!s:{width}}  " if several else ""

    print(
        _TABLE.format(
            time="time (UTC)",
            pod=pod("pod"),
            run="run",
            step="step",
            seq="seq",
            kind="kind",
            name="name",
            value="value",
        )
    )
    for row in rows:
        step = "" if row["step"] is None else row["step"]
        print(_TABLE.format(**{**row, "pod": pod(row["pod_uuid"]), "step": step}))


def _plot(entries: list[Entry], pods: list[str], path: str, x_axis: str) -> int:
    what = f"pod {pods[0]}" if len(set(pods)) == 1 else f"pods {', '.join(dict.fromkeys(pods))}"
    try:
        names = plot_history(entries, f"{what}: every report from the local spool", path, x_axis)
    except ImportError:
        print(
            "runai-uploader: --plot draws with matplotlib, which is not installed: pip install 'runai[plot]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not names:
        print(f"runai-uploader: no metrics to plot for {what}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {path}: {', '.join(names)}")
    return EXIT_OK
