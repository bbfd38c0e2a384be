"""What every command shares: exit statuses, the settings from its options, the subcommand table's type."""
from __future__ import annotations

import argparse
import signal
from typing import Any, TypeAlias

from runai.reporter.settings import Settings, settings_from_args

__all__ = ["EXIT_BROKEN_PIPE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "INTERRUPTED",
           "Commands", "command_settings"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a tool killed by SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a tool killed by SIGPIPE
INTERRUPTED = "runai-uploader: interrupted; what was not delivered stays in the spool"

# What each command module adds its parser to.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def command_settings(args: argparse.Namespace, pod_uuid: str | None = None, *, for_writing: bool = True,
                     **overrides: Any) -> Settings:
    """The settings from the command's options (*pod_uuid*, when given, instead of --pod-uuid), else the environment."""
    if pod_uuid:
        overrides["pod_uuid"] = pod_uuid
    return settings_from_args(args, for_writing=for_writing, **overrides)
