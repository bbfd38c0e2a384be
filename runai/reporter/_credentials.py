"""Credentials of the sinks: basic auth, a password or bearer token file, a CA file, checked together.

Private to :mod:`runai.reporter.settings`. Read from the environment only, so
that secrets never travel on a command line; a file named by mistake (a FIFO,
a device) is refused, never waited on.
"""

from __future__ import annotations

import os
import stat
from typing import Mapping, NamedTuple

from ._validate import (
    ENV_CA_FILE,
    ENV_GATEWAY_URL,
    ENV_PASSWORD,
    ENV_PASSWORD_FILE,
    ENV_REMOTE_WRITE_URL,
    ENV_RW_BEARER_TOKEN_FILE,
    ENV_RW_CA_FILE,
    ENV_RW_PASSWORD,
    ENV_RW_PASSWORD_FILE,
    ENV_RW_USERNAME,
    ENV_USERNAME,
    ConfigError,
)

__all__ = ["Credentials", "check_credentials", "check_remote_write_credentials", "read_secret_file"]

# Each sink's variables, in the order _credentials names them: its URL, user, password, password file, CA file.
_GATEWAY_NAMES = (ENV_GATEWAY_URL, ENV_USERNAME, ENV_PASSWORD, ENV_PASSWORD_FILE, ENV_CA_FILE)
_REMOTE_WRITE_NAMES = (ENV_REMOTE_WRITE_URL, ENV_RW_USERNAME, ENV_RW_PASSWORD, ENV_RW_PASSWORD_FILE, ENV_RW_CA_FILE)
_MAX_SECRET_CHARS = 64 << 10  # a password or token far longer is a file named by mistake (a JWT is a few KiB)


class Credentials(NamedTuple):
    """One sink's URL and credentials: as set, or as checked (the password read from its file, the CA file absolute)."""

    url: str | None
    username: str | None
    password: str | None
    ca_file: str | None


def check_credentials(env: Mapping[str, str], given: Credentials) -> Credentials:
    """Basic auth and the CA file, checked together: the password may come from a file, and both need the URL."""
    return _credentials(env, given, _GATEWAY_NAMES)


def check_remote_write_credentials(env: Mapping[str, str], given: Credentials, token_file: str | None) -> Credentials:
    """The remote-write sink's basic auth, bearer token file and CA file, checked as the gateway's are."""
    if token_file is not None:
        if given.username is not None:
            raise ConfigError(f"set {ENV_RW_USERNAME} or {ENV_RW_BEARER_TOKEN_FILE}, not both")
        if not os.path.isfile(token_file):
            raise ConfigError(f"{ENV_RW_BEARER_TOKEN_FILE}={token_file!r} is not a file")
    return _credentials(env, given, _REMOTE_WRITE_NAMES)


def _credentials(env: Mapping[str, str], given: Credentials, names: tuple[str, ...]) -> Credentials:
    url, username, password, ca_file = given
    env_url, env_user, env_password, env_password_file, env_ca = names
    password_file = env.get(env_password_file) or None
    if password_file and password is None:
        password = read_secret_file(password_file, env_password_file).rstrip("\r\n")
    if (username is None) != (password is None):
        raise ConfigError(f"set both {env_user} and {env_password} (or {env_password_file}) for basic auth, or neither")
    if ca_file is not None:
        if url is None or not url.lower().startswith("https://"):
            raise ConfigError(f"{env_ca} is set but {env_url} is not https://")
        if not os.path.isfile(ca_file):
            raise ConfigError(f"{env_ca}={ca_file!r} is not a file")
        ca_file = os.path.abspath(ca_file)
    return Credentials(url, username, password, ca_file)


def read_secret_file(path: str, what: str) -> str:
    """The text of the secret file *path* (named *what* in messages), or ConfigError saying what is wrong.

    O_NONBLOCK: a FIFO or a device named by mistake (or put in the file's place since) is refused, never
    waited on; and at most _MAX_SECRET_CHARS are read.
    """
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), encoding="utf-8") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"{what}={path!r} is not a file")
            text = f.read(_MAX_SECRET_CHARS + 1)
    except OSError as exc:
        raise ConfigError(f"{what}={path!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what}={path!r} is not UTF-8 text") from None
    if len(text) > _MAX_SECRET_CHARS:
        raise ConfigError(f"{what}={path!r} is longer than {_MAX_SECRET_CHARS} characters: is it the right file?")
    return text
