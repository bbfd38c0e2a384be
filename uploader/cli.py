"""``runai-uploader``: the uploader's command line.

``run`` is what a Reporter starts in the background; ``recover`` is for people:
it uploads what a dead job left in its spool; ``agent`` does that for a whole
spool directory, for ever (one per node).
"""
from __future__ import annotations

import argparse
import csv
import datetime
import gc
import io
import json
import logging
import math
import os
import signal
import sys
from typing import Any, Sequence

from runai.reporter import __version__
from runai.reporter.settings import (
    ENV_GATEWAY_URL,
    ENV_REMOTE_WRITE_URL,
    ENV_POD_UUID,
    ConfigError,
    Settings,
    add_options,
    check_pod_uuid,
    command_line_settings,
    resolve_spool_dir,
    settings_from_args,
)
from runai.reporter.safefs import UnsafePathError, open_pod_dir
from runai.reporter.spool import GATEWAY, REMOTE_WRITE

from .factory import raise_open_files_limit
from .follow import follow
from .logsetup import log_to_stderr
from .history import Entry, read_history
from .plot import X_AXES, plot_history
from .recover_output import RecoveryPrinter, print_summary
from .recovery import recover_pods
from .signals import StopOnSignals
from .status import pod_status, spool_pods

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a tool killed by SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a tool killed by SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    # A drain holds hundreds of thousands of records and samples (tuples, without cycles among them); at
    # the default threshold (700 allocations) the cyclic collector traverses them over and over, a third
    # of a drain's CPU time (docs/design/performance.md). Cycles are rare here: collect them seldom.
    gc.set_threshold(100_000, 50, 100)
    parser = _parser()
    args = parser.parse_args(argv)
    # A pod directory's name may hold undecodable bytes: print them escaped, never fail on them.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"runai-uploader: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnsafePathError as exc:  # a file or directory another user could control: never used
        print(f"runai-uploader: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("runai-uploader: interrupted; what was not delivered stays in the spool", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other Unix tools do, and keep
        # Python's exit-time flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runai-uploader",
        description="Deliver runai reporter spools to a Prometheus Pushgateway and/or a remote-write receiver.",
        epilog="Settings default to the same environment variables the reporter reads "
        "(podUUID, reporterGatewayURL, reporterRemoteWriteURL, reporterSpoolDir).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    # The settings' options come from their one definition (runai.reporter.settings); run takes all of them,
    # the shared ones first.
    common = ("spool_dir", "pod_uuid", "gateway_url", "remote_write_url", "push_timeout")

    run = sub.add_parser("run", help="follow a pod's spool until its writers are gone (started by the Reporter)")
    add_options(run, common)
    add_options(run, [name for name in command_line_settings() if name not in common])
    run.set_defaults(func=_run)

    recover = sub.add_parser("recover", help="upload everything a pod (or every pod) left undelivered")
    add_options(recover, common)
    recover.add_argument("--all", action="store_true", help="recover every pod in the spool directory")
    recover.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to keep trying the gateway, and to wait for a running uploader (default: 60)")
    recover.set_defaults(func=_recover)

    agent = sub.add_parser("agent", help="deliver every pod of the spool directory that no live uploader holds, "
                                         "for ever (a node agent: docs/agent.md)")
    add_options(agent, ("spool_dir", "gateway_url", "remote_write_url", "push_timeout", "push_interval",
                        "history_bytes"))
    agent.add_argument("--metrics-port", type=_port, help="serve the agent's metrics on this port (default: none)")
    agent.add_argument("--metrics-address", default="127.0.0.1",
                       help="the address the metrics are served on (default: 127.0.0.1; in a pod, its IP)")
    agent.add_argument("--max-deliveries", type=_at_least_one, default=256,
                       help="pods delivered at once, a thread each (default: 256)")
    agent.add_argument("--grace-seconds", type=_seconds, default=2.0,
                       help="how long a new live writer's job has to start its own uploader (default: 2)")
    agent.set_defaults(func=_agent)

    status = sub.add_parser("status", help="what each pod's spool holds: delivered, pending, writers, uploader")
    add_options(status, ["spool_dir"])
    status.add_argument("--pod-uuid", help="one pod (default: every pod in the spool directory)")
    status.add_argument("--all", action="store_true", help="every pod (the default when no pod is named)")
    status.add_argument("--json", action="store_true", help="machine-readable output (see docs/operations.md)")
    status.set_defaults(func=_status)

    history = sub.add_parser("history", help="every report a pod's spool holds, in order (table, CSV, JSON or a plot)")
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
    return parser


def _settings(args: argparse.Namespace, pod_uuid: str | None = None, *, for_writing: bool = True,
              **overrides: Any) -> Settings:
    """The settings from the command's options (*pod_uuid*, when given, instead of --pod-uuid), else the environment."""
    if pod_uuid:
        overrides["pod_uuid"] = pod_uuid
    return settings_from_args(args, for_writing=for_writing, **overrides)


# -- run ----------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if not os.path.isdir(settings.pod_dir):
        print(f"runai-uploader: nothing to do: {settings.pod_dir} does not exist", file=sys.stderr)
        return EXIT_OK
    status = follow(settings)
    if status is None:  # another uploader serves the pod: nothing left for this one
        return EXIT_OK
    # Imported here: the service imports prometheus_client and watchdog, which `--help` does not need.
    from .service import EXIT_DELIVERED, EXIT_PENDING

    return {EXIT_DELIVERED: EXIT_OK, EXIT_PENDING: EXIT_FAILED}[status]


# -- agent --------------------------------------------------------------------


# The agent's own options, checked when parsed: 0 deliveries would deliver nothing, silently, and a grace of
# inf or nan would leave every live writer's pod to an uploader that may never come.
def _at_least_one(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _port(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds, 0 or more")
    return seconds


def _agent(args: argparse.Namespace) -> int:
    # A pod's name is checked when the agent delivers it; this one only checks the other settings, now.
    settings = _settings(args, "runai-agent", for_writing=False)
    from .agent_main import serve_agent  # imports prometheus_client and watchdog, which `--help` does not need

    return serve_agent(settings, lambda pod: _settings(args, pod, for_writing=False),
                       metrics_address=args.metrics_address, metrics_port=args.metrics_port,
                       max_deliveries=args.max_deliveries, grace=args.grace_seconds)


# -- status -------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    log_to_stderr(logging.ERROR)
    root = resolve_spool_dir(args.spool_dir)
    pods = [check_pod_uuid(args.pod_uuid, "--pod-uuid")] if args.pod_uuid and not args.all else spool_pods(root)
    gateway = os.environ.get(ENV_GATEWAY_URL) or None
    remote_write = os.environ.get(ENV_REMOTE_WRITE_URL) or None
    # Judged for the sinks configured here and those each checkpoint has progress for.
    configured = tuple(sink for sink, url in ((GATEWAY, gateway), (REMOTE_WRITE, remote_write)) if url)
    statuses = [pod_status(root, pod, gateway, sinks=configured, found=True, remote_write_url=remote_write)
                for pod in pods]
    if args.json:
        print(json.dumps({"spool_dir": root, "pods": [pod.to_json() for pod in statuses]}, indent=2))
        return EXIT_OK
    if not pods:
        print(f"no pods with spool files in {root}")
    for pod in statuses:
        if pod.refused:
            print(f"pod {pod.pod_uuid}: refused, its reports cannot be read or sent: {pod.refused}")
            continue
        uploader = f"uploader pid {pod.uploader_pid}" if pod.uploader_pid else "no uploader running"
        print(f"pod {pod.pod_uuid}: {pod.reports_delivered} reports delivered, {pod.reports_pending} pending; "
              f"{pod.writers_alive} writers alive; {uploader}; last delivery {pod.last_delivered or 'never'}")
        for f in pod.spool_files:
            state = "alive" if f.writer_alive else ("finished" if f.finished else "gone")
            print(f"    {os.path.basename(f.path):28s} writer {f.writer_pid or '?':>7} {state:8s} "
                  f"{f.reports_delivered:>9} delivered {f.reports_pending:>9} pending {f.size:>11} bytes")
        if pod.last_error:
            print(f"    last error: {pod.last_error}")
        if pod.clock_skew:  # only ever set by a remote-write receiver's refusals
            print(f"    clock skew: {pod.clock_skew}")
        if pod.recover_command:
            print(f"    to upload what is pending: {pod.recover_command}")
    return EXIT_OK


# -- history ------------------------------------------------------------------


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
        writer = csv.DictWriter(sys.stdout, fieldnames=["time", "ts", "seq", "kind", "name", "value", "spool_file"])
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


# -- recover ------------------------------------------------------------------


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
        first = _settings(args, for_writing=False)
        spool_dir, pods = first.spool_dir, [first.pod_uuid]

    def settings_for(pod: str) -> Settings:
        return _settings(args, pod, for_writing=False)

    with StopOnSignals() as stopper:
        results = recover_pods(pods, settings_for, spool_dir, args.timeout, stopper, RecoveryPrinter())
    print_summary(results)
    if stopper.signum is not None:
        print("runai-uploader: interrupted; what was not delivered stays in the spool", file=sys.stderr)
        return 128 + stopper.signum
    failed = [r.pod for r in results if not r.ok]
    if failed:
        print(f"runai-uploader: {len(failed)} of {len(pods)} pods not fully delivered: {', '.join(failed)}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
