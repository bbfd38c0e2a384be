"""What the local spool says about each pod: delivered, pending, alive, last error.

Read-only: it takes no lock and writes nothing, so it is safe beside a running
uploader (whose checkpoints it reads as they are at that moment).
"""
from __future__ import annotations

import datetime
import os
import stat
from typing import Any

from runai.reporter.settings import recover_command
from runai.reporter.checkpoint import checkpoint_path
from runai.reporter.lock import holder_pid
from runai.reporter.safefs import UnsafePathError, open_in_pod_dir, open_pod_dir
from runai.reporter.spool import LOG_NAME, spool_file_names, writer_pid

from .tail import BadSpoolError, SpoolTail

__all__ = ["pod_status", "refusal", "spool_pods"]


def refusal(pod_dir: str) -> str | None:
    """Why the pod directory *pod_dir* cannot be used (see runai.reporter.safefs), or None."""
    try:
        os.close(open_pod_dir(pod_dir))
    except UnsafePathError as exc:
        return str(exc)
    except OSError:
        pass  # missing or unreadable: nothing to show, as before
    return None


def spool_pods(spool_dir: str) -> list[str]:
    """The pods with spool files under *spool_dir*, and the pod directories refused as unsafe, sorted.

    A refused one is listed so that its pending reports are not hidden (say, a
    directory the kubelet made group-writable); another user's private pod
    directory is not: it is theirs, not a problem here.
    """
    try:
        names = os.listdir(spool_dir)
    except OSError:
        return []
    return sorted(n for n in names if spool_file_names(os.path.join(spool_dir, n)) or _refused_here(spool_dir, n))


def _refused_here(spool_dir: str, name: str) -> bool:
    try:
        info = os.lstat(os.path.join(spool_dir, name))
    except OSError:
        return False
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
        return False
    if stat.S_ISDIR(info.st_mode) and info.st_uid != os.geteuid() and not info.st_mode & 0o077:
        return False  # another user's own private pod: theirs to look after
    return refusal(os.path.join(spool_dir, name)) is not None


def pod_status(spool_dir: str, pod_uuid: str, gateway_url: str | None = None) -> dict[str, Any]:
    """The status of one pod, as documented in docs/operations.md (``status --json``)."""
    pod_dir = os.path.join(spool_dir, pod_uuid)
    refused = refusal(pod_dir)
    files = [_file_status(os.path.join(pod_dir, n)) for n in spool_file_names(pod_dir)]
    pending = sum(f["reports_pending"] for f in files)
    delivered_at = [f["last_delivered"] for f in files if f["last_delivered"]]
    return {
        "pod_uuid": pod_uuid,
        "pod_dir": pod_dir,
        "refused": refused,  # why the directory cannot be used: its reports can be neither counted nor sent
        "uploader_pid": holder_pid(pod_dir) if os.path.isdir(pod_dir) and not refused else None,
        "writers_alive": sum(1 for f in files if f["writer_alive"]),
        "reports_delivered": sum(f["reports_delivered"] for f in files),
        "reports_pending": pending,
        "bytes_delivered": sum(f["bytes_delivered"] for f in files),
        "bytes_pending": sum(f["bytes_pending"] for f in files),
        "last_delivered": max(delivered_at) if delivered_at else None,
        "last_error": _last_error(os.path.join(pod_dir, LOG_NAME)),
        "recover_command": recover_command(spool_dir, pod_uuid, gateway_url or "HOST:PORT") if pending else None,
        "spool_files": files,
    }


def _file_status(path: str) -> dict[str, Any]:
    status: dict[str, Any] = {
        "path": path, "writer_pid": writer_pid(os.path.basename(path)), "writer_alive": False, "finished": False,
        "size": 0, "reports_delivered": 0, "reports_pending": 0, "bytes_delivered": 0, "bytes_pending": 0,
        "last_delivered": None, "error": None,
    }  # fmt: skip
    try:
        tail = SpoolTail(path)
    except OSError as exc:
        status["error"] = str(exc)
        return status
    with tail:
        try:
            status["size"] = tail.size()
            if not tail.read_header():
                status["error"] = "no complete header yet"
                return status
        except BadSpoolError as exc:
            status["error"] = str(exc)
            return status
        status["writer_alive"] = tail.writer_alive()
        if tail.resume_at_checkpoint() is not None:
            status["reports_delivered"] = tail.records
            status["bytes_delivered"] = tail.offset
            mtime = os.stat(checkpoint_path(path), follow_symlinks=False).st_mtime
            status["last_delivered"] = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).isoformat()
        delivered_offset = tail.offset  # after the checkpoint, or after the header
        # What no checkpoint covers yet: complete, valid reports only.
        status["reports_pending"] = sum(1 for _ in tail.read_all())
        status["bytes_pending"] = tail.offset - delivered_offset
        status["finished"] = tail.ended
    return status


def _last_error(log_path: str) -> str | None:
    try:
        with open(open_in_pod_dir(log_path, os.O_RDONLY), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 64 * 1024))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if " ERROR " in line or " WARNING " in line:
            return line
    return None
