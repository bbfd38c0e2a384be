"""Settings: each one defined once, as a field of :class:`Settings`.

A field says where its value comes from: its environment variable, its
keyword argument (the field's name), the uploader's command-line option (if
it travels on one), its default, the option's help, and how a raw value is
checked. Everything else is derived from the fields: :func:`load_settings` (and
so ``Reporter(**overrides)``), the uploader's argv (:func:`command_line`), its
argparse options (:func:`add_options`, :func:`settings_from_args`) and
:func:`recover_command`. A new setting is one new field.

Shared by the Reporter and ``runai-uploader``: both agree on where a spool lives and where it goes. This module
is the public face and does the loading; the fields are defined in :mod:`._setting_fields`, the command line
is rendered by :mod:`._setting_argv`, and raw values are checked by :mod:`._validate`."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any, Mapping

from . import _setting_fields
from ._credentials import Credentials, check_credentials, check_remote_write_credentials, read_secret_file
from ._local import local_run_id
from ._redact import redact_url
from ._setting_argv import (
    add_options,
    command_line,
    command_line_settings,
    history_command,
    option_names,
    recover_command,
)

# The public face re-exports the fields' module whole (its __all__: Settings, setting, the defaults, the
# variables' names), so that its names are listed once, there; those used here are imported by name too.
from ._setting_fields import *  # noqa: F403
from ._setting_fields import Setting, Settings, check_keywords, options_of, settings_of
from ._spool_dirs import check_own_pod_dir, check_pod_dir, default_spool_dir, parse_pod_dir, resolve_spool_dir
from ._validate import (
    ENV_CA_FILE,
    ENV_GATEWAY_URL,
    ENV_PASSWORD_FILE,
    ENV_POD_UUID,
    ENV_REMOTE_WRITE_URL,
    ENV_RW_CA_FILE,
    FSYNC_POLICIES,
    ConfigError,
    check_pod_uuid,
    check_sinks,
    normalize_gateway_url,
)

if TYPE_CHECKING:
    import argparse  # annotations only: importing the reporter stays cheap

__all__ = [
    "ENV_PASSWORD_FILE",
    "FSYNC_POLICIES",
    "ConfigError",
    "add_options",
    "check_pod_uuid",
    "command_line",
    "command_line_settings",
    "default_spool_dir",
    "history_command",
    "load_settings",
    "normalize_gateway_url",
    "option_names",
    "parse_pod_dir",
    "read_secret_file",
    "recover_command",
    "redact_url",
    "resolve_spool_dir",
    "settings_from_args",
    "warn_insecure_auth",
]
__all__ += _setting_fields.__all__

logger = logging.getLogger(__name__)

# Local mode names its own pod only when none of these is set: a job that names a receiver is a cluster job,
# where a missing podUUID is a misconfiguration and a guess would misfile its data.
_POD_OR_RECEIVER = (
    ("pod_uuid", ENV_POD_UUID),
    ("gateway_url", ENV_GATEWAY_URL),
    ("remote_write_url", ENV_REMOTE_WRITE_URL),
)

# Each sink's fields of Settings that make its Credentials, in that order.
_GATEWAY = ("gateway_url", "username", "password", "ca_file")
_REMOTE_WRITE = ("remote_write_url", "rw_username", "rw_password", "rw_ca_file")


def load_settings(
    *,
    environ: Mapping[str, str] | None = None,
    for_writing: bool = True,
    settings_class: type[Settings] = Settings,
    local: bool = False,
    **overrides: object,
) -> Settings:
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
    values = {f.name: _value(f, spec, overrides.get(f.name), env) for f, spec in settings_of(settings_class)}
    if not local:
        check_sinks(values["gateway_url"], values["remote_write_url"])
    _check_credentials(values, env)
    settings = settings_class(**values)
    if settings.own_pod_dir is not None:  # given directly: its name need not be the pod's, nor its parent the root
        check_own_pod_dir(settings.own_pod_dir, settings.pod_uuid, for_writing)
        return settings
    # Belt and braces: whatever check_pod_uuid allowed must still land directly
    # under the spool root once symlinks and '..' are resolved.
    if os.path.dirname(os.path.realpath(settings.pod_dir)) != os.path.realpath(settings.spool_dir):
        raise ConfigError(f"{ENV_POD_UUID}={settings.pod_uuid!r} would place the spool outside {settings.spool_dir!r}")
    check_pod_dir(settings.spool_dir, settings.pod_uuid, for_writing)
    return settings


def _check_credentials(values: dict[str, Any], env: Mapping[str, str]) -> None:
    """Check each sink's credentials in *values* (the fields of _GATEWAY, _REMOTE_WRITE), replacing them checked."""
    gateway = check_credentials(env, Credentials(*(values[name] for name in _GATEWAY)))
    remote_write = Credentials(*(values[name] for name in _REMOTE_WRITE))
    remote_write = check_remote_write_credentials(env, remote_write, values["rw_bearer_token_file"])
    values.update(zip(_GATEWAY, gateway, strict=True))
    values.update(zip(_REMOTE_WRITE, remote_write, strict=True))


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


def settings_from_args(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    for_writing: bool = True,
    settings_class: type[Settings] = Settings,
    **overrides: object,
) -> Settings:
    """:func:`load_settings` from the options :func:`add_options` added (*overrides* win over them)."""
    keywords: dict[str, Any] = {}
    for name, (option, _) in options_of(settings_class).items():
        dest = option.lstrip("-").replace("-", "_")  # argparse's own rule
        if hasattr(args, dest):
            keywords[name] = getattr(args, dest)
    keywords.update(overrides)
    return load_settings(environ=environ, for_writing=for_writing, settings_class=settings_class, **keywords)


def warn_insecure_auth(settings: Settings) -> None:
    """Log a warning per sink whose basic auth would send the password in clear text (plain http://)."""
    for user, url, names in (
        (settings.username, settings.gateway_url, (ENV_GATEWAY_URL, "gateway", ENV_CA_FILE)),
        (settings.rw_username, settings.remote_write_url, (ENV_REMOTE_WRITE_URL, "receiver", ENV_RW_CA_FILE)),
    ):
        if user is not None and str(url).lower().startswith("http://"):
            logger.warning(
                "%s is plain http://, so the basic-auth password of %r is sent in clear text: anyone who "
                "can see the traffic can read it and push as this user. Use an https:// %s address (and "
                "%s if its certificate is private)",
                names[0],
                user,
                names[1],
                names[2],
            )
