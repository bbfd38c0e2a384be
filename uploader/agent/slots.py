"""Who gets one of the node agent's ``--max-deliveries`` slots, in which order, and what one owner may hold.

A delivery of a pod whose writers are alive follows it until they are gone: it may hold its slot for ever. One
process made 256 pod directories, each with a live writer, took every slot, and a dying pod of another user
waited until that process exited. So, for the pods queued (free to take, no uploader of their own):

* *dead before live*: a pod with no writer alive is taken before any pod with writers alive;
* an *owner* (the pod directory's uid) holds at most ``per_owner`` slots: its other pods wait, others pass them;
* live deliveries hold at most ``live_max`` slots: the rest (a quarter) are only for dead pods, so a dying pod
  finds one however many owners' live pods wait;
* within each class, owners take turns (one owner's 10,000 pods do not delay another's one), each owner's pods
  in the order queued.

Each queued pod costs O(1) amortized: owners at their bound are set aside (not looked at again) until one of
their deliveries ends, and a pod queued again, or gone, leaves its old entry behind, skipped when it comes up.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from ..runtime.ratelog import RateLimitedLog
from .config import DEAD_SHARE, OWNER_SHARE

__all__ = ["Queued", "Slots", "live_bound", "owner_bound"]

logger = logging.getLogger(__name__)


def owner_bound(size: int, per_owner: int = 0) -> int:
    """The slots one owner may hold: *per_owner* (0: the default share of *size*), never more than *size*."""
    return min(size, per_owner or max(1, int(size * OWNER_SHARE)))


def live_bound(size: int) -> int:
    """The slots live deliveries may hold: *size* less those kept for dead pods (none if only one slot)."""
    return size - min(size - 1, max(1, int(size * DEAD_SHARE)))


class Queued(NamedTuple):
    name: str
    owner: int
    live: bool


@dataclass(slots=True)
class _Class:
    """The pods queued of one class (dead, or live): by owner, and the owners' turns."""

    pods: dict[int, deque[Queued]] = field(default_factory=dict)  # owner -> its entries, in the order queued
    count: Counter[int] = field(default_factory=Counter)  # owner -> its entries still queued (not stale)
    turns: deque[int] = field(default_factory=deque)  # owners with pods here, under their bound, in turn
    waiting: set[int] = field(default_factory=set)  # owners with pods here, at their bound


class Slots:
    """The pods queued for one of *size* delivery slots, the deliveries held, and those that ended.

    *per_owner*: the slots one owner may hold (0: a quarter of *size*). *wake* wakes the agent's loop (called in
    the delivery's thread when it ends). All but :meth:`ended` are called from the agent's loop.
    """

    def __init__(self, size: int, wake: Callable[[], None], per_owner: int = 0) -> None:
        self.size, self.per_owner, self.live_max = size, owner_bound(size, per_owner), live_bound(size)
        self._wake = wake
        self._dead, self._live = _Class(), _Class()
        self._where: dict[str, Queued] = {}  # each queued name: its current entry (any older one is stale)
        self._offered: Queued | None = None  # the last name handed out, until held
        self._held: dict[str, Queued] = {}  # the deliveries holding a slot
        self._owners: Counter[int] = Counter()  # slots held, per owner
        self.live_held = 0  # slots held by pods queued live
        self._ended: deque[str] = deque()
        self._bounded = RateLimitedLog(logger)  # an owner at its bound with pods waiting: a line a minute

    @property
    def held(self) -> int:
        return len(self._held)

    def held_by(self, owner: int) -> int:
        return self._owners[owner]

    def queue(self, name: str, owner: int, live: bool) -> None:
        """Queue *name* (anew: an entry it had is dropped), of *owner*, with writers alive or not."""
        self.drop(name)
        self._where[name] = entry = Queued(name, owner, live)
        group = self._group(live)
        pods = group.pods.get(owner)
        if pods is None:
            pods = group.pods[owner] = deque()
            (group.turns.append if self._owners[owner] < self.per_owner else group.waiting.add)(owner)
        pods.append(entry)
        group.count[owner] += 1
        if len(pods) > 2 * group.count[owner] + 64:  # mostly stale (an owner at its bound, its pods churning)
            group.pods[owner] = deque(e for e in pods if self._where.get(e.name) is e)

    def drop(self, name: str) -> None:
        """*name* leaves the queue (its entry is skipped when it comes up)."""
        entry = self._where.pop(name, None)
        if entry is not None:
            self._uncount(entry)

    def next_queued(self) -> str | None:
        """The next name to take while a slot is free for it (it leaves the queue): dead pods first, then live
        ones while live deliveries hold fewer than ``live_max``; else None. :meth:`hold` it once taken."""
        if len(self._held) >= self.size:
            return None
        entry = self._next(self._dead)
        if entry is None and self.live_held < self.live_max:
            entry = self._next(self._live)
        self._offered = entry
        return None if entry is None else entry.name

    def hold(self, name: str) -> None:
        """The name :meth:`next_queued` last handed out is delivered: it holds a slot until it :meth:`ended`."""
        entry, self._offered = self._offered, None
        if entry is None or entry.name != name:
            raise ValueError(f"{name!r} was not the last name handed out by next_queued()")
        self._held[name] = entry
        self._owners[entry.owner] += 1
        self.live_held += entry.live

    def ended(self, name: str) -> None:
        """*name*'s delivery ended: called last in its thread (deque.append takes no lock a reader could hold)."""
        self._ended.append(name)
        self._wake()

    def pop_ended(self) -> list[str]:
        """The deliveries that ended since; their slots are free (their owners' turns back, if at the bound)."""
        out = []
        while self._ended:
            name = self._ended.popleft()
            out.append(name)
            entry = self._held.pop(name, None)
            if entry is not None:
                self._release(entry)
        return out

    def _release(self, entry: Queued) -> None:
        self.live_held -= entry.live
        self._owners[entry.owner] -= 1
        if self._owners[entry.owner] <= 0:
            del self._owners[entry.owner]  # (a Counter keeps zeros: thousands of owners, gone)
        if self._owners[entry.owner] < self.per_owner:  # under its bound again: its turns back
            for group in (self._dead, self._live):
                if entry.owner in group.waiting:
                    group.waiting.discard(entry.owner)
                    group.turns.append(entry.owner)

    def _next(self, group: _Class) -> Queued | None:
        """The next entry of *group*, owners in turn; owners at their bound set aside, stale entries skipped."""
        while group.turns:
            owner = group.turns.popleft()
            if self._owners[owner] >= self.per_owner:
                group.waiting.add(owner)  # back in turn when one of its deliveries ends
                self._bounded.log(
                    logging.INFO,
                    str(owner),
                    "uid %d holds %d delivery slots, its bound (--max-deliveries-per-owner): its other pods wait",
                    owner,
                    self.per_owner,
                )
                continue
            entry = self._pop(group.pods[owner])
            if group.pods[owner]:
                group.turns.append(owner)
            else:
                del group.pods[owner]
            if entry is not None:
                return entry
        return None

    def _pop(self, pods: deque[Queued]) -> Queued | None:
        """The first of *pods* still queued (it leaves the queue); None if none is."""
        while pods:
            entry = pods.popleft()
            if self._where.get(entry.name) is entry:
                del self._where[entry.name]
                self._uncount(entry)
                return entry
        return None

    def _group(self, live: bool) -> _Class:
        return self._live if live else self._dead

    def _uncount(self, entry: Queued) -> None:
        count = self._group(entry.live).count
        count[entry.owner] -= 1
        if count[entry.owner] <= 0:
            del count[entry.owner]
