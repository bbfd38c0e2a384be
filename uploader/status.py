"""What the local spool says about each pod: delivered, pending, alive, last error.

Read-only: it takes no lock and writes nothing, so it is safe beside a running
uploader (whose checkpoints it reads as they are at that moment).
"""
from __future__ import annotations

import datetime
import os
import shlex
from typing import Any

from runai.reporter.spool import END, HEADER, spool_file_names

from .checkpoint import checkpoint_path, load_checkpoint
from .lock import holder_pid
from .tail import BadSpoolError, SpoolTail

__all__ = ["pod_status", "spool_pods", "undelivered_bytes"]

_LOG_NAME = "uploader.log"


def spool_pods(spool_dir: str) -> list[str]:
    """The pods with spool files under *spool_dir*, sorted."""
    try:
        names = os.listdir(spool_dir)
    except OSError:
        return []
    return sorted(n for n in names if spool_file_names(os.path.join(spool_dir, n)))


def pod_status(spool_dir: str, pod_uuid: str, gateway_url: str | None = None) -> dict[str, Any]:
    """The status of one pod, as documented in docs/operations.md (``status --json``)."""
    pod_dir = os.path.join(spool_dir, pod_uuid)
    files = [_file_status(os.path.join(pod_dir, n)) for n in spool_file_names(pod_dir)]
    pending = sum(f["reports_pending"] for f in files)
    delivered_at = [f["last_delivered"] for f in files if f["last_delivered"]]
    return {
        "pod_uuid": pod_uuid,
        "pod_dir": pod_dir,
        "uploader_pid": holder_pid(pod_dir) if os.path.isdir(pod_dir) else None,
        "writers_alive": sum(1 for f in files if f["writer_alive"]),
        "reports_delivered": sum(f["reports_delivered"] for f in files),
        "reports_pending": pending,
        "bytes_delivered": sum(f["bytes_delivered"] for f in files),
        "bytes_pending": sum(f["bytes_pending"] for f in files),
        "last_delivered": max(delivered_at) if delivered_at else None,
        "last_error": _last_error(os.path.join(pod_dir, _LOG_NAME)),
        "recover_command": shlex.join([
            "runai-uploader", "recover", "--spool-dir", spool_dir, "--pod-uuid", pod_uuid,
            "--gateway", gateway_url or "HOST:PORT",
        ]) if pending else None,  # fmt: skip
        "spool_files": files,
    }


def undelivered_bytes(pod_dir: str) -> int:
    """Bytes of the pod's spool files after their checkpoints: cheap (no record is read)."""
    total = 0
    for name in spool_file_names(pod_dir):
        try:
            tail = SpoolTail(os.path.join(pod_dir, name))
        except OSError:
            continue
        try:
            size = tail.size()
            delivered = _resume_at_checkpoint(tail, size) if tail.read_header() else None
            total += size - (delivered or 0)
        except BadSpoolError:
            pass  # never delivered, never counted
        finally:
            tail.close()
    return total


def _resume_at_checkpoint(tail: SpoolTail, size: int) -> int | None:
    """Move *tail* (its header read) to its file's valid checkpoint; the offset, or None if it has none."""
    ckpt = load_checkpoint(tail.path, tail.spool_id, size)
    if ckpt is None or not tail.at_line_start(ckpt.offset):
        return None
    tail.resume(ckpt.offset, ckpt.records, ckpt.last_seq, ckpt.ended)
    return ckpt.offset


def _file_status(path: str) -> dict[str, Any]:
    status: dict[str, Any] = {
        "path": path, "writer_pid": _writer_pid(path), "writer_alive": False, "finished": False, "size": 0,
        "reports_delivered": 0, "reports_pending": 0, "bytes_delivered": 0, "bytes_pending": 0,
        "last_delivered": None, "error": None,
    }  # fmt: skip
    try:
        tail = SpoolTail(path)
    except OSError as exc:
        status["error"] = str(exc)
        return status
    try:
        size = status["size"] = tail.size()
        if not tail.read_header():
            status["error"] = "no complete header yet"
            return status
        status["writer_alive"] = tail.writer_alive()
        if _resume_at_checkpoint(tail, size) is not None:
            status["reports_delivered"] = tail.records
            status["bytes_delivered"] = tail.offset
            mtime = os.stat(checkpoint_path(path)).st_mtime
            status["last_delivered"] = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).isoformat()
        delivered_offset = tail.offset  # after the checkpoint, or after the header
        pending = 0
        while True:  # count what no checkpoint covers yet (complete, valid reports only)
            before = tail.offset
            pending += sum(1 for r in tail.read() if r.kind not in (END, HEADER))
            if tail.offset == before:
                break
        status["reports_pending"] = pending
        status["bytes_pending"] = tail.offset - delivered_offset
        status["finished"] = tail.ended
    except BadSpoolError as exc:
        status["error"] = str(exc)
    finally:
        tail.close()
    return status


def _writer_pid(path: str) -> int | None:
    match = os.path.basename(path)[1:].split("-", 1)[0]  # w<pid>-<id>.jsonl
    return int(match) if match.isdigit() else None


def _last_error(log_path: str) -> str | None:
    try:
        with open(log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 64 * 1024))
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if " ERROR " in line or " WARNING " in line:
            return line
    return None
