"""``runai-uploader status``: what each pod's spool holds (the model is :mod:`uploader.views.status`)."""

from __future__ import annotations

import argparse
import json
import logging
import os

from runai.reporter.settings import (
    ENV_GATEWAY_URL,
    ENV_REMOTE_WRITE_URL,
    add_options,
    check_pod_uuid,
    resolve_spool_dir,
)
from runai.reporter.spool import GATEWAY, REMOTE_WRITE

from ..runtime.logsetup import log_to_stderr
from ..views.status import PodStatus, pod_status, spool_pods
from ._common import EXIT_OK, Commands

__all__ = ["add_status"]


def add_status(commands: Commands) -> None:
    status = commands.add_parser("status", help="what each pod's spool holds: delivered, pending, writers, uploader")
    add_options(status, ["spool_dir"])
    status.add_argument("--pod-uuid", help="one pod (default: every pod in the spool directory)")
    status.add_argument("--all", action="store_true", help="every pod (the default when no pod is named)")
    status.add_argument("--json", action="store_true", help="machine-readable output (see docs/operations.md)")
    status.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    log_to_stderr(logging.ERROR)
    root = resolve_spool_dir(args.spool_dir)
    pods = [check_pod_uuid(args.pod_uuid, "--pod-uuid")] if args.pod_uuid and not args.all else spool_pods(root)
    gateway = os.environ.get(ENV_GATEWAY_URL) or None
    remote_write = os.environ.get(ENV_REMOTE_WRITE_URL) or None
    # Judged for the sinks configured here and those each checkpoint has progress for.
    configured = tuple(sink for sink, url in ((GATEWAY, gateway), (REMOTE_WRITE, remote_write)) if url)
    statuses = [
        pod_status(root, pod, gateway, sinks=configured, found=True, remote_write_url=remote_write) for pod in pods
    ]
    if args.json:
        print(json.dumps({"spool_dir": root, "pods": [pod.to_json() for pod in statuses]}, indent=2))
        return EXIT_OK
    if not pods:
        print(f"no pods with spool files in {root}")
    for pod in statuses:
        _print_pod(pod)
    return EXIT_OK


def _print_pod(pod: PodStatus) -> None:
    if pod.refused:
        print(f"pod {pod.pod_uuid}: refused, its reports cannot be read or sent: {pod.refused}")
        return
    uploader = f"uploader pid {pod.uploader_pid}" if pod.uploader_pid else "no uploader running"
    # A local pod's job named no receiver: its reports are kept, not waiting on a delivery that failed.
    local = "kept locally (its job named no receiver): " if pod.receivers == [] else ""
    print(
        f"pod {pod.pod_uuid}: {local}{pod.reports_delivered} reports delivered, {pod.reports_pending} pending; "
        f"{pod.writers_alive} writers alive; {uploader}; last delivery {pod.last_delivered or 'never'}"
    )
    for f in pod.spool_files:
        state = "alive" if f.writer_alive else ("finished" if f.finished else "gone")
        print(
            f"    {os.path.basename(f.path):28s} writer {f.writer_pid or '?':>7} {state:8s} "
            f"{f.reports_delivered:>9} delivered {f.reports_pending:>9} pending {f.size:>11} bytes"
        )
    if pod.last_error:  # (with nothing pending, an error of the past: say so, so no one chases it)
        print(f"    last error{'' if pod.reports_pending else ' (nothing is pending now)'}: {pod.last_error}")
    if pod.clock_skew:  # only ever set by a remote-write receiver's refusals
        print(f"    clock skew: {pod.clock_skew}")
    if pod.same_ms:
        print(
            f"    same millisecond: {pod.same_ms} reports were each followed by another of their name in the same "
            "millisecond; a remote-write receiver keeps one sample per series per millisecond, so each run of them "
            "is one sample, the last (docs/api.md)"
        )
    if pod.recover_command:
        print(f"    to {'deliver it' if local else 'upload what is pending'}: {pod.recover_command}")
