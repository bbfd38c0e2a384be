"""Replacing a small file of a pod directory atomically: temp file, fsync, rename; no symlink followed.

A reader sees the old file or the new one, never a mix. As root, the new file gets the pod directory's owner.
Used for checkpoints (:mod:`.checkpoint`), the single commit point of delivery.
"""

from __future__ import annotations

import errno
import logging
import os

from ..safefs import open_at, open_pod_dir
from ._fds import unlink_quietly

__all__ = ["replace_file"]

logger = logging.getLogger(__name__)

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL  # a temp file is always new: never one planted before
_chown_warned = False  # root without CAP_CHOWN is warned of once


def replace_file(path: str, tmp: str, data: bytes) -> None:
    """Atomically make *data* the content of *path*, through the temp file *tmp* beside it (raises OSError)."""
    pod_dir, name = os.path.split(path)
    dir_fd = open_pod_dir(pod_dir)
    try:
        try:
            fd = open_at(dir_fd, tmp, _CREATE, where=pod_dir)
        except FileExistsError:  # left by a crash mid-store (or planted): unlink the name, never follow it
            os.unlink(tmp, dir_fd=dir_fd)
            fd = open_at(dir_fd, tmp, _CREATE, where=pod_dir)
        try:
            try:
                _owned_like_the_pod_dir(fd, dir_fd)
                if os.write(fd, data) != len(data):  # a full disk: never rename a cut file into place
                    raise OSError(errno.ENOSPC, f"short write of {tmp}")
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename(2) replaces the name itself: a symlink planted there is replaced, not followed.
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            unlink_quietly(tmp, dir_fd)  # best effort: the next store removes it anyway
            raise
    finally:
        os.close(dir_fd)


def _owned_like_the_pod_dir(fd: int, dir_fd: int) -> None:
    """As root (the node agent), give the new file (a checkpoint) the pod directory's owner.

    Else the job's own uploader, run as the job's user, could not read it
    (mode 0600) and would replay the whole file.
    """
    if os.geteuid() != 0:
        return
    owner = os.fstat(dir_fd)
    if owner.st_uid != 0 or owner.st_gid != 0:
        try:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        except PermissionError as exc:  # root without CAP_CHOWN: the checkpoint still counts
            global _chown_warned
            log = logger.debug if _chown_warned else logger.warning
            _chown_warned = True
            log(
                "cannot give checkpoints to the pod directory's owner, uid %d (%s: grant CAP_CHOWN); that "
                "user's own uploader will not read them and will resend what they cover",
                owner.st_uid,
                exc,
            )
