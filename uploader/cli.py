"""``runai-uploader``: the uploader's command line.

``run`` is what a Reporter starts in the background; ``recover`` is for people:
it uploads what a dead job left in its spool.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import resource
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, Sequence

from runai.reporter._config import (
    ENV_GATEWAY_URL,
    ENV_POD_UUID,
    FSYNC_POLICIES,
    ConfigError,
    Settings,
    check_pod_uuid,
    load_settings,
    resolve_spool_dir,
    warn_insecure_auth,
)
from runai.reporter._version import __version__
from runai.reporter.safefs import UnsafePathError, open_pod_dir
from runai.reporter.spool import LOG_FORMAT, LOG_NAME, PodLock, holder_pid, open_log, spool_file_names

from .plot import X_AXES

if TYPE_CHECKING:
    from .service import Uploader

__all__ = ["main"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a tool killed by SIGPIPE

_RECOVER_SCAN_BYTES = 4 << 20  # about 50,000 reports, a push and a checkpoint each


def main(argv: Sequence[str] | None = None) -> int:
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
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other Unix tools do, and keep
        # Python's exit-time flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runai-uploader",
        description="Deliver runai reporter spools to a Prometheus Pushgateway.",
        epilog="Settings default to the same environment variables the reporter reads "
        "(podUUID, reporterGatewayURL, reporterSpoolDir).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def spool_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument("--spool-dir", help="spool root (default: $reporterSpoolDir or the per-user default)")

    def common(p: argparse.ArgumentParser) -> None:
        spool_dir(p)
        p.add_argument("--pod-uuid", help="the pod to deliver (default: $podUUID)")
        p.add_argument("--gateway", help="Pushgateway address, host:port or URL (default: $reporterGatewayURL)")
        p.add_argument("--push-timeout", type=float,
                       help="seconds one push may take (default: $reporterPushTimeout or 10)")

    run = sub.add_parser("run", help="follow a pod's spool until its writers are gone (started by the Reporter)")
    common(run)
    run.add_argument("--push-interval", type=float, help="seconds between pushes (default: 1)")
    run.add_argument("--retry-timeout", type=float,
                     help="seconds to keep retrying an unreachable gateway once the writers are gone (default: 600)")
    run.add_argument("--fsync", choices=FSYNC_POLICIES,
                     help="durability policy (default: $reporterFsync or never); interval: fsync the spool here")
    run.add_argument("--fsync-interval", type=float, help="seconds between fsyncs with --fsync interval (default: 1)")
    run.add_argument("--history-bytes", type=int,
                     help="delivered spool kept per pod; oldest finished files go first (default: 256 MiB)")
    run.set_defaults(func=_run)

    recover = sub.add_parser("recover", help="upload everything a pod (or every pod) left undelivered")
    common(recover)
    recover.add_argument("--all", action="store_true", help="recover every pod in the spool directory")
    recover.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to keep trying the gateway, and to wait for a running uploader (default: 60)")
    recover.set_defaults(func=_recover)

    status = sub.add_parser("status", help="what each pod's spool holds: delivered, pending, writers, uploader")
    spool_dir(status)
    status.add_argument("--pod-uuid", help="one pod (default: every pod in the spool directory)")
    status.add_argument("--all", action="store_true", help="every pod (the default when no pod is named)")
    status.add_argument("--json", action="store_true", help="machine-readable output (see docs/operations.md)")
    status.set_defaults(func=_status)

    history = sub.add_parser("history", help="every report a pod's spool holds, in order (table, CSV, JSON or a plot)")
    spool_dir(history)
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


def _settings(args: argparse.Namespace, pod_uuid: str | None = None, **extra: object) -> Settings:
    return load_settings(
        pod_uuid=pod_uuid or args.pod_uuid,
        gateway_url=args.gateway,
        spool_dir=args.spool_dir,
        push_timeout=args.push_timeout,
        **extra,  # type: ignore[arg-type]
    )


def _uploader(settings: Settings, **kwargs: Any) -> Uploader:
    # Imported here: `--help` and argument errors need neither prometheus_client nor watchdog.
    from .push import Pusher
    from .service import Uploader

    pusher = Pusher(settings.gateway_url, settings.pod_uuid, timeout=settings.push_timeout,
                    username=settings.username, password=settings.password, ca_file=settings.ca_file)
    return Uploader(settings.pod_dir, pusher, push_interval=settings.push_interval, **kwargs)


# -- run ----------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    settings = _settings(args, push_interval=args.push_interval, retry_timeout=args.retry_timeout,
                         fsync=args.fsync, fsync_interval=args.fsync_interval, history_bytes=args.history_bytes)
    if not os.path.isdir(settings.pod_dir):
        print(f"runai-uploader: nothing to do: {settings.pod_dir} does not exist", file=sys.stderr)
        return EXIT_OK
    log_path = os.path.join(settings.pod_dir, LOG_NAME)
    try:
        # Opened without following a symlink, in a checked private directory (see safefs).
        log: io.TextIOBase | None = open(open_log(settings.pod_dir, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "a",
                                         encoding="utf-8")
    except OSError as exc:
        # A bad log (a directory, symlink or FIFO in its place) must not stop delivery.
        log, log_error = None, exc
    handler = logging.StreamHandler(log or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(_drop_watchdog_shutdown_noise)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if log is None:
        logger.warning("cannot write the log %s (%s); logging to stderr instead: remove or replace it",
                       log_path, log_error)
    _raise_open_files_limit()

    lock = PodLock(settings.pod_dir)
    if not lock.acquire(timeout=0.5):
        logger.info("another uploader (pid %s) serves %s; exiting", holder_pid(settings.pod_dir), settings.pod_dir)
        return EXIT_OK
    warn_insecure_auth(settings)  # now that logging goes to uploader.log
    try:
        uploader = _uploader(settings, retry_timeout=settings.retry_timeout, lock=lock,
                             history_bytes=settings.history_bytes,
                             fsync_interval=settings.fsync_interval if settings.fsync == "interval" else None)
        logger.info("uploader started for pod %s, pushing to %s", settings.pod_uuid, settings.gateway_url)
        with _StopOnSignals() as stopper:
            stopper.watch(uploader)
            status = uploader.run()
        if stopper.signum is not None:
            logger.info("stopped by signal %d", stopper.signum)
        logger.info("uploader exiting with status %d: %d reports delivered, %d pending",
                    status, uploader.delivered_records, uploader.pending_records())
        return status
    finally:
        lock.release()


def _raise_open_files_limit() -> None:
    """Raise the soft limit on open descriptors to the hard limit: the uploader holds one per spool file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:
            logger.debug("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)


def _drop_watchdog_shutdown_noise(record: logging.LogRecord) -> bool:
    # watchdog's inotify emitter logs this at ERROR when its observer is
    # stopped while a read is in flight: a benign shutdown race, not a failure.
    return not (record.name.startswith("watchdog") and "called when the thread is inactive" in record.msg)


class _StopOnSignals:
    """While in its ``with`` block, SIGTERM and SIGINT stop the watched uploader.

    The handler runs between two bytecodes of the main thread, wherever that
    thread is, so it only sets a flag and calls :meth:`Uploader.stop`, which
    takes no lock (``threading.Event.set()`` would, and deadlocks when the
    main thread was interrupted inside ``Event.wait()``). ``stop()`` also cuts
    a push in flight, so a signal ends the uploader within about a second
    whatever the gateway does.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._uploader: Uploader | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def watch(self, uploader: Uploader) -> None:
        """Stop *uploader* on a signal (at once, if one already came)."""
        self._uploader = uploader
        if self.signum is not None:
            uploader.stop()

    def stopped(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        uploader = self._uploader
        if uploader is not None:
            uploader.stop()


# -- status -------------------------------------------------------------------


def _status(args: argparse.Namespace) -> int:
    import json

    from .status import pod_status, spool_pods

    logging.basicConfig(level=logging.ERROR, format="runai-uploader: %(levelname)s: %(message)s")
    root = resolve_spool_dir(args.spool_dir)
    pods = [check_pod_uuid(args.pod_uuid, "--pod-uuid")] if args.pod_uuid and not args.all else spool_pods(root)
    gateway = os.environ.get(ENV_GATEWAY_URL) or None
    statuses = [pod_status(root, pod, gateway) for pod in pods]
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
        if pod.recover_command:
            print(f"    to upload what is pending: {pod.recover_command}")
    return EXIT_OK


# -- history ------------------------------------------------------------------


def _history(args: argparse.Namespace) -> int:
    import csv
    import datetime
    import json

    from .history import read_history

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


def _plot(entries: list[Any], pod: str, path: str, x_axis: str) -> int:
    from .plot import plot_history

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


@dataclass
class _Recovered:
    """What recovering one pod did, for the final summary."""

    pod: str
    ok: bool = True
    delivered: int = 0
    pending: int | None = 0  # None: unknown, the pod directory cannot be read (refused)
    skipped: Counter[str] = field(default_factory=Counter)  # reports skipped as corrupt, by reason
    rejected: dict[str, str] = field(default_factory=dict)  # names the gateway refused -> its answer
    ignored_files: dict[str, str] = field(default_factory=dict)  # unreadable spool files -> why


def _recover(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="runai-uploader: %(levelname)s: %(message)s")
    _raise_open_files_limit()
    if args.all:
        root = resolve_spool_dir(args.spool_dir)
        from .status import spool_pods

        pods = spool_pods(root)
        if not pods:
            print(f"no pods with spool files in {root}: nothing to send")
            return EXIT_OK
    else:
        pods = [_settings(args, for_writing=False).pod_uuid]
    results = []
    warned = False
    with _StopOnSignals() as stopper:
        for pod in pods:
            if stopper.stopped():
                break
            try:
                settings = _settings(args, pod, for_writing=False)  # root may recover another user's pod
            except ConfigError as exc:
                # This pod cannot be delivered (say, its name is not UTF-8); the others can.
                print(f"runai-uploader: pod {pod}: {exc}", file=sys.stderr)
                pending = _pending_on_disk(resolve_spool_dir(args.spool_dir), pod)
                results.append(_Recovered(pod, ok=False, pending=pending))
                continue
            if not warned:  # once: every pod is pushed with the same gateway and credentials
                warn_insecure_auth(settings)
                warned = True
            results.append(_recover_pod(settings, args.timeout, stopper))
    _print_summary(results)
    if stopper.signum is not None:
        print("runai-uploader: interrupted; what was not delivered stays in the spool", file=sys.stderr)
        return 128 + stopper.signum
    failed = [r.pod for r in results if not r.ok]
    if failed:
        print(f"runai-uploader: {len(failed)} of {len(pods)} pods not fully delivered: {', '.join(failed)}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _recover_pod(settings: Settings, timeout: float, stopper: _StopOnSignals) -> _Recovered:
    from .progress import Progress

    pod = settings.pod_uuid
    result = _Recovered(pod)
    if not spool_file_names(settings.pod_dir):
        print(f"pod {pod}: no spool files in {settings.pod_dir}: nothing to send")
        return result
    lock = PodLock(settings.pod_dir)
    if not lock.acquire():
        pid = holder_pid(settings.pod_dir)
        print(f"pod {pod}: an uploader (pid {pid}) is delivering it; waiting up to {timeout:.0f} s for it to finish",
              file=sys.stderr)
        if not lock.acquire(timeout=timeout, stopped=stopper.stopped):
            print(f"runai-uploader: pod {pod}: the uploader (pid {pid}) is still running; try again later",
                  file=sys.stderr)
            result.ok, result.pending = False, _pending_on_disk(settings.spool_dir, settings.pod_uuid)
            return result
    started = time.monotonic()
    try:
        def on_progress(records: int, sent: int) -> None:
            progress.update(records, sent, total_bytes=sent + uploader.undelivered_bytes())

        # Smaller steps than a follower's: each commits, so the bar moves while a big spool is read.
        uploader = _uploader(settings, retry_timeout=timeout, follow=False, use_watchdog=False,
                             on_progress=on_progress, scan_bytes=_RECOVER_SCAN_BYTES)
        progress = Progress(f"pod {pod}", 0, sys.stderr)
        stopper.watch(uploader)
        try:
            status = uploader.run()
        finally:
            progress.close()
    finally:
        lock.release()
    elapsed = time.monotonic() - started
    result.ok = status == EXIT_OK
    result.delivered = uploader.delivered_records
    # Counted from disk: the uploader's own count misses what it had not read yet when it gave up.
    result.pending = 0 if result.ok else _pending_on_disk(settings.spool_dir, settings.pod_uuid)
    result.skipped, result.rejected = uploader.skip_reasons(), uploader.rejected
    result.ignored_files = uploader.ignored_files
    skipped = sum(result.skipped.values())
    notes = []
    if skipped:
        notes.append(f"{skipped} skipped as corrupt")
    if result.rejected:
        notes.append(f"{len(result.rejected)} names rejected by the gateway: {', '.join(sorted(result.rejected))}")
    extra = f" ({'; '.join(notes)})" if notes else ""
    if not result.ok and stopper.stopped():
        print(f"runai-uploader: pod {pod}: stopped; {result.pending} reports still pending, "
              f"delivered {result.delivered}{extra}", file=sys.stderr)
    elif not result.ok:
        print(f"runai-uploader: pod {pod}: gateway {settings.gateway_url} unreachable ({uploader.last_error}); "
              f"{result.pending} reports still pending, delivered {result.delivered}{extra}", file=sys.stderr)
    elif result.delivered == 0 and not skipped:
        print(f"pod {pod}: nothing to send; everything was already delivered")
    else:
        print(f"pod {pod}: delivered {result.delivered} reports in {elapsed:.1f} s{extra}")
    return result


def _pending_on_disk(spool_dir: str, pod: str) -> int | None:
    """Reports of *pod* no checkpoint covers, counted from disk; None if its directory cannot be read."""
    from .status import pod_status

    status = pod_status(spool_dir, pod)
    return None if status.refused else status.reports_pending


def _unknown_pending(results: list[_Recovered]) -> str:
    unknown = sum(r.pending is None for r in results)
    return f", and the reports of {unknown} refused pod{'s' if unknown != 1 else ''}, not counted" if unknown else ""


def _print_summary(results: list[_Recovered]) -> None:
    skipped: Counter[str] = Counter()
    for r in results:
        skipped.update(r.skipped)
    rejected = sum(len(r.rejected) for r in results)
    print(f"summary: {len(results)} pod{'s' if len(results) != 1 else ''}, "
          f"{sum(r.delivered for r in results):,} reports delivered, "
          f"{sum(skipped.values()):,} skipped as corrupt, {rejected:,} names rejected by the gateway, "
          f"{sum(r.pending or 0 for r in results):,} still pending{_unknown_pending(results)}")
    for reason, count in skipped.most_common():
        print(f"  skipped {count:,}: {reason}")
    for r in results:
        for name, answer in sorted(r.rejected.items()):
            print(f"  rejected {name} (pod {r.pod}): {answer}")
        for path, why in sorted(r.ignored_files.items()):
            print(f"  ignored file {path}: {why}")
