"""What the local spool says about each pod: delivered, pending, alive, last error.

Read-only: it takes no lock and writes nothing, so it is safe beside a running
uploader (whose checkpoints it reads as they are at that moment).
"""

from __future__ import annotations

import datetime
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from runai.reporter.settings import recover_command
from runai.reporter.spool import (
    GATEWAY,
    PARAMETER,
    REMOTE_WRITE,
    SINKS,
    BadSpoolError,
    checkpoint_path,
    decode,
    delivery_state,
    last_error,
    last_refusal,
    load_progress,
    open_spool,
    read_tail,
    receiver_kinds,
    spool_file_names,
    writer_pid,
)

from ..delivery.pending import lock_refusal, refusal
from ..sinks import RECEIVERS

__all__ = ["FileStatus", "PodStatus", "clock_skew", "pod_status", "spool_pods"]

# A remote-write refusal that says the sample is older than the receiver takes (Prometheus 2.42: 500 "too old
# sample" with an out-of-order window, 400 "out of bounds" without), as the uploader logs it.
_TOO_OLD = ("too old", "out of bounds")
_RECENT_S = 3600.0  # a spool whose newest report is younger than this is recent: its clock is not behind
_TAIL_BYTES = 64 * 1024  # read from the end of each spool file


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


@dataclass
class FileStatus:
    """One spool file, as ``status --json`` shows it (docs/operations.md): the fields in that order."""

    path: str
    writer_pid: int | None
    writer_alive: bool = False
    finished: bool = False  # its end marker was read
    size: int = 0
    reports_delivered: int = 0
    reports_pending: int = 0  # complete, valid reports no checkpoint covers yet
    bytes_delivered: int = 0
    bytes_pending: int = 0
    last_delivered: str | None = None  # when its checkpoint was written (ISO 8601, UTC)
    error: str | None = None  # why it could not be read
    same_ms: int = 0  # judged for remote write: reports that share a millisecond with a later one of their name


@dataclass
class PodStatus:
    """One pod, as ``status --json`` shows it (docs/operations.md): the fields in that order."""

    pod_uuid: str
    pod_dir: str
    refused: str | None  # why the directory cannot be used: its reports can be neither counted nor sent
    uploader_pid: int | None  # the live uploader holding the pod's lock (0 if it wrote no pid)
    writers_alive: int
    reports_delivered: int
    reports_pending: int
    bytes_delivered: int
    bytes_pending: int
    last_delivered: str | None
    last_error: str | None  # the last ERROR or WARNING line of the pod's log
    recover_command: str | None  # only while reports are pending
    spool_files: list[FileStatus] = field(default_factory=list)
    clock_skew: str | None = None  # a warning: recent samples refused as too old (see clock_skew())
    receivers: list[str] | None = None  # the kinds of receiver its job named ([]: kept locally); None: not said
    same_ms: int = 0  # reports a remote-write receiver keeps as one sample with a later one (see FileStatus)

    def to_json(self) -> dict[str, Any]:
        """The object ``status --json`` prints for this pod."""
        return asdict(self)


def pod_status(
    spool_dir: str,
    pod_uuid: str,
    gateway_url: str | None = None,
    *,
    sinks: tuple[str, ...] = (GATEWAY,),
    found: bool = False,
    remote_write_url: str | None = None,
) -> PodStatus:
    """The status of one pod, as documented in docs/operations.md (``status --json``).

    Delivered means delivered to every one of *sinks*; pending, not yet to one of them. With *found*, each
    file is judged for *sinks* and every sink its checkpoint has progress for (the gateway when that is none).
    """
    pod_dir = os.path.join(spool_dir, pod_uuid)
    refused, uploader_pid = lock_refusal(pod_dir)
    files = [_file_status(os.path.join(pod_dir, n), sinks, found) for n in spool_file_names(pod_dir)]
    pending = sum(f.reports_pending for f in files)
    delivered_at = [f.last_delivered for f in files if f.last_delivered]
    return PodStatus(
        pod_uuid=pod_uuid,
        pod_dir=pod_dir,
        refused=refused,
        uploader_pid=uploader_pid,
        writers_alive=sum(1 for f in files if f.writer_alive),
        reports_delivered=sum(f.reports_delivered for f in files),
        reports_pending=pending,
        bytes_delivered=sum(f.bytes_delivered for f in files),
        bytes_pending=sum(f.bytes_pending for f in files),
        last_delivered=max(delivered_at) if delivered_at else None,
        last_error=last_error(pod_dir),
        recover_command=recover_command(
            spool_dir, pod_uuid, gateway_url or (None if remote_write_url else "HOST:PORT"), remote_write_url
        )
        if pending
        else None,
        spool_files=files,
        clock_skew=clock_skew(pod_dir, files) if not refused else None,
        receivers=None if refused or (kinds := receiver_kinds(pod_dir)) is None else sorted(kinds),
        same_ms=sum(f.same_ms for f in files),
    )


def clock_skew(pod_dir: str, files: list[FileStatus], now: float | None = None) -> str | None:
    """A warning when the remote-write receiver refused samples as too old while the spool's are recent; else None.

    A sample a few seconds old is refused as too old only when the receiver's
    newest samples are far ahead of it: some pod's clock is ahead and moved the
    receiver's head forward (docs/design/scaling.md), and every pod with a right clock
    is refused until real time catches up. Nothing is read but the last 64 KiB
    of the pod's log and of each spool file.

    The refusal's own time is not checked: an uploader logs a name's refusal
    only once, so a long job still refused hours later has only that old line.
    """
    refused = last_refusal(pod_dir, RECEIVERS[REMOTE_WRITE], _TOO_OLD)
    if refused is None:  # the usual case: no spool file need be read
        return None
    newest = max((ts for ts in map(_newest_ts, (f.path for f in files)) if ts is not None), default=None)
    now = time.time() if now is None else now
    if newest is None or now - newest > _RECENT_S:
        return None
    return (
        f"the remote-write receiver refused samples as too old, yet this spool's newest report is only "
        f"{max(0, round(now - newest))} s old: a clock ahead of real time (this pod's earlier, or another "
        f"pod's) has moved the receiver's newest time forward; synchronise the pods' clocks (NTP). "
        f"The uploader logged: {refused}"
    )


def _newest_ts(path: str) -> float | None:
    """The time of the last readable record of the spool file *path* (s since the epoch), or None."""
    try:
        lines = read_tail(path, _TAIL_BYTES).splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return decode(line).ts
        except ValueError:
            continue  # a torn last line, or the first one, cut by the read
    return None


def _file_status(path: str, sinks: tuple[str, ...], found: bool) -> FileStatus:
    status = FileStatus(path, writer_pid(os.path.basename(path)))
    try:
        opened = open_spool(path, resume=False)
    except BadSpoolError as exc:
        status.size, status.error = _size(path), str(exc)
        return status
    except OSError as exc:
        status.error = str(exc)
        return status
    if opened is None:
        status.size, status.error = _size(path), "no complete header yet"
        return status
    with opened.tail as tail:
        status.size = tail.size()
        status.writer_alive = tail.writer_alive()
        if found:
            progress = load_progress(path, tail.spool_id, status.size)
            sinks = tuple(name for name in SINKS if name in sinks or name in progress) or (GATEWAY,)
        state = delivery_state(path, tail.spool_id, status.size, reader=tail, sinks=sinks)
        if state.checkpoint is not None:
            status.reports_delivered = state.records
            status.bytes_delivered = state.bytes_delivered
            # The file's last store, by whichever sink: one file holds every sink's progress.
            try:  # deleted meanwhile by a running uploader's retention: no time to show
                mtime = os.stat(checkpoint_path(path), follow_symlinks=False).st_mtime
            except OSError:
                pass
            else:
                status.last_delivered = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).isoformat()
        status.reports_pending, status.bytes_pending = state.pending, state.pending_bytes
        status.finished = tail.ended
    if REMOTE_WRITE in sinks:
        status.same_ms = same_millisecond(path)
    return status


def same_millisecond(path: str) -> int:
    """The reports of the spool file *path* in the same millisecond as the next report of their name.

    A remote-write receiver keeps one sample per series and millisecond, so the
    uploader sends each such run as one sample, its last value. Reports of one
    name come in time order, so one value per name is held, not one per report.
    """
    try:
        opened = open_spool(path, resume=False)
    except (BadSpoolError, OSError):
        return 0
    if opened is None:
        return 0
    same = 0
    last: dict[tuple[str, str, object], int] = {}
    with opened.tail as tail:
        for record in tail.read_all():
            # A parameter's series is named by its value too; a metric's by its name alone.
            key = (record.kind, record.name, record.value if record.kind == PARAMETER else None)
            ms = round(record.ts * 1e6) // 1000  # as the remote-write sink stamps it
            same += last.get(key) == ms
            last[key] = ms
    return same


def _size(path: str) -> int:
    """The size of a spool file that could be opened but not read as one (as it is now)."""
    try:
        return os.stat(path, follow_symlinks=False).st_size
    except OSError:
        return 0
