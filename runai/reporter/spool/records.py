"""Spool lines: the record types, their limits, and how they are encoded and decoded.

This module is the one place that knows what a spool line looks like: the
training process encodes with the ``encode_*`` functions (through
:class:`~runai.reporter.spool.SpoolWriter`), the uploader decodes with
:func:`decode`. The format is documented in ``docs/spool-format.md``.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Final, Literal, NamedTuple, Union

__all__ = [
    "END",
    "FORMAT_VERSION",
    "HEADER",
    "MAX_LINE_BYTES",
    "MAX_NAME_CHARS",
    "MAX_VALUE_BYTES",
    "METRIC",
    "PARAMETER",
    "End",
    "Header",
    "Metric",
    "Parameter",
    "Record",
    "Report",
    "decode",
    "decode_metrics",
    "encode_end",
    "encode_header",
    "encode_metric",
    "encode_parameter",
    "now_us",
]

FORMAT_VERSION = 1
# The largest parameter value, in UTF-8 bytes, a report accepts (docs/api.md):
# one value must never make a line, or a push, too big to handle.
MAX_VALUE_BYTES = 64 << 10
# The longest spool line, newline excluded. A value JSON-escapes to at most
# 6x its UTF-8 bytes (a control character becomes \u00XX), so a valid line
# is well below this; a reader skips a longer one as damage, without holding it.
MAX_LINE_BYTES = 8 * MAX_VALUE_BYTES
# The longest report name, in characters (ASCII by the name rule): as for a
# value, one name must never make a line or a push too big to handle.
MAX_NAME_CHARS = 250

HEADER: Final = "header"
METRIC: Final = "metric"
PARAMETER: Final = "parameter"
END: Final = "end"

# JSON has no NaN or infinity, so non-finite metric values travel as these
# strings (the spellings Prometheus' text format uses) and stay valid JSON.
_NONFINITE_TO_JSON = {"nan": '"NaN"', "inf": '"+Inf"', "-inf": '"-Inf"'}
_NONFINITE_FROM_JSON = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf}

# Names are checked against [a-zA-Z_][a-zA-Z0-9_]* before they get here, so
# they need no JSON escaping and string formatting is safe (and ~3x faster
# than json.dumps). Timestamps are integer microseconds: formatting a float
# costs as much as the write(2) itself (0.9 us each on the CI machine).
_PARAMETER_LINE = '{"seq":%d,"ts_us":%d,"kind":"parameter","name":"%s","value":%s}\n'
_END_LINE = '{"seq":%d,"ts_us":%d,"kind":"end"}\n'


# One type per kind of line. A report keeps the layout of the single record
# type of earlier versions, ``kind`` and the (always empty) ``spool_id``
# included, so that code reading ``.seq .ts .kind .name .value``, or comparing
# a report with a plain tuple, works on either report type unchanged.
class Metric(NamedTuple):
    """A decoded metric report."""

    seq: int
    ts: float  # seconds since the Unix epoch
    kind: Literal["metric"]
    name: str
    # NaN and the infinities included: the spool spells them as strings (see _NONFINITE_TO_JSON).
    value: float
    spool_id: str = ""  # a header's field; empty in a report


class Parameter(NamedTuple):
    """A decoded parameter report."""

    seq: int
    ts: float  # seconds since the Unix epoch
    kind: Literal["parameter"]
    name: str
    value: str  # at most MAX_VALUE_BYTES of UTF-8
    spool_id: str = ""  # a header's field; empty in a report


class _NotAReport:
    """A line that is not a report: no name and no value.

    They read as the single record type of earlier versions read them, so
    that code looking for a name among all the lines of a file needs no type
    check.
    """

    __slots__ = ()
    name: ClassVar[str] = ""
    value: ClassVar[None] = None


@dataclass(frozen=True, slots=True)
class End(_NotAReport):
    """A writer's end-of-stream marker."""

    seq: int
    ts: float
    kind: Literal["end"]
    spool_id: ClassVar[str] = ""  # a header's field; empty here, as in every non-header line of earlier versions


@dataclass(frozen=True, slots=True)
class Header(_NotAReport):
    """The first line of every spool file."""

    seq: int
    ts: float
    kind: Literal["header"]
    spool_id: str
    # The kinds of receiver the job was configured with (GATEWAY, REMOTE_WRITE; empty: none, local mode);
    # None for a file written before headers said (unknown).
    receivers: tuple[str, ...] | None = None
    pod_uuid: str | None = None  # the pod its writer reported for (None: the header names none)


Report = Union[Metric, Parameter]  # what a reader yields, and the uploader pushes
Record = Union[Metric, Parameter, End, Header]  # any decoded line


def now_us() -> int:
    return time.time_ns() // 1000


def encode_metric(seq: int, ts_us: int, name: str, value: float) -> bytes:
    # The hot path's encoder: an f-string is compiled, about a third cheaper
    # than % on a format string. A finite float's repr is its shortest
    # round-trip decimal, a valid JSON number.
    text = repr(value) if _isfinite(value) else _NONFINITE_TO_JSON[repr(value)]
    return f'{{"seq":{seq},"ts_us":{ts_us},"kind":"metric","name":"{name}","value":{text}}}\n'.encode()


def encode_parameter(seq: int, ts_us: int, name: str, value: str) -> bytes:
    return (_PARAMETER_LINE % (seq, ts_us, name, _json_string(value))).encode()


def encode_end(seq: int, ts_us: int) -> bytes:
    return (_END_LINE % (seq, ts_us)).encode()


def encode_header(spool_id: str, pod_uuid: str, ts_us: int, receivers: tuple[str, ...] | None = None) -> bytes:
    header: dict[str, object] = {
        "seq": 0,
        "ts_us": ts_us,
        "kind": HEADER,
        "version": FORMAT_VERSION,
        "spool_id": spool_id,
        "pod_uuid": pod_uuid,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    if receivers is not None:  # kinds only: never a URL, never a credential
        header["receivers"] = list(receivers)
    return (json.dumps(header, separators=(",", ":")) + "\n").encode()


# The exact shape SpoolWriter gives a finite metric, which is nearly every
# line: matching it is strict validation too, at a third of json.loads' cost.
# Sequence numbers and timestamps are below 2**63 (19 digits at most): a
# longer one is damage, and would overflow a float.
_INT_BOUND = 1 << 63
_WRITER_METRIC = re.compile(
    rb'\{"seq":(0|[1-9][0-9]{0,18}),"ts_us":(0|[1-9][0-9]{0,18}),"kind":"metric",'
    rb'"name":"([A-Za-z_][A-Za-z0-9_]*)","value":(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)\}'
)


def decode(line: bytes) -> Record:
    """Decode one line (without its newline); raise ValueError if it is not a valid record."""
    match = _WRITER_METRIC.fullmatch(line)
    if match is not None:
        seq, ts_us, name, value = match.groups()
        seq, ts_us = int(seq), int(ts_us)
        if seq < _INT_BOUND and ts_us < _INT_BOUND:
            return Metric(seq, ts_us / 1e6, METRIC, name.decode(), float(value))
        raise ValueError("not a spool record: seq and ts_us must be below 2**63")
    seq, ts, kind, obj = _envelope(line)
    build = _BUILDERS.get(kind) if type(kind) is str else None  # a list or dict is unhashable
    if build is None:
        raise ValueError(f"unknown record kind {kind!r}")
    return build(seq, ts, obj)


# The same shape over a whole block of lines at once (a findall in C, no call per line), bounded so that
# a line it takes is one decode() takes the same way: at most 18 digits of seq and ts_us (below 2**63
# with no check), names and numbers far shorter than MAX_LINE_BYTES. Anything else goes line by line.
_WRITER_METRICS = re.compile(
    rb'^\{"seq":(0|[1-9][0-9]{0,17}),"ts_us":(0|[1-9][0-9]{0,17}),"kind":"metric",'
    rb'"name":"([A-Za-z_][A-Za-z0-9_]{0,999})","value":(-?(?:0|[1-9][0-9]{0,399})(?:\.[0-9]{1,400})?'
    rb"(?:[eE][-+]?[0-9]{1,400})?)\}$",
    re.MULTILINE,
)


def decode_metrics(block: bytes) -> list[Report] | None:
    """Decode the lines of *block* (split at newlines, without the last one's) if every one is a metric in
    the shape SpoolWriter writes a finite value, exactly as :func:`decode` would (a :class:`Metric`
    each); None otherwise.

    The reader's fast path: nearly every block of a spool is only that (a drain of a million
    records spends a third of its time decoding them one call at a time).
    """
    found = _WRITER_METRICS.findall(block)
    if len(found) != block.count(b"\n") + 1:
        return None
    new = tuple.__new__  # Metric(...) runs a Python-level __new__: a third of the cost of a record
    return [
        new(Metric, (int(seq), int(ts_us) / 1e6, METRIC, name.decode(), float(value), ""))
        for seq, ts_us, name, value in found
    ]


def _envelope(line: bytes) -> tuple[int, float, object, dict[str, object]]:
    """What every record has, from a line json.loads reads: (seq, ts, kind, the whole object)."""
    try:
        obj = json.loads(line)
        seq, ts_us, kind = obj["seq"], obj["ts_us"], obj["kind"]
    except (ValueError, TypeError, KeyError, RecursionError) as exc:  # RecursionError: "[[[[..." nested deep
        raise ValueError(f"not a spool record: {exc}") from None
    if type(seq) is not int or type(ts_us) is not int or not (0 <= seq < _INT_BOUND and 0 <= ts_us < _INT_BOUND):
        raise ValueError("not a spool record: seq and ts_us must be integers from 0 to 2**63 - 1")
    return seq, ts_us / 1e6, kind, obj


def _metric(seq: int, ts: float, obj: dict[str, object]) -> Metric:
    """A metric line in any shape the fast path did not take (a non-finite value, other spacing)."""
    name, value = obj.get("name"), obj.get("value")
    if type(value) is str:
        value = _NONFINITE_FROM_JSON.get(value)
    elif type(value) is int:
        try:
            value = float(value)
        except OverflowError:  # as float() reads the same digits as text, and json.loads reads 1e999
            value = math.inf if value > 0 else -math.inf
    if not isinstance(name, str) or type(value) is not float:
        raise ValueError("metric record without a name or a numeric value")
    return Metric(seq, ts, METRIC, name, value)


def _parameter(seq: int, ts: float, obj: dict[str, object]) -> Parameter:
    name, value = obj.get("name"), obj.get("value")
    if not isinstance(name, str) or not isinstance(value, str):
        raise ValueError("parameter record without a name or a string value")
    return Parameter(seq, ts, PARAMETER, name, value)


def _end(seq: int, ts: float, obj: dict[str, object]) -> End:
    return End(seq, ts, END)


def _header(seq: int, ts: float, obj: dict[str, object]) -> Header:
    spool_id, version = obj.get("spool_id"), obj.get("version")
    if version != FORMAT_VERSION:
        raise ValueError(f"spool format version {version!r} is not supported (this reader knows {FORMAT_VERSION})")
    if not isinstance(spool_id, str) or not spool_id:
        raise ValueError("header record without a spool_id")
    kinds = obj.get("receivers")
    # Anything but a list of names reads as unknown, as a header without the field does.
    known = tuple(kinds) if isinstance(kinds, list) and all(isinstance(kind, str) for kind in kinds) else None
    pod = obj.get("pod_uuid")
    return Header(seq, ts, HEADER, spool_id, known, pod if isinstance(pod, str) else None)


_BUILDERS: dict[str, Callable[[int, float, dict[str, object]], Record]] = {
    METRIC: _metric,
    PARAMETER: _parameter,
    END: _end,
    HEADER: _header,
}


# Bound once: attribute lookups on the hot path cost as much as the work.
_isfinite = math.isfinite
_json_string = json.encoder.encode_basestring_ascii  # json.dumps' C core for one str, without its setup
