"""Checkpoints: how far into one spool file the gateway has acknowledged.

A checkpoint sits beside its spool file (``w123-ab12cd34.jsonl`` ->
``w123-ab12cd34.ckpt``) and is the single commit point of delivery: it is
written only after the gateway answered 2xx, atomically (temp file, fsync,
rename), so a reader sees the old checkpoint or the new one, never a mix.
Both go through :mod:`runai.reporter.safefs`: no symlink is ever followed.

Loading is tolerant: a checkpoint that is missing, unreadable, for another
spool file, or pointing past the end of the file means "replay from the
start". Replaying is harmless because a push replaces values on the gateway;
skipping would lose data.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

from ..safefs import open_at, open_in_pod_dir, open_pod_dir
from .names import checkpoint_path

__all__ = ["Checkpoint", "load_checkpoint", "store_checkpoint"]

logger = logging.getLogger(__name__)

_MAX_BYTES = 4096  # a checkpoint is about 150 bytes; read no more than this of whatever is there
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL  # a temp file is always new: never one planted before


@dataclass(frozen=True)
class Checkpoint:
    spool_id: str  # the header id of the spool file this applies to
    offset: int  # bytes of the spool file delivered (always at a line boundary)
    records: int  # reports delivered from it (header and end marker excluded)
    last_seq: int  # the sequence number of the last line covered
    ended: bool = False  # the writer's end-of-stream marker is covered
    rejected: int = 0  # values the gateway refused with 400 (logged by name in uploader.log)


def load_checkpoint(spool_path: str, spool_id: str, spool_size: int | None = None) -> Checkpoint | None:
    """The checkpoint of *spool_path*, or None to replay it from the start."""
    path = checkpoint_path(spool_path)
    try:
        with open(open_in_pod_dir(path, os.O_RDONLY), "rb") as f:
            obj = json.loads(f.read(_MAX_BYTES))
        ckpt = Checkpoint(
            spool_id=str(obj["spool_id"]),
            offset=_count(obj["offset"]),
            records=_count(obj["records"]),
            last_seq=_count(obj["last_seq"]),
            ended=bool(obj.get("ended", False)),
            rejected=_count(obj.get("rejected", 0)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        logger.warning("checkpoint %s is unreadable (%s); replaying %s from the start", path, exc, spool_path)
        return None
    if ckpt.spool_id != spool_id:
        logger.warning("checkpoint %s belongs to another spool file; replaying %s from the start", path, spool_path)
        return None
    if ckpt.offset < 0 or (spool_size is not None and ckpt.offset > spool_size):
        logger.warning("checkpoint %s points past the end of %s; replaying it from the start", path, spool_path)
        return None
    return ckpt


def _count(value: object) -> int:
    """*value* if it is a JSON integer; ValueError for anything else (a float such as 1e999 too)."""
    if type(value) is not int:
        raise ValueError(f"{value!r} is not an integer")
    return value


def store_checkpoint(spool_path: str, ckpt: Checkpoint) -> None:
    """Atomically replace the checkpoint of *spool_path* (raises OSError)."""
    pod_dir, name = os.path.split(checkpoint_path(spool_path))
    tmp = f".{name}.tmp"
    data = json.dumps(asdict(ckpt), separators=(",", ":")).encode()
    dir_fd = open_pod_dir(pod_dir)
    try:
        try:
            fd = open_at(dir_fd, tmp, _CREATE, where=pod_dir)
        except FileExistsError:  # left by a crash mid-store (or planted): unlink the name, never follow it
            os.unlink(tmp, dir_fd=dir_fd)
            fd = open_at(dir_fd, tmp, _CREATE, where=pod_dir)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        # rename(2) replaces the name itself: a symlink planted there is replaced, not followed.
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    finally:
        os.close(dir_fd)

