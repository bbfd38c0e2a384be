"""Settings: each one defined once, as a field of :class:`Settings`.

A field says where its value comes from: its environment variable, its
keyword argument (the field's name), the uploader's command-line option (if
it travels on one), its default, the option's help, and how a raw value is
checked. Everything else is derived from the fields: :func:`load_settings` (and
so ``Reporter(**overrides)``), the uploader's argv (:func:`command_line`), its
argparse options (:func:`add_options`, :func:`settings_from_args`) and
:func:`recover_command`. A new setting is one new field.

Shared by the Reporter and ``runai-uploader``: both agree on where a spool lives and where it goes."""
from __future__ import annotations

import dataclasses
import logging
import os
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping

from .spool.checkpoint import GATEWAY, REMOTE_WRITE, SINKS
from ._credentials import check_credentials, check_remote_write_credentials, read_secret_file
from ._local import local_run_id
from ._validate import (
    ENV_CA_FILE, ENV_FINISH_TIMEOUT, ENV_FSYNC, ENV_FSYNC_INTERVAL, ENV_GATEWAY_URL, ENV_HISTORY_BYTES, ENV_PASSWORD,
    ENV_PASSWORD_FILE, ENV_POD_UUID, ENV_PUSH_INTERVAL, ENV_PUSH_TIMEOUT, ENV_QUIET, ENV_REMOTE_WRITE_URL,
    ENV_RETRY_TIMEOUT, ENV_RW_BEARER_TOKEN_FILE, ENV_RW_CA_FILE, ENV_RW_PASSWORD, ENV_RW_TENANT, ENV_RW_USERNAME,
    ENV_SPOOL_DIR, ENV_SPOOL_FILE_BYTES, ENV_USERNAME, FSYNC_POLICIES, ConfigError, check_pod_dir, check_pod_uuid,
    check_sinks, default_spool_dir, normalize_gateway_url, normalize_remote_write_url, parse_bytes, parse_flag,
    parse_policy, parse_seconds, parse_spool_dir, parse_text, parse_timeout, resolve_spool_dir,
)

if TYPE_CHECKING:
    import argparse  # annotations only: importing the reporter stays cheap

__all__ = [
    "DEFAULT_FINISH_TIMEOUT", "DEFAULT_FSYNC_INTERVAL", "DEFAULT_HISTORY_BYTES", "DEFAULT_PUSH_INTERVAL",
    "DEFAULT_PUSH_TIMEOUT", "DEFAULT_RETRY_TIMEOUT", "DEFAULT_SPOOL_FILE_BYTES", "ENV_CA_FILE", "ENV_FINISH_TIMEOUT",
    "ENV_FSYNC", "ENV_FSYNC_INTERVAL", "ENV_GATEWAY_URL", "ENV_HISTORY_BYTES", "ENV_PASSWORD", "ENV_PASSWORD_FILE",
    "ENV_POD_UUID", "ENV_PUSH_INTERVAL", "ENV_PUSH_TIMEOUT", "ENV_QUIET", "ENV_REMOTE_WRITE_URL", "ENV_RETRY_TIMEOUT",
    "ENV_RW_BEARER_TOKEN_FILE", "ENV_SPOOL_DIR", "ENV_SPOOL_FILE_BYTES", "ENV_USERNAME", "FSYNC_POLICIES",
    "ConfigError", "Setting", "Settings", "add_options", "check_keywords", "check_pod_uuid", "command_line",
    "command_line_settings", "default_spool_dir", "history_command", "load_settings", "normalize_gateway_url",
    "option_names", "read_secret_file", "recover_command", "resolve_spool_dir", "setting", "settings_from_args",
    "warn_insecure_auth",
]

logger = logging.getLogger(__name__)

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


def setting(*, env: str | None = None, option: str | None = None, default: Any = dataclasses.MISSING,
            help: str | None = None, parse: Callable[[Any, str], Any] = parse_text,
            fallback: Callable[[Mapping[str, str]], Any] | None = None, keyword: bool = True,
            cli_type: Callable[[str], Any] | None = None, choices: tuple[str, ...] | None = None,
            repr: bool = True) -> Any:
    """A field of :class:`Settings` (or of a subclass) that is a setting: see :class:`Setting`."""
    spec = Setting(env, option, help, parse, fallback, keyword, cli_type, choices)
    return dataclasses.field(default=default, repr=repr, metadata={_KEY: spec})


def _spool_root_from_environment(env: Mapping[str, str]) -> str:
    return resolve_spool_dir(None, env)


@dataclass(frozen=True)
class Settings:
    """Everything a reporter or an uploader needs to know about one pod."""

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
        """The directory holding this pod's spool files and checkpoints."""
        return os.path.join(self.spool_dir, self.pod_uuid)

    @property
    def sinks(self) -> tuple[str, ...]:
        """The configured sinks' names, in SINKS order."""
        urls = {GATEWAY: self.gateway_url, REMOTE_WRITE: self.remote_write_url}
        return tuple(name for name in SINKS if urls[name] is not None)


def _settings_of(settings_class: type[Settings]) -> Iterator[tuple[dataclasses.Field[Any], Setting]]:
    for f in dataclasses.fields(settings_class):
        spec = f.metadata.get(_KEY)
        if isinstance(spec, Setting):
            yield f, spec


def _options(settings_class: type[Settings]) -> dict[str, tuple[str, Setting]]:
    """Setting name -> (its option, its Setting), for those that travel on a command line."""
    return {f.name: (spec.option, spec) for f, spec in _settings_of(settings_class) if spec.option is not None}


def check_keywords(keywords: Iterable[str], caller: str, settings_class: type[Settings] = Settings) -> None:
    """Raise TypeError, worded as Python words it, for a keyword that names no setting of *settings_class*."""
    known = {f.name for f, spec in _settings_of(settings_class) if spec.keyword}
    for name in keywords:
        if name not in known:
            raise TypeError(f"{caller} got an unexpected keyword argument {name!r}")


# Local mode names its own pod only when none of these is set: a job that names a receiver is a cluster job,
# where a missing podUUID is a misconfiguration and a guess would misfile its data.
_POD_OR_RECEIVER = (("pod_uuid", ENV_POD_UUID), ("gateway_url", ENV_GATEWAY_URL),
                    ("remote_write_url", ENV_REMOTE_WRITE_URL))


def load_settings(*, environ: Mapping[str, str] | None = None, for_writing: bool = True,
                  settings_class: type[Settings] = Settings, local: bool = False, **overrides: object) -> Settings:
    """Read the settings; keyword arguments (other than None) win over the environment.

    *for_writing* False (``status``, ``recover``): root may use another user's private pod directory.
    *local* (a Reporter's): no receiver is fine, the reports stay in the spool; then a missing pod UUID is the
    process's run id (:func:`~runai.reporter._local.local_run_id`). Otherwise a receiver is required.

    Raises :class:`ConfigError` naming the variable (or ``keyword=``) that is missing or wrong, and
    TypeError for a keyword that is no setting.
    """
    check_keywords(overrides, "load_settings()", settings_class)
    env = os.environ if environ is None else environ
    if local and not any(overrides.get(name) or env.get(var) for name, var in _POD_OR_RECEIVER):
        overrides = {**overrides, "pod_uuid": local_run_id()}
    values = {f.name: _value(f, spec, overrides.get(f.name), env) for f, spec in _settings_of(settings_class)}
    if not local:
        check_sinks(values["gateway_url"], values["remote_write_url"])
    values["username"], values["password"], values["ca_file"] = check_credentials(
        env, values["gateway_url"], values["username"], values["password"], values["ca_file"])
    values["rw_username"], values["rw_password"], values["rw_ca_file"] = check_remote_write_credentials(
        env, values["remote_write_url"], values["rw_username"], values["rw_password"], values["rw_ca_file"],
        values["rw_bearer_token_file"])
    settings = settings_class(**values)
    # Belt and braces: whatever check_pod_uuid allowed must still land directly
    # under the spool root once symlinks and '..' are resolved.
    if os.path.dirname(os.path.realpath(settings.pod_dir)) != os.path.realpath(settings.spool_dir):
        raise ConfigError(f"{ENV_POD_UUID}={settings.pod_uuid!r} would place the spool outside "
                          f"{settings.spool_dir!r}")
    check_pod_dir(settings.spool_dir, settings.pod_uuid, for_writing)
    return settings


def _value(f: dataclasses.Field[Any], spec: Setting, keyword: object, env: Mapping[str, str]) -> Any:
    if keyword is not None:
        raw, source = keyword, f"{f.name}="
    else:
        raw, source = (None, f"{f.name}=") if spec.env is None else (env.get(spec.env), spec.env)
    if raw in (None, ""):
        if spec.fallback is not None:
            return spec.fallback(env)
        if f.default is not dataclasses.MISSING:
            return f.default
    return spec.parse(raw, source)


def command_line_settings(settings_class: type[Settings] = Settings) -> list[str]:
    """The names of the settings that travel on the uploader's command line, in definition order."""
    return list(_options(settings_class))


def option_names(settings_class: type[Settings] = Settings) -> dict[str, tuple[str, str | None]]:
    """Each setting that has an option: its name -> (its option, its environment variable)."""
    return {name: (option, spec.env) for name, (option, spec) in _options(settings_class).items()}


def command_line(settings: Settings) -> list[str]:
    """The uploader's options that carry *settings*: every setting that has an option."""
    # --option=VALUE, so that a value starting with '-' is not taken for an option. The spool root goes
    # first, where the uploader's argv has always had it (ps, /proc/PID/cmdline); the rest in definition order.
    options = _options(type(settings))
    names = sorted(options, key=lambda name: name != "spool_dir")  # a stable sort
    return [f"{options[name][0]}={getattr(settings, name)}" for name in names if getattr(settings, name) is not None]


def add_options(parser: argparse.ArgumentParser, names: Iterable[str] | None = None, *,
                settings_class: type[Settings] = Settings) -> None:
    """Add the options of the settings *names* (default: all that have one, in definition order) to *parser*."""
    options = _options(settings_class)
    for name in options if names is None else names:
        option, spec = options[name]
        extra: dict[str, Any] = {} if spec.cli_type is None else {"type": spec.cli_type}
        parser.add_argument(option, choices=spec.choices, help=spec.help, **extra)


def settings_from_args(args: argparse.Namespace, *, environ: Mapping[str, str] | None = None,
                       for_writing: bool = True, settings_class: type[Settings] = Settings,
                       **overrides: object) -> Settings:
    """:func:`load_settings` from the options :func:`add_options` added (*overrides* win over them)."""
    keywords: dict[str, Any] = {}
    for name, (option, _) in _options(settings_class).items():
        dest = option.lstrip("-").replace("-", "_")  # argparse's own rule
        if hasattr(args, dest):
            keywords[name] = getattr(args, dest)
    keywords.update(overrides)
    return load_settings(environ=environ, for_writing=for_writing, settings_class=settings_class, **keywords)


def recover_command(spool_dir: str, pod_uuid: str, gateway_url: str | None,
                    remote_write_url: str | None = None) -> str:
    """The exact shell command that uploads what a pod left behind (to each sink whose URL is given)."""
    options = _options(Settings)
    values = dict(spool_dir=spool_dir, pod_uuid=pod_uuid, gateway_url=gateway_url, remote_write_url=remote_write_url)
    # OPTION=VALUE: a value starting with '-' must not read as an option.
    return shlex.join(["runai-uploader", "recover", *(f"{options[name][0]}={value}"
                                                      for name, value in values.items() if value is not None)])


def history_command(spool_dir: str, pod_uuid: str) -> str:
    """The exact shell command that lists every report a pod's spool holds."""
    return shlex.join(["runai-uploader", "history", f"--spool-dir={spool_dir}", f"--pod-uuid={pod_uuid}"])


def warn_insecure_auth(settings: Settings) -> None:
    """Log a warning per sink whose basic auth would send the password in clear text (plain http://)."""
    for user, url, names in ((settings.username, settings.gateway_url, (ENV_GATEWAY_URL, "gateway", ENV_CA_FILE)),
                             (settings.rw_username, settings.remote_write_url,
                              (ENV_REMOTE_WRITE_URL, "receiver", ENV_RW_CA_FILE))):
        if user is not None and str(url).lower().startswith("http://"):
            logger.warning("%s is plain http://, so the basic-auth password of %r is sent in clear text: anyone who "
                           "can see the traffic can read it and push as this user. Use an https:// %s address (and "
                           "%s if its certificate is private)", names[0], user, names[1], names[2])
