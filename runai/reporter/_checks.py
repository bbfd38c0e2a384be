"""What a report may hold: a name's and a value's checks, with the messages that say what is wrong.

The Reporter's, kept apart from its lifecycle. A metric is checked here only for a name not seen yet or a
value that is not a float: the spool writer's hot path skips the call otherwise (see SpoolWriter.write_metric).
"""

from __future__ import annotations

import numbers
import re

from .spool import MAX_NAME_CHARS, MAX_VALUE_BYTES

__all__ = ["CHECKED_NAMES", "check_name", "checked_metric", "parameter_value"]

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# Names already checked, so the regex runs once per name rather than once per
# report. Bounded so that a program inventing names cannot grow it forever.
CHECKED_NAMES: set[str] = set()
_CHECKED_NAMES_MAX = 10_000


def check_name(name: object) -> str:
    if type(name) is str and name in CHECKED_NAMES:
        return name
    if not isinstance(name, str):
        raise TypeError(f"a report name must be a str, not {type(name).__name__}")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(
            f"the report name {name[:40]!r}... is {len(name)} characters long, more than the "
            f"{MAX_NAME_CHARS} a name may have: use a shorter name"
        )
    if not _NAME.match(name):
        raise ValueError(
            f"invalid report name {name!r}: use letters, digits and underscores, not starting with a digit"
        )
    if len(CHECKED_NAMES) < _CHECKED_NAMES_MAX:
        CHECKED_NAMES.add(name)
    return name


def _metric_value(value: object) -> float:
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is not int and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(
            f"a metric value must be a real number (int or float), not {kind.__name__}: "
            "report float(value) (a tensor's or array's .item())"
        )
    try:
        return float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise ValueError(f"metric value {value!r} is too large for a float") from None


def checked_metric(name: object, value: object) -> tuple[str, float]:
    """A metric's name and value as the spool writes them, or TypeError/ValueError saying what is wrong."""
    return check_name(name), value if type(value) is float else _metric_value(value)


def parameter_value(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Real)):
        raise TypeError(f"a parameter value must be a str, int or float, not {type(value).__name__}")
    text = value if isinstance(value, str) else str(value)
    # At least one UTF-8 byte per character: a longer str is refused unencoded.
    size = f"{len(text)} characters"
    if len(text) <= MAX_VALUE_BYTES:
        try:
            encoded = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"the value of parameter {name!r} cannot be encoded as UTF-8 ({text[exc.start]!r} at position "
                f"{exc.start}): a lone surrogate usually comes from os.fsdecode() of bytes that are not UTF-8; "
                "decode such bytes with errors='replace' before reporting them"
            ) from None
        if encoded <= MAX_VALUE_BYTES:
            return text
        size = f"{encoded} bytes as UTF-8"
    raise ValueError(
        f"the value of parameter {name!r} is {size}, more than the {MAX_VALUE_BYTES} bytes a "
        "parameter value may have: report a shorter value (a summary, a hash or a path)"
    )
