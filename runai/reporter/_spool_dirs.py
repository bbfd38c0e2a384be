"""Where the spool lives, checked: its root (the default, or the one set) and a pod's directory in it.

Another user must not be able to read or steer the reports: a root others can write to, a symlink of theirs on
its path, a pod directory that is not this user's, or one holding another pod's spool, is a ConfigError naming
the fix (see safefs).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping

from ._validate import ENV_POD_DIR, ENV_POD_UUID, ENV_SPOOL_DIR, ConfigError
from .safefs import UnsafePathError, check_path, open_pod_dir, open_root
from .spool.delivery import foreign_spool

__all__ = [
    "check_own_pod_dir",
    "check_pod_dir",
    "default_spool_dir",
    "parse_pod_dir",
    "parse_spool_dir",
    "resolve_spool_dir",
]

# How to fix a spool directory that other users could write to.
_PRIVATE_SPOOL_HELP = (
    f"set {ENV_SPOOL_DIR} to a directory that only you can write. On a volume shared with other users or "
    "groups (a Kubernetes volume with fsGroup is root-owned and group-writable), have the job create a private "
    f"subdirectory first, for example `mkdir -m 0700 -p /VOLUME/runai-spool-$(id -u)`, and set {ENV_SPOOL_DIR} "
    'to it (see docs/operations.md, "Security: who may use the spool directory")'
)


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
        raise ConfigError(
            f"{ENV_SPOOL_DIR}: {exc}, so another user could read or steer the reports: {_PRIVATE_SPOOL_HELP}"
        ) from None
    except OSError:
        pass  # not usable at all: the writer warns and counts the lost reports, as for a full disk


def check_pod_dir(spool_dir: str, pod_uuid: str, for_writing: bool = True) -> None:
    """Refuse a pod name too long for the file system, and an existing pod directory that is not private."""
    pod_dir = os.path.join(spool_dir, pod_uuid)
    path = spool_dir
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)  # the spool root may not exist yet: ask the file system it will be on
    try:
        name_max = os.pathconf(path, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    size = len(pod_uuid.encode("utf-8"))
    if size > name_max:
        raise ConfigError(
            f"{ENV_POD_UUID} is {size} bytes long, but a directory name on the file system of "
            f"{spool_dir!r} can be at most {name_max} bytes: use a shorter pod UUID"
        )
    _check_private(pod_dir, pod_uuid, for_writing, ENV_SPOOL_DIR)


def check_own_pod_dir(pod_dir: str, pod_uuid: str, for_writing: bool = True) -> None:
    """Refuse the pod directory given directly (``reporterPodDir``) unless it is private to this user and holds
    no other pod's spool: checked as one under the spool root is, but its name need not be the pod's."""
    _check_private(pod_dir, pod_uuid, for_writing, ENV_POD_DIR)


def _check_private(pod_dir: str, pod_uuid: str, for_writing: bool, variable: str) -> None:
    """Refuse an existing *pod_dir* that is not this user's private directory, or holds another pod's spool."""
    if not os.path.lexists(pod_dir):
        return
    try:
        fd = open_pod_dir(pod_dir)
    except UnsafePathError as exc:
        raise ConfigError(f"{variable}: {exc}{_own_dir_help(variable)}") from None
    except PermissionError:
        # Not this user's to open: a kubelet's subPath directory (root's, 0750), or another uid's. Writing there
        # would lose every report; the writer's warnings alone would not say why.
        if for_writing:
            raise ConfigError(_not_openable(pod_dir, variable)) from None
        return
    except OSError:
        return  # not usable at all: the writer warns and counts the lost reports, as for a full disk
    try:
        owner = os.fstat(fd).st_uid
    finally:
        os.close(fd)
    if for_writing and owner != os.geteuid():  # root may read another user's private pod directory, never write
        raise ConfigError(
            f"{variable}: {pod_dir!r} belongs to uid {owner}, not to this user "
            f"(uid {os.geteuid()}): use another {ENV_POD_UUID} or {variable}, or remove it{_own_dir_help(variable)}"
        )
    # Ours, but made for another pod (a job that squatted this name, or a copy): what we wrote there would
    # be refused with that pod's files, or mixed with them. A restart of this pod finds only its own headers.
    foreign = foreign_spool(pod_dir, pod_uuid) if for_writing else None
    if foreign is not None:
        raise ConfigError(
            f"{variable}: {pod_dir!r} is not this pod's own directory ({foreign}): check "
            f"{ENV_POD_UUID} is this pod's UUID, and move that file away or use another {variable}"
        )


def _not_openable(pod_dir: str, variable: str) -> str:
    try:
        info = os.lstat(pod_dir)
        whose = f"uid {info.st_uid}'s, mode {info.st_mode & 0o7777:04o}"
    except OSError as exc:
        whose = str(exc)
    return (
        f"{variable}: this user (uid {os.geteuid()}) cannot open {pod_dir!r} ({whose}): a pod directory must be "
        f"this user's, mode 0700: use another {ENV_POD_UUID} or {variable}, or have it made so{_own_dir_help(variable)}"
    )


def _own_dir_help(variable: str) -> str:
    # A kubelet makes a missing subPath directory itself, as root with mode 0750: the job cannot use that one.
    if variable != ENV_POD_DIR:
        return ""
    return (
        ". In Kubernetes, an init container running as root must make it before the job starts, owned by the "
        "job's uid with mode 0700: `install -d -m 0700 -o UID -g GID /spool/$(POD_UID)` "
        "(see deploy/kubernetes/example-job/job.yaml)"
    )


def parse_pod_dir(value: Any, source: str) -> str:
    """The pod directory given directly: absolute, and never a file system's root (it needs a parent)."""
    path = os.path.abspath(os.path.expanduser(str(value)))
    if os.path.dirname(path) == path:
        raise ConfigError(f"{source}={value!r} is a file system's root: name the pod's own directory")
    return path


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def parse_spool_dir(value: Any, source: str) -> str:
    return resolve_spool_dir(value)
