"""One pass of the node agent's main loop over the pods due, each owner's share of the loop's time kept.

Each look at a pod is bounded (:mod:`.judge`, :mod:`.listing`): tens of milliseconds at most. But one owner (a
pod directory's uid) may have hundreds of pods due at once: 600 pods each of 1,000 files, waiting with writers
alive and so probed every second, or 100 pods held by their own uploader and changed every second, so judged
again every few. Their looks, one after the other, delayed another uid's dying pod by 10-17 s. So the loop's
time is counted per owner, in windows of :data:`~.config.LOOP_WINDOW_SECONDS`: an owner past
:data:`~.config.OWNER_LOOP_SECONDS` in the current window has its due pods set aside, in their order, while
another owner's pods are due; and a pass ends after :data:`~.config.PASS_SECONDS`, so that a pod coming due
meanwhile waits that long at most (and one look more). Nothing is dropped and no time is wasted: the pods set
aside are looked at, in order, whenever no other owner's pod is due, and a catch-up of one owner's thousands of
pods runs as fast as before (each pod set aside once, not re-sorted at every pass).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from typing import Callable, Mapping

from .config import LOOP_WINDOW_SECONDS, OWNER_LOOP_SECONDS, PASS_SECONDS
from .schedule import DueTimes, Pod

__all__ = ["Passes"]


class Passes:
    """The passes over the pods *due* (see the module). *clock*: monotonic seconds (a seam for tests)."""

    def __init__(
        self,
        due: DueTimes,
        share: float = OWNER_LOOP_SECONDS,
        window: float = LOOP_WINDOW_SECONDS,
        length: float = PASS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._due, self._share, self._window, self._length, self._clock = due, share, window, length, clock
        self._spent: defaultdict[int, float] = defaultdict(float)  # each owner's seconds of looks in the current window
        self._window_ends = 0.0
        self._aside: deque[str] = deque()  # due pods of owners past their share, in the order they came due

    def run(
        self, now: float, pods: Mapping[str, Pod], tend: Callable[[Pod], None], stopping: Callable[[], bool]
    ) -> bool:
        """Tend the pods due at *now*, owners past their share last; True if the pass ended with pods left due
        (the next one should come at once)."""
        start = self._clock()
        while not stopping():
            name = self._due.pop_one(now)
            if name is None:
                break
            pod = pods.get(name)
            if pod is None:
                continue  # gone meanwhile
            if self._past_share(pod.owner):
                self._aside.append(name)
                continue
            self._tend(pod, tend)
            if self._clock() - start >= self._length:
                return True
        # No other owner's pod is due: those past their share have the rest of the pass, in their order.
        while self._aside and not stopping() and self._clock() - start < self._length:
            name = self._aside.popleft()
            pod = pods.get(name)
            if pod is not None and name not in self._due:  # (scheduled anew meanwhile: looked at then)
                self._tend(pod, tend)
        return bool(self._aside)

    def _past_share(self, owner: int) -> bool:
        now = self._clock()
        if now >= self._window_ends:
            self._spent.clear()
            self._window_ends = now + self._window
        return self._spent[owner] >= self._share

    def _tend(self, pod: Pod, tend: Callable[[Pod], None]) -> None:
        start = self._clock()
        try:
            tend(pod)
        finally:
            self._spent[pod.owner] += self._clock() - start
