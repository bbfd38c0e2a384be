"""``runai-uploader run``: follow a pod's spool until its writers are gone (what a Reporter starts)."""

from __future__ import annotations

import argparse
import os
import sys

from runai.reporter.settings import add_options, command_line_settings

from ..follow import follow
from ._common import EXIT_FAILED, EXIT_OK, Commands, command_settings

__all__ = ["add_run"]


def add_run(commands: Commands, common: tuple[str, ...]) -> None:
    """The ``run`` command: every setting is an option, the *common* ones first."""
    run = commands.add_parser("run", help="follow a pod's spool until its writers are gone (started by the Reporter)")
    add_options(run, common)
    add_options(run, [name for name in command_line_settings() if name not in common])
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settings = command_settings(args)
    if not os.path.isdir(settings.pod_dir):
        print(f"runai-uploader: nothing to do: {settings.pod_dir} does not exist", file=sys.stderr)
        return EXIT_OK
    status = follow(settings)
    if status is None:  # another uploader serves the pod: nothing left for this one
        return EXIT_OK
    # Imported here: the service imports prometheus_client and watchdog, which `--help` does not need.
    from ..delivery.service import EXIT_DELIVERED, EXIT_PENDING

    return {EXIT_DELIVERED: EXIT_OK, EXIT_PENDING: EXIT_FAILED}[status]
