"""``runai-uploader agent``: deliver every pod of the spool directory that no live uploader holds (docs/agent.md)."""

from __future__ import annotations

import argparse
import math

from runai.reporter.settings import add_options

from ..agent.config import GRACE_SECONDS, MAX_DELIVERIES, MAX_PODS_PER_OWNER, METRICS_ADDRESS, OWNER_SHARE
from ..delivery.intent import ANY_RECEIVER
from ._common import Commands, command_settings

__all__ = ["add_agent"]


def add_agent(commands: Commands) -> None:
    """The ``agent`` command: the settings every pod shares, and the agent's own options (checked when parsed)."""
    agent = commands.add_parser(
        "agent",
        help="deliver every pod of the spool directory that no live uploader "
        "holds, for ever (a node agent: docs/agent.md)",
    )
    add_options(
        agent, ("spool_dir", "gateway_url", "remote_write_url", "push_timeout", "push_interval", "history_bytes")
    )
    agent.add_argument("--metrics-port", type=_port, help="serve the agent's metrics on this port (default: none)")
    agent.add_argument(
        "--metrics-address",
        default=METRICS_ADDRESS,
        help=f"the address the metrics are served on (default: {METRICS_ADDRESS}; in a pod, its IP)",
    )
    agent.add_argument(
        "--max-deliveries",
        type=_at_least_one,
        default=MAX_DELIVERIES,
        help=f"pods delivered at once, a thread each (default: {MAX_DELIVERIES})",
    )
    agent.add_argument(
        "--max-deliveries-per-owner",
        type=_whole,
        default=0,
        help="slots the pods of one owner (a pod directory's uid) may hold at once (default, or 0: "
        f"{OWNER_SHARE * 100:g}%% of --max-deliveries); a quarter of the slots is kept for pods no writer is alive in",
    )
    agent.add_argument(
        "--max-pods-per-owner",
        type=_at_least_one,
        default=MAX_PODS_PER_OWNER,
        help="pod directories of one uid followed at once; past it a new one displaces that uid's longest-idle "
        f"pod, or waits unfollowed, counted and logged (default: {MAX_PODS_PER_OWNER})",
    )
    agent.add_argument(
        "--grace-seconds",
        type=_seconds,
        default=GRACE_SECONDS,
        help=f"how long a new live writer's job has to start its own uploader (default: {GRACE_SECONDS:g})",
    )
    agent.add_argument(
        ANY_RECEIVER,
        action="store_true",
        help="send every pod to every receiver given here, whatever its job named (by default a pod "
        "goes only to the receivers of the kinds its job named)",
    )
    agent.set_defaults(func=_agent)


# The agent's own options, checked when parsed: 0 deliveries would deliver nothing, silently, and a grace of
# inf or nan would leave every live writer's pod to an uploader that may never come.
def _at_least_one(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _whole(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0 or more)")
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
    settings = command_settings(args, "runai-agent", for_writing=False, one_pod=False)
    from ..agent.main import serve_agent  # imports prometheus_client and watchdog, which `--help` does not need

    return serve_agent(
        settings,
        lambda pod: command_settings(args, pod, for_writing=False, one_pod=False),
        metrics_address=args.metrics_address,
        metrics_port=args.metrics_port,
        max_deliveries=args.max_deliveries,
        max_deliveries_per_owner=args.max_deliveries_per_owner,
        max_pods_per_owner=args.max_pods_per_owner,
        grace=args.grace_seconds,
        any_receiver=args.any_receiver,
    )
