"""How many pod directories of one owner the node agent follows: at most ``--max-pods-per-owner`` each.

Every pod followed costs the agent memory (a :class:`~.schedule.Pod`, its place
in the schedule, an inotify watch) and a look now and then. 200,000 empty
directories, which any job can make in a second, once took it over the
DaemonSet's 512Mi. The owner is the pod directory's uid (only root can give a
directory to another uid), so what one tenant makes counts against its own
share alone.

Past its bound, a new directory of an owner displaces that owner's longest-idle
pod (everything delivered, no writer alive, its directory unchanged since it
was judged: forgetting it loses nothing), so that a node whose finished pods of
one uid pile up still delivers its new ones. Where the owner has no idle pod,
the new directory is not followed. Either way the name is kept (a name, not a
pod: a few dozen bytes), counted (``runai_uploader_untracked_pods``), logged a
line a minute per owner, and costs nothing more: it is neither looked at nor
listed again as new. It is followed once a directory of its owner is gone,
those refused first first.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import Counter
from typing import Callable, Iterator

from .config import MAX_PODS_PER_OWNER
from .judge import dir_mtime
from .schedule import IDLE, Pod, States

__all__ = ["OwnedStates", "PodBound"]

logger = logging.getLogger(__name__)

LOG_SECONDS = 60.0  # an owner's untracked pods are logged at most this often (when their number grew)
_CANDIDATES = 8  # idle pods tried for a displacement, the longest-idle first, before the new one is refused


class OwnedStates(States):
    """:class:`~.schedule.States`, and each owner's pods followed and its idle ones, the longest-idle first."""

    def __init__(self) -> None:
        super().__init__()
        self.owned: Counter[int] = Counter()
        self.idle: dict[int, dict[str, Pod]] = {}  # (dicts keep their order: the one idle longest first)

    def add(self, pod: Pod) -> Pod:
        self.owned[pod.owner] += 1
        if pod.state == IDLE:
            self.idle.setdefault(pod.owner, {})[pod.name] = pod
        return super().add(pod)

    def move(self, pod: Pod, state: str) -> None:
        if state != pod.state:
            if pod.state == IDLE:
                self._idle_leaves(pod)
            elif state == IDLE:
                self.idle.setdefault(pod.owner, {})[pod.name] = pod
        super().move(pod, state)

    def remove(self, pod: Pod) -> None:
        self[pod.state] -= 1
        self.owned[pod.owner] -= 1
        if self.owned[pod.owner] <= 0:
            del self.owned[pod.owner]
        if pod.state == IDLE:
            self._idle_leaves(pod)

    def _idle_leaves(self, pod: Pod) -> None:
        idle = self.idle.get(pod.owner, {})
        idle.pop(pod.name, None)
        if not idle:
            self.idle.pop(pod.owner, None)


class PodBound:
    """Admits the pod directories of *spool_dir* under *max_per_owner* followed per owner (see the module).

    *states* counts the pods followed; *drop(name)* forgets a followed pod (one displaced).
    """

    def __init__(
        self, spool_dir: str, states: OwnedStates, drop: Callable[[str], None], max_per_owner: int = MAX_PODS_PER_OWNER
    ) -> None:
        self.spool_dir, self.max_per_owner = spool_dir, max_per_owner
        self._states, self._drop = states, drop
        self._untracked: dict[str, int] = {}  # name -> its owner, in the order they were refused
        self._owners: dict[int, int] = {}  # each owner's uid, once: 100,000 untracked names share a few ints
        self._per_owner: Counter[int] = Counter()  # untracked names per owner
        self._logged: dict[int, tuple[int, float]] = {}  # owner -> the count last logged, and when

    @property
    def untracked(self) -> int:
        return len(self._untracked)

    def gone(self, names: set[str], followed: dict[str, Pod]) -> set[str]:
        """The pods followed that *names* (a listing) lacks; the untracked names it lacks are forgotten."""
        for name in self._untracked.keys() - names:
            self._per_owner[self._untracked.pop(name)] -= 1
        return followed.keys() - names

    def admit(self, names: set[str], followed: dict[str, Pod], now: float) -> Iterator[Pod]:
        """The pods to follow from the listing *names*: untracked ones where their owner has room, then the new
        ones, the most recently changed first (after a restart, the pods likeliest to need delivering)."""
        room = self._room()
        if room:
            yield from self._readmit(room, now)
        made = names.difference(followed, self._untracked)
        for _, name, owner in sorted(map(self._stat, made), reverse=True):
            if self._states.owned[owner] < self.max_per_owner or self._displace(owner):
                yield Pod(name, os.path.join(self.spool_dir, name), now, owner)
            else:
                self._untracked[name] = self._owners.setdefault(owner, owner)  # (one int object per owner)
                self._per_owner[owner] += 1
        self._log(now)

    def _room(self) -> dict[int, int]:
        owned, bound = self._states.owned, self.max_per_owner
        return {o: bound - owned[o] for o, n in self._per_owner.items() if n > 0 and owned[o] < bound}

    def _readmit(self, room: dict[int, int], now: float) -> Iterator[Pod]:
        # One pass over the untracked names, the first refused first, only when some owner has room.
        for name, owner in list(self._untracked.items()):
            if room.get(owner, 0) > 0:
                room[owner] -= 1
                del self._untracked[name]
                self._per_owner[owner] -= 1
                yield Pod(name, os.path.join(self.spool_dir, name), now, owner)

    def _displace(self, owner: int) -> bool:
        """Forget *owner*'s longest-idle pod, if one is idle and its directory unchanged since it was judged."""
        idle = self._states.idle.get(owner, {})
        for pod in list(itertools.islice(idle.values(), _CANDIDATES)):
            # An mtime other than the judged one: a new file may be there (or it was never judged); its look
            # comes soon, and it is not displaced meanwhile.
            if pod.delivery is None and pod.mtime >= 0 and dir_mtime(pod.path) == pod.mtime:
                logger.debug("pod %s: displaced (idle; owner %d at its bound)", pod.name, owner)
                self._drop(pod.name)
                self._untracked[pod.name] = owner
                self._per_owner[owner] += 1
                return True
        return False

    def _stat(self, name: str) -> tuple[int, str, int]:
        """The directory's mtime (ns), name and owner (-1: it cannot be read: followed, its look says why)."""
        try:
            info = os.stat(os.path.join(self.spool_dir, name), follow_symlinks=False)
        except OSError:
            return 0, name, -1
        return info.st_mtime_ns, name, info.st_uid

    def _log(self, now: float) -> None:
        """A line per owner whose untracked pods grew, at most every :data:`LOG_SECONDS`."""
        for owner, count in self._per_owner.items():
            last, at = self._logged.get(owner, (0, -LOG_SECONDS))
            if count < last:
                self._logged[owner] = (count, at)
            elif count > last and now - at >= LOG_SECONDS:
                self._logged[owner] = (count, now)
                logger.warning(
                    "%d pod directories of uid %d are not followed (past --max-pods-per-owner=%d; its idle pods "
                    "make room for its new ones): what is written into them is not delivered until some of that "
                    "uid's directories are removed; remove its finished or empty pod directories, or raise "
                    "--max-pods-per-owner",
                    count,
                    owner,
                    self.max_per_owner,
                )
