"""Settings from the environment and keyword arguments.

One home for every knob, shared by the training-side :class:`Reporter` and
the ``runai-uploader`` command line, so that both agree on where a pod's
spool lives and where it is pushed.
"""
from __future__ import annotations

import logging
import math
import os
import shlex
import tempfile
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import urlsplit

from .safefs import UnsafePathError, check_path, open_pod_dir, open_root

__all__ = [
    "ConfigError", "Settings", "check_pod_uuid", "load_settings", "normalize_gateway_url", "recover_command",
    "resolve_spool_dir", "warn_insecure_auth",
]

logger = logging.getLogger(__name__)

ENV_POD_UUID = "podUUID"
ENV_GATEWAY_URL = "reporterGatewayURL"
ENV_SPOOL_DIR = "reporterSpoolDir"
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

DEFAULT_PUSH_INTERVAL = 1.0
DEFAULT_FINISH_TIMEOUT = 60.0
DEFAULT_RETRY_TIMEOUT = 600.0
DEFAULT_PUSH_TIMEOUT = 10.0
DEFAULT_FSYNC_INTERVAL = 1.0
DEFAULT_SPOOL_FILE_BYTES = 64 << 20
DEFAULT_HISTORY_BYTES = 256 << 20
FSYNC_POLICIES = ("never", "interval", "always")

# How to fix a spool directory that other users could write to.
_PRIVATE_SPOOL_HELP = (
    f"set {ENV_SPOOL_DIR} to a directory that only you can write. On a volume shared with other users or "
    "groups (a Kubernetes volume with fsGroup is root-owned and group-writable), have the job create a private "
    f"subdirectory first, for example `mkdir -m 0700 -p /VOLUME/runai-spool-$(id -u)`, and set {ENV_SPOOL_DIR} "
    "to it (see docs/operations.md, \"Security: who may use the spool directory\")"
)


class ConfigError(ValueError):
    """The reporter's configuration is missing or invalid.

    The message names the environment variable (or keyword argument) to fix.
    """


@dataclass(frozen=True)
class Settings:
    """Everything a reporter or an uploader needs to know about one pod."""

    pod_uuid: str
    gateway_url: str
    spool_dir: str
    push_interval: float = DEFAULT_PUSH_INTERVAL
    finish_timeout: float = DEFAULT_FINISH_TIMEOUT
    retry_timeout: float = DEFAULT_RETRY_TIMEOUT
    push_timeout: float = DEFAULT_PUSH_TIMEOUT
    fsync: str = "never"  # one of FSYNC_POLICIES; see docs/operations.md for each one's loss window
    fsync_interval: float = DEFAULT_FSYNC_INTERVAL
    spool_file_bytes: int = DEFAULT_SPOOL_FILE_BYTES  # a writer starts a new spool file past this size
    history_bytes: int = DEFAULT_HISTORY_BYTES  # delivered spool kept per pod; undelivered data is never deleted
    # Basic auth and TLS. Read from the environment only, so that secrets
    # never have to travel on a command line (world-readable in /proc).
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None

    @property
    def pod_dir(self) -> str:
        """The directory holding this pod's spool files and checkpoints."""
        return os.path.join(self.spool_dir, self.pod_uuid)


def recover_command(spool_dir: str, pod_uuid: str, gateway_url: str) -> str:
    """The exact shell command that uploads what a pod left behind."""
    # OPTION=VALUE: a value starting with '-' must not read as an option.
    return shlex.join(["runai-uploader", "recover", f"--spool-dir={spool_dir}", f"--pod-uuid={pod_uuid}",
                       f"--gateway={gateway_url}"])


def check_pod_uuid(pod_uuid: object, source: str = ENV_POD_UUID) -> str:
    """Return *pod_uuid* if it is safe to use as one directory name.

    The pod UUID becomes a path component, so anything that could climb out of
    the spool directory (a separator, ``..``, NUL) is refused.
    """
    if not isinstance(pod_uuid, str) or not pod_uuid.strip():
        raise ConfigError(f"{source} is not set: set it to the pod's UUID (Run:AI sets it in every job's pod)")
    bad = [c for c in pod_uuid if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if bad or pod_uuid in (".", "..") or pod_uuid.startswith(".."):
        raise ConfigError(
            f"{source}={pod_uuid!r} cannot be used as a directory name: "
            "it must not contain path separators, control characters or '..'"
        )
    try:
        pod_uuid.encode("utf-8")  # the grouping key on the wire is UTF-8: a lone surrogate would fail every push
    except UnicodeEncodeError:
        raise ConfigError(f"{source}={pod_uuid!r} is not valid text (it holds undecodable bytes): "
                          "set it to the pod's UUID") from None
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
            f"{source}={url!r} is not a Pushgateway address: use host:port or http(s)://host:port[/path]"
        )
    if parts.username is not None or parts.password is not None:
        # A URL is logged and shown; credentials belong where they are not.
        raise ConfigError(f"{source} must not contain credentials: set {ENV_USERNAME} and {ENV_PASSWORD} "
                          f"(or {ENV_PASSWORD_FILE}) instead")
    return full.rstrip("/")


def default_spool_dir(environ: Mapping[str, str] | None = None) -> str:
    """A per-user state directory, or the temp dir when that is not writable."""
    env = os.environ if environ is None else environ
    state_home = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    candidate = os.path.join(state_home, "runai-reporter")
    if _writable_dir(candidate):
        return candidate
    return os.path.join(tempfile.gettempdir(), f"runai-reporter-{os.getuid()}")


def resolve_spool_dir(spool_dir: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The spool root: *spool_dir*, else ``reporterSpoolDir``, else the default."""
    env = os.environ if environ is None else environ
    value = spool_dir or env.get(ENV_SPOOL_DIR)
    root = os.path.abspath(os.path.expanduser(value)) if value else default_spool_dir(env)
    _check_spool_root(root)
    return root


def _check_spool_root(root: str) -> None:
    """Refuse a spool root another user could write to or steer (see safefs); a missing one is created later."""
    try:
        if os.path.lexists(root):
            os.close(open_root(root))
        else:
            check_path(root)  # what exists of its path: no other user's symlink on the way
    except UnsafePathError as exc:
        raise ConfigError(f"{ENV_SPOOL_DIR}: {exc}, so another user could read or steer the reports: "
                          f"{_PRIVATE_SPOOL_HELP}") from None
    except OSError:
        pass  # not usable at all: the writer warns and counts the lost reports, as for a full disk


def _check_pod_dir(settings: Settings, for_writing: bool = True) -> None:
    """Refuse a pod name too long for the file system, and an existing pod directory that is not private."""
    path = settings.spool_dir
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)  # the spool root may not exist yet: ask the file system it will be on
    try:
        name_max = os.pathconf(path, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    size = len(settings.pod_uuid.encode("utf-8"))
    if size > name_max:
        raise ConfigError(f"{ENV_POD_UUID} is {size} bytes long, but a directory name on the file system of "
                          f"{settings.spool_dir!r} can be at most {name_max} bytes: use a shorter pod UUID")
    if not os.path.lexists(settings.pod_dir):
        return
    try:
        fd = open_pod_dir(settings.pod_dir)
    except UnsafePathError as exc:
        raise ConfigError(f"{ENV_SPOOL_DIR}: {exc}") from None
    except OSError:
        return  # as above
    try:
        owner = os.fstat(fd).st_uid
    finally:
        os.close(fd)
    if for_writing and owner != os.geteuid():  # root may read another user's private pod directory, never write
        raise ConfigError(f"{ENV_SPOOL_DIR}: {settings.pod_dir!r} belongs to uid {owner}, not to this user "
                          f"(uid {os.geteuid()}): use another {ENV_POD_UUID} or {ENV_SPOOL_DIR}, or remove it")


def warn_insecure_auth(settings: Settings) -> None:
    """Log one warning when basic auth would send the password in clear text (plain http://)."""
    if settings.username is not None and settings.gateway_url.startswith("http://"):
        logger.warning(
            "%s is plain http://, so the basic-auth password of %r is sent in clear text: anyone who can see the "
            "traffic can read it and push as this user. Use an https:// gateway address (and %s if its "
            "certificate is private)", ENV_GATEWAY_URL, settings.username, ENV_CA_FILE,
        )


def _credentials(env: Mapping[str, str], url: str) -> tuple[str | None, str | None, str | None]:
    username = env.get(ENV_USERNAME) or None
    password = env.get(ENV_PASSWORD) or None
    password_file = env.get(ENV_PASSWORD_FILE) or None
    if password_file and password is None:
        try:
            with open(password_file, encoding="utf-8") as f:
                password = f.read().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"{ENV_PASSWORD_FILE}={password_file!r} cannot be read: {exc.strerror}") from None
    if (username is None) != (password is None):
        raise ConfigError(f"set both {ENV_USERNAME} and {ENV_PASSWORD} (or {ENV_PASSWORD_FILE}) for basic auth, "
                          "or neither")
    ca_file = env.get(ENV_CA_FILE) or None
    if ca_file is not None:
        if not url.startswith("https://"):
            raise ConfigError(f"{ENV_CA_FILE} is set but {ENV_GATEWAY_URL} is not https://")
        if not os.path.isfile(ca_file):
            raise ConfigError(f"{ENV_CA_FILE}={ca_file!r} is not a file")
        ca_file = os.path.abspath(ca_file)
    return username, password, ca_file


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _seconds(value: object, source: str, *, allow_zero: bool = False) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{source}={value!r} is not a number of seconds") from None
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero) or math.isinf(seconds):
        raise ConfigError(f"{source}={value!r} must be a positive, finite number of seconds")
    return seconds


def _bytes(value: object, source: str) -> int:
    try:
        size = int(str(value))
    except ValueError:
        raise ConfigError(f"{source}={value!r} is not a whole number of bytes") from None
    if size < 4096:
        raise ConfigError(f"{source}={value!r} is too small: use at least 4096 bytes")
    return size


def load_settings(
    *,
    pod_uuid: str | None = None,
    gateway_url: str | None = None,
    spool_dir: str | None = None,
    push_interval: float | None = None,
    finish_timeout: float | None = None,
    retry_timeout: float | None = None,
    push_timeout: float | None = None,
    fsync: str | None = None,
    fsync_interval: float | None = None,
    spool_file_bytes: int | None = None,
    history_bytes: int | None = None,
    environ: Mapping[str, str] | None = None,
    for_writing: bool = True,
) -> Settings:
    """Read the settings; keyword arguments win over the environment.

    *for_writing* False (``status``, ``recover``): root may use another user's private pod directory.

    Raises :class:`ConfigError` naming the variable that is missing or wrong.
    """
    env = os.environ if environ is None else environ

    def pick(kwarg: object, name: str, var: str) -> tuple[object, str]:
        if kwarg is not None:
            return kwarg, f"{name}="
        return env.get(var), var

    value, source = pick(pod_uuid, "pod_uuid", ENV_POD_UUID)
    pod = check_pod_uuid(value, source)
    value, source = pick(gateway_url, "gateway_url", ENV_GATEWAY_URL)
    url = normalize_gateway_url(value, source)

    root = resolve_spool_dir(spool_dir, env)

    numbers: dict[str, float] = {}
    for name, kwarg, var, default in (
        ("push_interval", push_interval, ENV_PUSH_INTERVAL, DEFAULT_PUSH_INTERVAL),
        ("finish_timeout", finish_timeout, ENV_FINISH_TIMEOUT, DEFAULT_FINISH_TIMEOUT),
        ("retry_timeout", retry_timeout, ENV_RETRY_TIMEOUT, DEFAULT_RETRY_TIMEOUT),
        ("push_timeout", push_timeout, ENV_PUSH_TIMEOUT, DEFAULT_PUSH_TIMEOUT),
        ("fsync_interval", fsync_interval, ENV_FSYNC_INTERVAL, DEFAULT_FSYNC_INTERVAL),
    ):
        value, source = pick(kwarg, name, var)
        numbers[name] = default if value in (None, "") else _seconds(value, source, allow_zero=name == "finish_timeout")
    sizes: dict[str, int] = {}
    for name, kwarg, var, default in (
        ("spool_file_bytes", spool_file_bytes, ENV_SPOOL_FILE_BYTES, DEFAULT_SPOOL_FILE_BYTES),
        ("history_bytes", history_bytes, ENV_HISTORY_BYTES, DEFAULT_HISTORY_BYTES),
    ):
        value, source = pick(kwarg, name, var)
        sizes[name] = default if value in (None, "") else _bytes(value, source)
    value, source = pick(fsync, "fsync", ENV_FSYNC)
    policy = "never" if value in (None, "") else str(value)
    if policy not in FSYNC_POLICIES:
        raise ConfigError(f"{source}={value!r} is not a durability policy: use one of {', '.join(FSYNC_POLICIES)}")

    username, password, ca_file = _credentials(env, url)
    settings = Settings(
        pod_uuid=pod, gateway_url=url, spool_dir=root, username=username, password=password, ca_file=ca_file,
        fsync=policy, push_interval=numbers["push_interval"], finish_timeout=numbers["finish_timeout"],
        retry_timeout=numbers["retry_timeout"], push_timeout=numbers["push_timeout"],
        fsync_interval=numbers["fsync_interval"], spool_file_bytes=sizes["spool_file_bytes"],
        history_bytes=sizes["history_bytes"],
    )
    # Belt and braces: whatever check_pod_uuid allowed must still land directly
    # under the spool root once symlinks and '..' are resolved.
    if os.path.dirname(os.path.realpath(settings.pod_dir)) != os.path.realpath(root):
        raise ConfigError(f"{ENV_POD_UUID}={pod!r} would place the spool outside {root!r}")
    _check_pod_dir(settings, for_writing)
    return settings
