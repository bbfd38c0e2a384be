"""Every report a pod's spool still holds, in report order.

The gateway keeps only the last value of each name; the spool keeps them all
(for as long as the history bound allows), whether or not the gateway was
ever reachable.
"""
from __future__ import annotations

import os
from typing import Iterable, NamedTuple

from runai.reporter.spool import PARAMETER, BadSpoolError, open_spool, spool_file_names

__all__ = ["Entry", "read_history"]


class Entry(NamedTuple):
    ts: float  # seconds since the Unix epoch
    seq: int
    kind: str  # "metric" or "parameter"
    name: str
    value: float | str
    spool_file: str  # which writer's file it came from


def read_history(pod_dir: str, names: Iterable[str] = ()) -> list[Entry]:
    """The reports of *pod_dir* (only *names*, if given), in report order.

    A parameter appears only when its value changed, so it reads as its
    history of changes.
    """
    wanted = set(names)
    entries: list[tuple[float, int, int, Entry]] = []
    files = spool_file_names(pod_dir)
    for order, name in enumerate(files):
        try:
            opened = open_spool(os.path.join(pod_dir, name), resume=False)  # every report, delivered or not
        except (OSError, BadSpoolError):
            continue
        if opened is None:
            continue
        with opened.tail as tail:
            for record in tail.read_all():  # reports only: metrics and parameters
                if not wanted or record.name in wanted:
                    entry = Entry(record.ts, record.seq, record.kind, record.name, record.value, name)
                    entries.append((record.ts, order, record.seq, entry))
    entries.sort(key=lambda e: e[:3])
    out: list[Entry] = []
    last_parameter: dict[str, object] = {}
    for *_, entry in entries:
        if entry.kind == PARAMETER:
            if last_parameter.get(entry.name, object()) == entry.value:
                continue
            last_parameter[entry.name] = entry.value
        out.append(entry)
    return out
