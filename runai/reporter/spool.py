"""The on-disk spool: its record format and its writer.

This module is the one place that knows what a spool line looks like: the
training process writes with :class:`SpoolWriter`, the uploader reads with
:func:`decode`. The format is documented in ``docs/spool-format.md``.

Every report becomes one JSON line, appended with a single ``os.write`` on an
``O_APPEND`` descriptor with no user-space buffer: once ``os.write`` returns the
line is in the kernel's page cache and survives a SIGKILL of the job.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import secrets
import socket
import threading
import time
from typing import NamedTuple, Union

__all__ = [
    "FORMAT_VERSION",
    "SPOOL_SUFFIX",
    "Record",
    "SpoolWriter",
    "decode",
    "encode_metric",
    "encode_parameter",
    "is_spool_file",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPOOL_SUFFIX = ".jsonl"

HEADER = "header"
METRIC = "metric"
PARAMETER = "parameter"
END = "end"

# JSON has no NaN or infinity, so non-finite metric values travel as these
# strings (the spellings Prometheus' text format uses) and stay valid JSON.
_NONFINITE_TO_JSON = {"nan": '"NaN"', "inf": '"+Inf"', "-inf": '"-Inf"'}
_NONFINITE_FROM_JSON = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}

# Names are checked against [a-zA-Z_][a-zA-Z0-9_]* before they get here, so
# they need no JSON escaping and a format string is safe (and ~3x faster than
# json.dumps).
_METRIC_LINE = '{"seq":%d,"ts":%.6f,"kind":"metric","name":"%s","value":%s}\n'
_PARAMETER_LINE = '{"seq":%d,"ts":%.6f,"kind":"parameter","name":"%s","value":%s}\n'
_END_LINE = '{"seq":%d,"ts":%.6f,"kind":"end"}\n'

Value = Union[float, str, None]


class Record(NamedTuple):
    """One decoded spool line."""

    seq: int
    ts: float
    kind: str
    name: str = ""
    value: Value = None
    spool_id: str = ""


def is_spool_file(filename: str) -> bool:
    """True for a finished spool file name (temp files start with a dot)."""
    return filename.endswith(SPOOL_SUFFIX) and not filename.startswith(".")


def encode_metric(seq: int, ts: float, name: str, value: float) -> bytes:
    text = repr(value) if math.isfinite(value) else _NONFINITE_TO_JSON[repr(value)]
    return (_METRIC_LINE % (seq, ts, name, text)).encode()


def encode_parameter(seq: int, ts: float, name: str, value: str) -> bytes:
    return (_PARAMETER_LINE % (seq, ts, name, json.dumps(value))).encode()


def encode_end(seq: int, ts: float) -> bytes:
    return (_END_LINE % (seq, ts)).encode()


def encode_header(spool_id: str, pod_uuid: str, ts: float) -> bytes:
    header = {
        "seq": 0,
        "ts": round(ts, 6),
        "kind": HEADER,
        "version": FORMAT_VERSION,
        "spool_id": spool_id,
        "pod_uuid": pod_uuid,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    return (json.dumps(header, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> Record:
    """Decode one line (without its newline); raise ValueError if it is not a valid record."""
    try:
        obj = json.loads(line)
        seq, ts, kind = obj["seq"], obj["ts"], obj["kind"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a spool record: {exc}") from None
    if type(seq) is not int or type(ts) not in (int, float):
        raise ValueError("not a spool record: bad seq or ts")
    if kind == METRIC:
        name, value = obj.get("name"), obj.get("value")
        if type(value) is str:
            value = _NONFINITE_FROM_JSON.get(value)
        elif type(value) is int:
            value = float(value)
        if not isinstance(name, str) or type(value) is not float:
            raise ValueError("metric record without a name or a numeric value")
        return Record(seq, ts, kind, name, value)
    if kind == PARAMETER:
        name, value = obj.get("name"), obj.get("value")
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError("parameter record without a name or a string value")
        return Record(seq, ts, kind, name, value)
    if kind == END:
        return Record(seq, ts, kind)
    if kind == HEADER:
        spool_id, version = obj.get("spool_id"), obj.get("version")
        if version != FORMAT_VERSION:
            raise ValueError(f"spool format version {version!r} is not supported (this reader knows {FORMAT_VERSION})")
        if not isinstance(spool_id, str) or not spool_id:
            raise ValueError("header record without a spool_id")
        return Record(seq, ts, kind, spool_id=spool_id)
    raise ValueError(f"unknown record kind {kind!r}")


class SpoolWriter:
    """Appends records to this process's own spool file in a pod directory.

    The writer holds a shared ``flock`` on its file for as long as it is open;
    the uploader takes that as "this writer is alive", and the kernel drops
    it when the process dies, however it dies.

    Failures of the environment (unwritable directory, full disk) never raise:
    the report is counted in :attr:`lost`, and one warning is logged.
    """

    def __init__(self, pod_dir: str, pod_uuid: str) -> None:
        self.pod_dir = pod_dir
        self.pod_uuid = pod_uuid
        self.path = ""
        self.spool_id = ""
        self.lost = 0  # reports that could not be written
        self.records = 0  # reports written (header and end excluded)
        self.offset = 0  # bytes in the file: each writer is its file's only writer
        self.closed = False
        self._fd = -1
        self._seq = 0
        self._torn = False  # a short write left a partial line behind
        self._warned = False
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._open()

    # -- the hot path ---------------------------------------------------

    def write_metric(self, name: str, value: float) -> None:
        with self._lock:
            self._seq += 1
            if self._append(encode_metric(self._seq, time.time(), name, value)):
                self.records += 1

    def write_parameter(self, name: str, value: str) -> None:
        with self._lock:
            self._seq += 1
            if self._append(encode_parameter(self._seq, time.time(), name, value)):
                self.records += 1

    def _append(self, data: bytes) -> bool:
        if self._pid != os.getpid():
            self._after_fork()
        if self._torn:
            # Terminate the torn line first so it cannot swallow this record.
            data = b"\n" + data
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            self._lose(exc)
            return False
        self.offset += written
        if written == len(data):
            self._torn = False
            return True
        self._torn = True
        self._lose(OSError(errno.ENOSPC, "short write"))
        return False

    # -- lifecycle ------------------------------------------------------

    def close(self) -> None:
        """Append the end-of-stream record and close the file (safe to call twice)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._pid != os.getpid():
                # A forked child that never reported owns no stream: drop its
                # copy of the parent's descriptor and leave the parent's file be.
                if self._fd >= 0:
                    os.close(self._fd)
                self._fd = -1
                return
            if self._fd >= 0:
                self._seq += 1
                self._append(encode_end(self._seq, time.time()))
                os.close(self._fd)
                self._fd = -1

    def _open(self) -> None:
        spool_id = secrets.token_hex(16)
        name = f"w{os.getpid()}-{spool_id[:8]}{SPOOL_SUFFIX}"
        path = os.path.join(self.pod_dir, name)
        tmp = os.path.join(self.pod_dir, "." + name + ".tmp")
        header = encode_header(spool_id, self.pod_uuid, time.time())
        fd = -1
        try:
            make_private_dir(self.pod_dir)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)
            if os.write(fd, header) != len(header):
                raise OSError(errno.ENOSPC, "short write of the spool header")
            # Publish under the final name only once header and lock are in
            # place, so the uploader never sees a file it cannot identify.
            os.rename(tmp, path)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
                _unlink_quietly(tmp)
            self._warn(f"cannot create a spool file in {self.pod_dir!r} ({exc}); reports will be lost")
            return
        self._fd, self.path, self.spool_id, self.offset = fd, path, spool_id, len(header)

    def _after_fork(self) -> None:
        # The child shares the parent's descriptor; writing through it would
        # interleave two sequence counters in one file. Start its own file.
        self._pid = os.getpid()
        if self._fd >= 0:
            os.close(self._fd)  # the parent's copy; the parent's lock stays with the parent
        self._fd, self._seq, self.records, self.lost, self._torn, self._warned = -1, 0, 0, 0, False, False
        self._open()

    def _lose(self, exc: OSError) -> None:
        self.lost += 1
        self._warn(f"cannot write to the spool file {self.path!r} ({exc}); reports are being lost")

    def _warn(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("%s; finish() will report how many", message)


def make_private_dir(path: str) -> None:
    """Create *path* (and parents) readable by this user only."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o700)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
