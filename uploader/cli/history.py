"""``runai-uploader history``: every report a pod's spool holds (the model is :mod:`uploader.views.history`)."""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys

from runai.reporter.safefs import open_pod_dir
from runai.reporter.settings import ENV_POD_UUID, add_options, check_pod_uuid, resolve_spool_dir

from ..views.history import Entry, read_history
from ..views.plot import X_AXES, plot_history
from ._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Commands

__all__ = ["add_history"]

_FIELDS = ["time", "ts", "seq", "kind", "name", "value", "spool_file"]


def add_history(commands: Commands) -> None:
    history = commands.add_parser("history",
                                  help="every report a pod's spool holds, in order (table, CSV, JSON or a plot)")
    add_options(history, ["spool_dir"])
    history.add_argument("--pod-uuid", help="the pod (default: $podUUID)")
    history.add_argument("--metric", action="append", default=[], metavar="NAME",
                         help="only this name (a metric or a parameter); repeat for more")
    output = history.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV with a header row; the value is in `value`")
    output.add_argument("--json", action="store_true", help="a JSON list of reports")
    output.add_argument("--plot", metavar="FILE.png", help="draw the metrics as a PNG (needs runai[plot])")
    history.add_argument("--x", choices=X_AXES, default="time",
                         help="--plot's x axis: the report's time (default), or step: its position among the "
                              "reports of its name (for a per-batch metric such as loss, the global step)")
    history.set_defaults(func=_history)


def _history(args: argparse.Namespace) -> int:
    root = resolve_spool_dir(args.spool_dir)
    pod = check_pod_uuid(args.pod_uuid or os.environ.get(ENV_POD_UUID), "--pod-uuid")
    if os.path.lexists(os.path.join(root, pod)):
        os.close(open_pod_dir(os.path.join(root, pod)))  # an unsafe one: main() says why, not "no reports"
    entries = read_history(os.path.join(root, pod), args.metric)
    if args.plot:
        return _plot(entries, pod, args.plot, args.x)
    rows = [{"time": datetime.datetime.fromtimestamp(e.ts, datetime.timezone.utc).isoformat(), "ts": e.ts,
             "seq": e.seq, "kind": e.kind, "name": e.name, "value": e.value, "spool_file": e.spool_file}
            for e in entries]
    if args.json:
        print(json.dumps(rows, indent=1))
    elif args.csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    else:
        if not rows:
            print(f"no reports for pod {pod} in {root}")
        for row in rows:
            print(f"{row['time']}  {row['seq']:>8}  {row['kind']:9s}  {row['name']:24s}  {row['value']}")
    return EXIT_OK


def _plot(entries: list[Entry], pod: str, path: str, x_axis: str) -> int:
    try:
        names = plot_history(entries, f"pod {pod}: every report from the local spool", path, x_axis)
    except ImportError:
        print("runai-uploader: --plot draws with matplotlib, which is not installed: pip install 'runai[plot]'",
              file=sys.stderr)
        return EXIT_USAGE
    if not names:
        print(f"runai-uploader: no metrics to plot for pod {pod}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {path}: {', '.join(names)}")
    return EXIT_OK
