"""What each pass of the node agent looks at: the pods due (a heap of times), the deliveries that ended, and the
pods queued for a delivery slot (:mod:`.slots`).

Walking every pod on each wake-up to find the few that are due cost the agent
work in proportion to all the pods it follows, and it wakes at every delivery's
end: over a catch-up of N pods, N² looks. So was judging again, every second,
each pod waiting for one of the ``--max-deliveries`` slots. Here a pass costs
what is due (and log N per pod), a queued pod is judged once, and an idle pod
costs one look every few seconds, whatever the number of others.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .delivery import PodDelivery
    from .judge import Judged
    from .listing import Signature

__all__ = ["ACTIVE", "IDLE", "QUEUED", "REFUSED", "TAKEN", "DueTimes", "Pod", "States"]

# queued: free to take, waiting for one of the --max-deliveries slots (judged once, not again while it waits)
IDLE, ACTIVE, QUEUED, TAKEN, REFUSED = "idle", "active", "queued", "taken", "refused"


@dataclass(slots=True)  # (slots: tens of thousands of them, on a busy node)
class Pod:
    name: str
    path: str
    found: float  # when the agent found it (monotonic)
    owner: int = -1  # its directory's uid when found (-1: unknown): what one tenant may hold is counted by it
    state: str = ACTIVE  # until judged
    files: frozenset[str] = frozenset()  # its spool files when last judged
    mtime: int = -1  # its directory's mtime (ns) when last listed
    overflow_mtime: int | None = None  # past MAX_JUDGED_FILES when judged: its directory's mtime then, else None
    grace_until: float = 0.0
    next_judge: float = 0.0
    signature: Signature | None = None  # its files when last judged (see _held)
    refused: str | None = None  # why it was last refused (logged once per reason)
    sinks: tuple[str, ...] = ()  # the agent's sinks its job named (delivery.intent), when last judged
    skipped: str | None = None  # why it is not delivered here: its job named none of them (logged once)
    delivery: PodDelivery | None = None
    queued: Judged | None = None  # what it was judged when queued, for the log line of its take


class States(Counter[str]):
    """How many pods are in each state."""

    def add(self, pod: Pod) -> Pod:
        self[pod.state] += 1
        return pod

    def move(self, pod: Pod, state: str) -> None:
        self[pod.state] -= 1
        self[state] += 1
        pod.state = state


class DueTimes:
    """Each name's next due time; :meth:`pop_one` hands out, once, each name whose time has come.

    Rescheduling a name leaves its old entry in the heap, skipped when it comes up (cheaper than removing
    it); a name is rescheduled only once it was handed out, or when it leaves the schedule, so the stale
    entries stay few.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._at: dict[str, float] = {}  # the one live time of each scheduled name
        self._order = itertools.count()  # ties in time are served in the order they were scheduled

    def set(self, name: str, at: float) -> None:
        """Due at *at* (monotonic); math.inf: never, until set again."""
        if at == math.inf:
            self._at.pop(name, None)
            return
        self._at[name] = at
        heapq.heappush(self._heap, (at, next(self._order), name))

    def discard(self, name: str) -> None:
        self._at.pop(name, None)

    def pop_one(self, now: float) -> str | None:
        """The name due first, if it is due at *now* (it is unscheduled: whoever looks at it sets its next time)."""
        heap, at = self._heap, self._at
        while heap and heap[0][0] <= now:
            due, _, name = heapq.heappop(heap)
            if at.get(name) == due:
                del at[name]
                return name
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._at

    def next_due(self) -> float:
        """The earliest time set (math.inf if none)."""
        heap = self._heap
        while heap and self._at.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # stale: rescheduled or discarded since
        return heap[0][0] if heap else math.inf

    def __len__(self) -> int:
        return len(self._at)
