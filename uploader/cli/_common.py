"""What every command shares: exit statuses, the settings from its options, the subcommand table's type."""

from __future__ import annotations

import argparse
import os
import re
import signal
from typing import Any, TypeAlias

from runai.reporter.settings import ENV_POD_DIR, ConfigError, Settings, option_names, settings_from_args

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "INTERRUPTED",
    "Commands",
    "command_settings",
    "name_options",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # what a shell reports for a tool killed by SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a tool killed by SIGPIPE
INTERRUPTED = "runai-uploader: interrupted; what was not delivered stays in the spool"

# What each command module adds its parser to.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def command_settings(
    args: argparse.Namespace,
    pod_uuid: str | None = None,
    *,
    for_writing: bool = True,
    also: dict[str, str] | None = None,
    one_pod: bool = True,
    **overrides: Any,
) -> Settings:
    """The settings from the command's options (*pod_uuid*, when given, instead of --pod-uuid), else the environment.

    *one_pod* False (the agent, ``recover --all``): each pod is one under the spool root, whatever
    ``reporterPodDir`` (one pod's own directory) says. A ConfigError names the command's option as well as the
    variable (see :func:`name_options`).
    """
    if pod_uuid:
        overrides["pod_uuid"] = pod_uuid
    environ = None if one_pod else {k: v for k, v in os.environ.items() if k != ENV_POD_DIR}
    try:
        return settings_from_args(args, environ=environ, for_writing=for_writing, **overrides)
    except ConfigError as exc:
        raise ConfigError(name_options(str(exc), args, also or {})) from None


def name_options(message: str, args: argparse.Namespace, also: dict[str, str]) -> str:
    """*message*, worded for a command line: a value from an option is named by its option, and a variable that
    is not set by the option that would set it too (and *also*'s alternatives, by setting name: ``--all``)."""
    for name, (option, env) in option_names().items():
        if not hasattr(args, option.lstrip("-").replace("-", "_")):
            continue  # not an option of this command
        if message.startswith(f"{name}=="):  # the keyword the option's value was passed as: "pod_uuid=" "='x'"
            message = option + message[len(name) + 1 :]
        if env is None:
            continue
        other = f" (or {also[name]})" if name in also else ""
        message = re.sub(
            rf"\b{re.escape(env)} is not set\b", f"{env} is not set and no {option}{other} was given", message
        )
        message = re.sub(rf"\bset {re.escape(env)} ", f"set {env} (or {option}) ", message)
    return message
