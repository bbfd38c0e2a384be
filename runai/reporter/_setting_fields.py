"""The settings' one definition: :class:`Settings`, each field a :func:`setting` saying where its value comes from.

A field names its environment variable, its keyword argument (the field's name), the uploader's command-line
option (if it travels on one), its default, the option's help, and how a raw value is checked. What is derived
from the fields is elsewhere: loading (:mod:`.settings`) and the uploader's command line (:mod:`._setting_argv`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

from ._spool_dirs import parse_pod_dir, parse_spool_dir, resolve_spool_dir
from ._validate import (
    ENV_CA_FILE,
    ENV_FINISH_TIMEOUT,
    ENV_FSYNC,
    ENV_FSYNC_INTERVAL,
    ENV_GATEWAY_URL,
    ENV_HISTORY_BYTES,
    ENV_PASSWORD,
    ENV_POD_DIR,
    ENV_POD_UUID,
    ENV_PUSH_INTERVAL,
    ENV_PUSH_TIMEOUT,
    ENV_QUIET,
    ENV_REMOTE_WRITE_URL,
    ENV_RETRY_TIMEOUT,
    ENV_RW_BEARER_TOKEN_FILE,
    ENV_RW_CA_FILE,
    ENV_RW_PASSWORD,
    ENV_RW_TENANT,
    ENV_RW_USERNAME,
    ENV_SPOOL_DIR,
    ENV_SPOOL_FILE_BYTES,
    ENV_USERNAME,
    FSYNC_POLICIES,
    check_pod_uuid,
    normalize_gateway_url,
    normalize_remote_write_url,
    parse_bytes,
    parse_flag,
    parse_policy,
    parse_seconds,
    parse_text,
    parse_timeout,
)
from .spool.checkpoint import GATEWAY, REMOTE_WRITE, SINKS

# What runai.reporter.settings re-exports of this module (with the fields' environment variables, from ._validate).
__all__ = [
    "DEFAULT_FINISH_TIMEOUT",
    "DEFAULT_FSYNC_INTERVAL",
    "DEFAULT_HISTORY_BYTES",
    "DEFAULT_PUSH_INTERVAL",
    "DEFAULT_PUSH_TIMEOUT",
    "DEFAULT_RETRY_TIMEOUT",
    "DEFAULT_SPOOL_FILE_BYTES",
    "ENV_CA_FILE",
    "ENV_FINISH_TIMEOUT",
    "ENV_FSYNC",
    "ENV_FSYNC_INTERVAL",
    "ENV_GATEWAY_URL",
    "ENV_HISTORY_BYTES",
    "ENV_PASSWORD",
    "ENV_POD_DIR",
    "ENV_POD_UUID",
    "ENV_PUSH_INTERVAL",
    "ENV_PUSH_TIMEOUT",
    "ENV_QUIET",
    "ENV_REMOTE_WRITE_URL",
    "ENV_RETRY_TIMEOUT",
    "ENV_RW_BEARER_TOKEN_FILE",
    "ENV_RW_CA_FILE",
    "ENV_RW_PASSWORD",
    "ENV_RW_TENANT",
    "ENV_RW_USERNAME",
    "ENV_SPOOL_DIR",
    "ENV_SPOOL_FILE_BYTES",
    "ENV_USERNAME",
    "Setting",
    "Settings",
    "check_keywords",
    "setting",
]

DEFAULT_PUSH_INTERVAL = 1.0
DEFAULT_FINISH_TIMEOUT = 60.0
DEFAULT_RETRY_TIMEOUT = 600.0
DEFAULT_PUSH_TIMEOUT = 10.0
DEFAULT_FSYNC_INTERVAL = 1.0
DEFAULT_SPOOL_FILE_BYTES = 64 << 20
DEFAULT_HISTORY_BYTES = 256 << 20

_KEY = "runai.reporter.setting"  # where a field's metadata holds its Setting


@dataclass(frozen=True)
class Setting:
    """Where one field of :class:`Settings` comes from, and how its raw value is checked."""

    env: str | None  # the environment variable
    option: str | None  # the uploader's option; None: never on a command line (secrets, writer-only settings)
    help: str | None  # the option's help text
    # (raw value, where it came from: "VARIABLE" or "keyword=") -> the value. Called on a value that is set;
    # for one that is unset (None or "") only when the field has neither a default nor a fallback.
    parse: Callable[[Any, str], Any]
    fallback: Callable[[Mapping[str, str]], Any] | None  # the value when unset, computed from the environment
    keyword: bool  # False: from the environment only
    cli_type: Callable[[str], Any] | None  # argparse's type for the option
    choices: tuple[str, ...] | None  # argparse's choices for the option


def setting(
    *,
    env: str | None = None,
    option: str | None = None,
    default: Any = dataclasses.MISSING,
    help: str | None = None,
    parse: Callable[[Any, str], Any] = parse_text,
    fallback: Callable[[Mapping[str, str]], Any] | None = None,
    keyword: bool = True,
    cli_type: Callable[[str], Any] | None = None,
    choices: tuple[str, ...] | None = None,
    repr: bool = True,
) -> Any:
    """A field of :class:`Settings` (or of a subclass) that is a setting: see :class:`Setting`."""
    spec = Setting(env, option, help, parse, fallback, keyword, cli_type, choices)
    return dataclasses.field(default=default, repr=repr, metadata={_KEY: spec})


def _spool_root_from_environment(env: Mapping[str, str]) -> str:
    return resolve_spool_dir(None, env)


@dataclass(frozen=True)
class Settings:
    """Everything a reporter or an uploader needs to know about one pod."""

    # A table, one setting an entry, laid out by hand: the formatter would give each its own six lines.
    # fmt: off
    pod_uuid: str = setting(env=ENV_POD_UUID, option="--pod-uuid", parse=check_pod_uuid,
                            help="the pod to deliver (default: $podUUID)")
    gateway_url: str | None = setting(env=ENV_GATEWAY_URL, option="--gateway", parse=normalize_gateway_url,
                                      fallback=lambda env: None,  # unset: fine if the other sink is set
                                      help="Pushgateway address, host:port or URL (default: $reporterGatewayURL)")
    remote_write_url: str | None = setting(
        env=ENV_REMOTE_WRITE_URL, option="--remote-write", parse=normalize_remote_write_url, fallback=lambda env: None,
        help="remote-write receiver URL, such as http://host:9090/api/v1/write (default: $reporterRemoteWriteURL)")
    spool_dir: str = setting(env=ENV_SPOOL_DIR, option="--spool-dir", parse=parse_spool_dir,
                             fallback=_spool_root_from_environment,
                             help="spool root (default: $reporterSpoolDir or the per-user default)")
    # The pod's own directory given directly, where the spool root is not mounted (a Kubernetes job mounting only
    # its subPath, whose mountPath cannot name the pod): see pod_dir, and docs/agent.md.
    own_pod_dir: str | None = setting(
        env=ENV_POD_DIR, option="--pod-dir", parse=parse_pod_dir, fallback=lambda env: None,
        help="the pod's own directory, when the spool root is not mounted (default: $reporterPodDir, else "
             "SPOOL_DIR/POD_UUID)")
    push_interval: float = setting(env=ENV_PUSH_INTERVAL, option="--push-interval", default=DEFAULT_PUSH_INTERVAL,
                                   parse=parse_seconds, cli_type=float, help="seconds between pushes (default: 1)")
    finish_timeout: float = setting(env=ENV_FINISH_TIMEOUT, default=DEFAULT_FINISH_TIMEOUT, parse=parse_timeout)
    retry_timeout: float = setting(
        env=ENV_RETRY_TIMEOUT, option="--retry-timeout", default=DEFAULT_RETRY_TIMEOUT, parse=parse_seconds,
        cli_type=float,
        help="seconds to keep retrying an unreachable gateway once the writers are gone (default: 600)")
    push_timeout: float = setting(env=ENV_PUSH_TIMEOUT, option="--push-timeout", default=DEFAULT_PUSH_TIMEOUT,
                                  parse=parse_seconds, cli_type=float,
                                  help="seconds one push may take (default: $reporterPushTimeout or 10)")
    # One of FSYNC_POLICIES; see docs/operations.md for each one's loss window.
    fsync: str = setting(env=ENV_FSYNC, option="--fsync", default="never", parse=parse_policy, choices=FSYNC_POLICIES,
                         help="durability policy (default: $reporterFsync or never); interval: fsync the spool here")
    fsync_interval: float = setting(env=ENV_FSYNC_INTERVAL, option="--fsync-interval", default=DEFAULT_FSYNC_INTERVAL,
                                    parse=parse_seconds, cli_type=float,
                                    help="seconds between fsyncs with --fsync interval (default: 1)")
    # A writer starts a new spool file past this size.
    spool_file_bytes: int = setting(env=ENV_SPOOL_FILE_BYTES, default=DEFAULT_SPOOL_FILE_BYTES, parse=parse_bytes)
    # Delivered spool kept per pod; undelivered data is never deleted.
    history_bytes: int = setting(
        env=ENV_HISTORY_BYTES, option="--history-bytes", default=DEFAULT_HISTORY_BYTES, parse=parse_bytes,
        cli_type=int, help="delivered spool kept per pod; oldest finished files go first (default: 256 MiB)")
    # Basic auth and TLS. Read from the environment only, so that secrets
    # never have to travel on a command line (world-readable in /proc).
    # load_settings checks them together (see check_credentials), and reads
    # the password from $reporterGatewayPasswordFile when it is not set itself.
    username: str | None = setting(env=ENV_USERNAME, default=None, keyword=False)
    password: str | None = setting(env=ENV_PASSWORD, default=None, keyword=False, repr=False)
    ca_file: str | None = setting(env=ENV_CA_FILE, default=None, keyword=False)
    # The remote-write sink's, by the same rules (a password may come from $reporterRemoteWritePasswordFile).
    rw_username: str | None = setting(env=ENV_RW_USERNAME, default=None, keyword=False)
    rw_password: str | None = setting(env=ENV_RW_PASSWORD, default=None, keyword=False, repr=False)
    rw_bearer_token_file: str | None = setting(env=ENV_RW_BEARER_TOKEN_FILE, default=None, keyword=False)
    rw_tenant: str | None = setting(env=ENV_RW_TENANT, default=None, keyword=False)
    rw_ca_file: str | None = setting(env=ENV_RW_CA_FILE, default=None, keyword=False)
    # The Reporter's start line on stderr (see _local.announce); True: not printed.
    quiet: bool = setting(env=ENV_QUIET, default=False, parse=parse_flag)

    @property
    def pod_dir(self) -> str:
        """The directory holding this pod's spool files and checkpoints: own_pod_dir, else spool_dir/pod_uuid."""
        return self.own_pod_dir or os.path.join(self.spool_dir, self.pod_uuid)

    @property
    def sinks(self) -> tuple[str, ...]:
        """The configured sinks' names, in SINKS order."""
        urls = {GATEWAY: self.gateway_url, REMOTE_WRITE: self.remote_write_url}
        return tuple(name for name in SINKS if urls[name] is not None)
    # fmt: on


def settings_of(settings_class: type[Settings]) -> Iterator[tuple[dataclasses.Field[Any], Setting]]:
    """Each field of *settings_class* that is a setting, with its :class:`Setting`, in definition order."""
    for f in dataclasses.fields(settings_class):
        spec = f.metadata.get(_KEY)
        if isinstance(spec, Setting):
            yield f, spec


def options_of(settings_class: type[Settings]) -> dict[str, tuple[str, Setting]]:
    """Setting name -> (its option, its Setting), for those that travel on a command line."""
    return {f.name: (spec.option, spec) for f, spec in settings_of(settings_class) if spec.option is not None}


def check_keywords(keywords: Iterable[str], caller: str, settings_class: type[Settings] = Settings) -> None:
    """Raise TypeError, worded as Python words it, for a keyword that names no setting of *settings_class*."""
    known = {f.name for f, spec in settings_of(settings_class) if spec.keyword}
    for name in keywords:
        if name not in known:
            raise TypeError(f"{caller} got an unexpected keyword argument {name!r}")
