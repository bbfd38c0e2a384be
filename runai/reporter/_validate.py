"""Checks of raw setting values, and the environment variable names their messages give.

Private to :mod:`runai.reporter.settings`, which defines the settings and
re-exports what is public here (the variable names, :class:`ConfigError`, the
pod UUID and gateway checks); the spool directory's checks are in :mod:`._spool_dirs`.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from ._redact import shown_url

__all__ = [
    "ConfigError",
    "check_pod_uuid",
    "check_sinks",
    "normalize_gateway_url",
    "normalize_remote_write_url",
    "parse_bytes",
    "parse_flag",
    "parse_policy",
    "parse_seconds",
    "parse_text",
    "parse_timeout",
]

ENV_POD_UUID = "podUUID"
ENV_GATEWAY_URL = "reporterGatewayURL"
ENV_SPOOL_DIR = "reporterSpoolDir"
ENV_POD_DIR = "reporterPodDir"
ENV_PUSH_INTERVAL = "reporterPushInterval"
ENV_FINISH_TIMEOUT = "reporterFinishTimeout"
ENV_RETRY_TIMEOUT = "reporterRetryTimeout"
ENV_PUSH_TIMEOUT = "reporterPushTimeout"
ENV_USERNAME = "reporterGatewayUsername"
ENV_PASSWORD = "reporterGatewayPassword"
ENV_PASSWORD_FILE = "reporterGatewayPasswordFile"
ENV_CA_FILE = "reporterGatewayCAFile"
ENV_FSYNC = "reporterFsync"
ENV_FSYNC_INTERVAL = "reporterFsyncInterval"
ENV_SPOOL_FILE_BYTES = "reporterSpoolFileBytes"
ENV_HISTORY_BYTES = "reporterHistoryBytes"
ENV_REMOTE_WRITE_URL = "reporterRemoteWriteURL"
ENV_RW_USERNAME = "reporterRemoteWriteUsername"
ENV_RW_PASSWORD = "reporterRemoteWritePassword"
ENV_RW_PASSWORD_FILE = "reporterRemoteWritePasswordFile"
ENV_RW_BEARER_TOKEN_FILE = "reporterRemoteWriteBearerTokenFile"
ENV_RW_TENANT = "reporterRemoteWriteTenant"
ENV_RW_CA_FILE = "reporterRemoteWriteCAFile"
ENV_QUIET = "reporterQuiet"

FSYNC_POLICIES = ("never", "interval", "always")


class ConfigError(ValueError):
    """The reporter's configuration is missing or invalid.

    The message names the environment variable (or keyword argument) to fix.
    """

    # Defined here, public in runai.reporter: tracebacks and repr() name it where users import it from.
    __module__ = "runai.reporter"


def check_pod_uuid(pod_uuid: object, source: str = ENV_POD_UUID) -> str:
    """Return *pod_uuid* if it is safe to use as one directory name.

    The pod UUID becomes a path component, so anything that could climb out of
    the spool directory (a separator, ``..``, NUL) is refused.
    """
    if not isinstance(pod_uuid, str) or not pod_uuid.strip():
        raise ConfigError(
            f"{source} is not set: set it to the pod's UUID (Run:AI sets it in every job's pod; "
            "on a laptop, `runai-uploader status` lists the pods in the spool)"
        )
    bad = [c for c in pod_uuid if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if bad or pod_uuid in (".", "..") or pod_uuid.startswith(".."):
        raise ConfigError(
            f"{source}={pod_uuid!r} cannot be used as a directory name: "
            "it must not contain path separators, control characters or '..'"
        )
    try:
        pod_uuid.encode("utf-8")  # the grouping key on the wire is UTF-8: a lone surrogate would fail every push
    except UnicodeEncodeError:
        raise ConfigError(
            f"{source}={pod_uuid!r} is not valid text (it holds undecodable bytes): set it to the pod's UUID"
        ) from None
    return pod_uuid


def normalize_gateway_url(url: object, source: str = ENV_GATEWAY_URL) -> str:
    """Turn ``host:port`` or ``http(s)://host:port[/path]`` into a full URL.

    runai 0.4.1 took a bare ``host:port``; a scheme-less value keeps meaning
    plain HTTP so existing pod specs keep working.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            f"{source} is not set: set it to the Pushgateway address, as host:port or http(s)://host:port"
        )
    text = url.strip()
    full = text if "://" in text else "http://" + text
    parts = urlsplit(full)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.query or parts.fragment:
        raise ConfigError(
            f"{source}={shown_url(str(url))!r} is not a Pushgateway address: use host:port or http(s)://host:port[/path]"
        )
    if parts.username is not None or parts.password is not None:
        # A URL is logged and shown; credentials belong where they are not.
        raise ConfigError(
            f"{source} must not contain credentials: set {ENV_USERNAME} and {ENV_PASSWORD} "
            f"(or {ENV_PASSWORD_FILE}) instead"
        )
    return full.rstrip("/")


def normalize_remote_write_url(url: object, source: str = ENV_REMOTE_WRITE_URL) -> str:
    """A remote-write receiver's full URL, such as ``http://host:9090/api/v1/write`` (scheme and path required)."""
    text = str(url).strip()
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.fragment:
        raise ConfigError(
            f"{source}={shown_url(str(url))!r} is not a remote-write URL: use http(s)://host:port/path, "
            "such as http://prometheus:9090/api/v1/write"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            f"{source} must not contain credentials: set {ENV_RW_USERNAME} and {ENV_RW_PASSWORD} "
            f"(or {ENV_RW_PASSWORD_FILE}), or {ENV_RW_BEARER_TOKEN_FILE}, instead"
        )
    return text


def check_sinks(gateway_url: str | None, remote_write_url: str | None) -> None:
    """At least one sink must be configured."""
    if gateway_url is None and remote_write_url is None:
        raise ConfigError(
            f"{ENV_GATEWAY_URL} is not set: set it to the Pushgateway address, as host:port or "
            f"http(s)://host:port, or set {ENV_REMOTE_WRITE_URL} to a remote-write receiver's URL "
            "(or both)"
        )


def _seconds(value: object, source: str, *, allow_zero: bool = False) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]  # any object: float() itself says whether it is a number
    except (TypeError, ValueError):
        raise ConfigError(f"{source}={value!r} is not a number of seconds") from None
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero) or math.isinf(seconds):
        raise ConfigError(f"{source}={value!r} must be a positive, finite number of seconds")
    return seconds


# Parsers of a setting's raw value: the keyword argument as given, or the
# environment variable's text; *source* names whichever it was, for the message.


def parse_text(value: Any, source: str) -> str:
    return str(value)


def parse_seconds(value: Any, source: str) -> float:
    return _seconds(value, source)


def parse_timeout(value: Any, source: str) -> float:
    """Seconds, where 0 means "do not wait"."""
    return _seconds(value, source, allow_zero=True)


def parse_bytes(value: Any, source: str) -> int:
    try:
        size = int(str(value))
    except ValueError:
        raise ConfigError(f"{source}={value!r} is not a whole number of bytes") from None
    if size < 4096:
        raise ConfigError(f"{source}={value!r} is too small: use at least 4096 bytes")
    return size


def parse_policy(value: Any, source: str) -> str:
    policy = str(value)
    if policy not in FSYNC_POLICIES:
        raise ConfigError(f"{source}={value!r} is not a durability policy: use one of {', '.join(FSYNC_POLICIES)}")
    return policy


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_flag(value: Any, source: str) -> bool:
    """A yes/no setting: a bool as it is, or 1/true/yes/on and 0/false/no/off (any case)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"{source}={value!r} is not a yes/no value: use 1 or 0 (true/false, yes/no and on/off work too)")
