"""The main loop's passes (uploader.agent.passes): one owner's many due pods never hold another owner's back."""

from __future__ import annotations

from uploader.agent.config import PASS_SECONDS
from uploader.agent.passes import Passes
from uploader.agent.schedule import DueTimes, Pod


class _Clock:
    """Fake monotonic time: a look advances it by its pod's cost, the loop by its sleep."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _loop(due: DueTimes, pods: dict[str, Pod], cost: dict[str, float], until: float) -> dict[str, float]:
    """Run passes as the agent's loop does until *until* (fake seconds): when each pod was first looked at."""
    clock, seen = _Clock(), {}
    passes = Passes(due, clock=clock)

    def tend(pod: Pod) -> None:
        seen.setdefault(pod.name, clock.now)
        clock.now += cost[pod.name]

    while clock.now < until:
        behind = passes.run(clock.now, pods, tend, lambda: False)
        if not behind:  # asleep until the next pod is due
            clock.now = max(clock.now + 0.001, min(due.next_due(), until))
    return seen


def _pods(due: DueTimes, owner: int, count: int, at: float, prefix: str) -> dict[str, Pod]:
    pods = {f"{prefix}{i}": Pod(f"{prefix}{i}", f"/spool/{prefix}{i}", 0.0, owner) for i in range(count)}
    for name in pods:
        due.set(name, at)
    return pods


def test_one_owners_hundred_slow_looks_delay_another_owners_pod_by_a_pass_at_most() -> None:
    due = DueTimes()
    pods = _pods(due, 1000, 100, 0.0, "hostile-")  # 5 s of looks, all due at once
    pods |= _pods(due, 2000, 1, 0.6, "victim-")
    cost = dict.fromkeys(pods, 0.05)
    seen = _loop(due, pods, cost, 10.0)
    # Before: a pass took every pod due, so the victim waited for the 5 s of the hostile looks.
    assert seen["victim-0"] <= 0.6 + PASS_SECONDS + 2 * 0.05, seen["victim-0"]
    assert len(seen) == 101, "every hostile pod is looked at too"
    assert max(seen.values()) <= 5.0 + 0.05 + 0.01, "no time wasted: the hostile looks end when they would have"


def test_one_owners_catch_up_of_ten_thousand_pods_runs_at_full_speed_in_due_order() -> None:
    due = DueTimes()
    pods = _pods(due, 0, 10_000, 0.0, "dead-")
    seen = _loop(due, pods, dict.fromkeys(pods, 0.001), 20.0)
    assert len(seen) == 10_000 and max(seen.values()) <= 10.0 + 0.01
    assert sorted(seen, key=seen.__getitem__) == list(pods), "in the order they came due"


def test_a_pod_set_aside_and_scheduled_anew_is_looked_at_once() -> None:
    due = DueTimes()
    pods = _pods(due, 1, 20, 0.0, "a-")
    clock, looks = _Clock(), []
    passes = Passes(due, clock=clock)

    def tend(pod: Pod) -> None:
        looks.append(pod.name)
        clock.now += 0.05
        if pod.name == "a-0":
            due.set("a-5", clock.now)  # (an idle watch's event, say) while a-5 waits aside

    while len(looks) < 20 and clock.now < 5:
        if not passes.run(clock.now, pods, tend, lambda: False):
            clock.now = max(clock.now + 0.001, min(due.next_due(), 5.0))
    assert sorted(looks) == sorted(pods) and len(looks) == 20, looks
