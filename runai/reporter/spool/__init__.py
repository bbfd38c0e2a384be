"""The on-disk contract: everything that reads or writes a pod's spool directory.

Standard library only, and owned by the training side, which defines it; the
uploader imports it, never the other way round. Documented in
``docs/spool-format.md``.

* :mod:`.records`: the lines, their limits, encoding and decoding;
* :mod:`.names`: which file is which in a pod directory;
* :mod:`.writer`: :class:`SpoolWriter`, the training process's appender;
* :mod:`.reader`: :class:`SpoolTail`, reading complete lines from an offset;
* :mod:`.checkpoint`: how far the gateway acknowledged a file;
* :mod:`.delivery`: opening a file with its checkpoint, and its delivery state;
* :mod:`.lock`: the pod's singleton uploader lock and its holder;
* :mod:`.log`: the pod's uploader log.
"""

from __future__ import annotations

from .checkpoint import GATEWAY, REMOTE_WRITE, SINKS, Checkpoint, load_checkpoint, load_progress, store_checkpoint
from .delivery import Delivery, OpenSpool, delivery_state, foreign_spool, open_spool, other_pod, receiver_kinds
from .lock import PodLock, holder_pid, lock_holders
from .log import LOG_FORMAT, last_error, last_line, last_refusal, open_log, read_tail, refused_by
from .names import (
    CHECKPOINT_SUFFIX,
    LOCK_NAME,
    LOG_NAME,
    SPOOL_SUFFIX,
    checkpoint_path,
    is_spool_file,
    spool_file_names,
    writer_pid,
)
from .reader import SEARCH_BYTES, BadSpoolError, SpoolTail, skip_reason
from .records import (
    END,
    FORMAT_VERSION,
    HEADER,
    MAX_LINE_BYTES,
    MAX_NAME_CHARS,
    MAX_VALUE_BYTES,
    METRIC,
    PARAMETER,
    End,
    Header,
    Metric,
    Parameter,
    Record,
    Report,
    decode,
    encode_end,
    encode_header,
    encode_metric,
    encode_parameter,
    now_us,
)
from .writer import SpoolFile, SpoolWriter

__all__ = [
    "CHECKPOINT_SUFFIX",
    "END",
    "FORMAT_VERSION",
    "HEADER",
    "LOCK_NAME",
    "LOG_FORMAT",
    "LOG_NAME",
    "MAX_LINE_BYTES",
    "MAX_NAME_CHARS",
    "MAX_VALUE_BYTES",
    "METRIC",
    "PARAMETER",
    "SEARCH_BYTES",
    "SPOOL_SUFFIX",
    "BadSpoolError",
    "Checkpoint",
    "GATEWAY",
    "REMOTE_WRITE",
    "SINKS",
    "Delivery",
    "End",
    "Header",
    "Metric",
    "OpenSpool",
    "Parameter",
    "PodLock",
    "Record",
    "Report",
    "SpoolFile",
    "SpoolTail",
    "SpoolWriter",
    "checkpoint_path",
    "decode",
    "delivery_state",
    "encode_end",
    "encode_header",
    "encode_metric",
    "encode_parameter",
    "foreign_spool",
    "holder_pid",
    "is_spool_file",
    "last_error",
    "last_line",
    "last_refusal",
    "load_checkpoint",
    "lock_holders",
    "load_progress",
    "now_us",
    "open_log",
    "open_spool",
    "other_pod",
    "read_tail",
    "receiver_kinds",
    "refused_by",
    "skip_reason",
    "spool_file_names",
    "store_checkpoint",
    "writer_pid",
]
