"""The uploader's command line, derived from the fields of :class:`~._setting_fields.Settings`.

The argv a Reporter starts its uploader with (:func:`command_line`), the CLI's argparse options
(:func:`add_options`), and the commands a message tells a user to run (:func:`recover_command`,
:func:`history_command`).
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any, Iterable

from ._redact import redact_url
from ._setting_fields import Settings, options_of

if TYPE_CHECKING:
    import argparse  # annotations only: importing the reporter stays cheap

__all__ = ["add_options", "command_line", "command_line_settings", "history_command", "option_names", "recover_command"]


def command_line_settings(settings_class: type[Settings] = Settings) -> list[str]:
    """The names of the settings that travel on the uploader's command line, in definition order."""
    return list(options_of(settings_class))


def option_names(settings_class: type[Settings] = Settings) -> dict[str, tuple[str, str | None]]:
    """Each setting that has an option: its name -> (its option, its environment variable)."""
    return {name: (option, spec.env) for name, (option, spec) in options_of(settings_class).items()}


def command_line(settings: Settings) -> list[str]:
    """The uploader's options that carry *settings*: every setting that has an option."""
    # --option=VALUE, so that a value starting with '-' is not taken for an option. The spool root goes
    # first, where the uploader's argv has always had it (ps, /proc/PID/cmdline); the rest in definition order.
    options = options_of(type(settings))
    names = sorted(options, key=lambda name: name != "spool_dir")  # a stable sort
    return [f"{options[name][0]}={getattr(settings, name)}" for name in names if getattr(settings, name) is not None]


def add_options(
    parser: argparse.ArgumentParser, names: Iterable[str] | None = None, *, settings_class: type[Settings] = Settings
) -> None:
    """Add the options of the settings *names* (default: all that have one, in definition order) to *parser*."""
    options = options_of(settings_class)
    for name in options if names is None else names:
        option, spec = options[name]
        extra: dict[str, Any] = {} if spec.cli_type is None else {"type": spec.cli_type}
        parser.add_argument(option, choices=spec.choices, help=spec.help, **extra)


def recover_command(
    spool_dir: str,
    pod_uuid: str,
    gateway_url: str | None,
    remote_write_url: str | None = None,
    pod_dir: str | None = None,
) -> str:
    """The exact shell command that uploads what a pod left behind (to each sink whose URL is given).

    *pod_dir*: the pod's own directory given directly (``reporterPodDir``), named instead of the spool root.
    """
    options = options_of(Settings)
    # A URL's credentials and query (a token) are never printed: such a command needs them put back by hand.
    values = dict(
        spool_dir=None if pod_dir else spool_dir,
        pod_uuid=pod_uuid,
        own_pod_dir=pod_dir,
        gateway_url=gateway_url and redact_url(gateway_url),
        remote_write_url=remote_write_url and redact_url(remote_write_url),
    )
    # OPTION=VALUE: a value starting with '-' must not read as an option.
    return shlex.join(
        [
            "runai-uploader",
            "recover",
            *(f"{options[name][0]}={value}" for name, value in values.items() if value is not None),
        ]
    )


def history_command(spool_dir: str, pod_uuid: str, pod_dir: str | None = None) -> str:
    """The exact shell command that lists every report a pod's spool holds (*pod_dir*: as for recover_command)."""
    where = f"--pod-dir={pod_dir}" if pod_dir else f"--spool-dir={spool_dir}"
    return shlex.join(["runai-uploader", "history", where, f"--pod-uuid={pod_uuid}"])
