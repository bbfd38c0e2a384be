"""The node agent's delivery slots (uploader.agent.slots): dead pods before live ones, owners in turn, what one
owner and the live pods may hold, and a catch-up that stays linear; on made-up pods, no agent."""

from __future__ import annotations

import time

import pytest

from uploader.agent.slots import Slots, live_bound, owner_bound


def _slots(size: int, per_owner: int = 0) -> Slots:
    return Slots(size, lambda: None, per_owner)


def _take_all(slots: Slots) -> list[str]:
    """Take (and hold) every name the slots hand out now."""
    taken = []
    while (name := slots.next_queued()) is not None:
        slots.hold(name)
        taken.append(name)
    return taken


def _end(slots: Slots, *names: str) -> None:
    for name in names:
        slots.ended(name)
    assert slots.pop_ended() == list(names)


def test_the_bounds_default_to_a_quarter_of_the_slots() -> None:
    assert (owner_bound(256), live_bound(256)) == (64, 192)
    assert (owner_bound(8), live_bound(8)) == (2, 6)
    assert (owner_bound(2), live_bound(2)) == (1, 1)
    assert (owner_bound(1), live_bound(1)) == (1, 1)  # one slot: live pods must still be delivered
    assert owner_bound(8, 3) == 3 and owner_bound(8, 100) == 8


def test_dead_pods_are_taken_before_live_ones_whatever_the_order_queued() -> None:
    slots = _slots(8)
    slots.queue("live-1", 1000, live=True)
    slots.queue("live-2", 1001, live=True)
    slots.queue("dead-1", 1002, live=False)
    assert _take_all(slots) == ["dead-1", "live-1", "live-2"]


def test_one_owner_holds_at_most_its_bound_and_others_pass_its_pods() -> None:
    slots = _slots(8)  # 2 per owner
    for i in range(10):
        slots.queue(f"a-{i}", 1000, live=False)
    slots.queue("b-0", 1001, live=False)
    assert _take_all(slots) == ["a-0", "b-0", "a-1"]
    assert (slots.held, slots.held_by(1000), slots.held_by(1001)) == (3, 2, 1)
    slots.queue("c-0", 1002, live=False)  # queued after them all, taken at once: a slot is free for it
    assert _take_all(slots) == ["c-0"]
    _end(slots, "a-0")  # its owner's turn comes back
    assert _take_all(slots) == ["a-2"]


def test_owners_take_turns_so_that_one_owners_thousands_delay_nobody() -> None:
    slots = _slots(256, per_owner=256)
    for i in range(10_000):
        slots.queue(f"a-{i}", 1000, live=False)
    slots.queue("b-0", 1001, live=False)
    slots.queue("c-0", 1002, live=False)
    assert _take_all(slots)[:4] == ["a-0", "b-0", "c-0", "a-1"]


def test_live_pods_never_hold_the_slots_kept_for_dead_ones() -> None:
    slots = _slots(8)  # 2 per owner, 6 for live pods
    for owner in range(1000, 1004):
        for i in range(3):
            slots.queue(f"{owner}-{i}", owner, live=True)
    taken = _take_all(slots)
    assert len(taken) == 6 and slots.live_held == 6 and slots.held == 6
    # Owners in turn: each of the four got one before any got a second.
    assert sorted(name.split("-")[0] for name in taken[:4]) == ["1000", "1001", "1002", "1003"]
    slots.queue("dying", 1004, live=False)
    slots.queue("dying-too", 1005, live=False)
    slots.queue("third", 1006, live=False)
    assert _take_all(slots) == ["dying", "dying-too"]  # the two kept slots; the third waits for one
    _end(slots, taken[0])  # a live delivery ends: its slot goes to the dead pod waiting, not to a live one
    assert _take_all(slots) == ["third"]


def test_a_pod_queued_again_keeps_one_entry_and_a_dropped_one_is_never_handed_out() -> None:
    slots = _slots(8)
    slots.queue("was-live", 1000, live=True)
    slots.queue("gone", 1001, live=False)
    slots.queue("was-live", 1000, live=False)  # its writers died while it waited
    slots.drop("gone")
    assert _take_all(slots) == ["was-live"]
    assert slots.live_held == 0 and slots.next_queued() is None


def test_only_the_name_handed_out_can_be_held() -> None:
    slots = _slots(8)
    slots.queue("a", 1000, live=False)
    assert slots.next_queued() == "a"
    with pytest.raises(ValueError, match="not the last name handed out"):
        slots.hold("b")


def test_a_catch_up_of_one_owners_100000_pods_stays_linear() -> None:
    # 100,000 dead pods of one owner through 256 slots (64 for it): each handed out, held and ended once. A
    # quadratic walk (the owner at its bound looked at again for each pod) would take hours, not seconds.
    slots = _slots(256)
    for i in range(100_000):
        slots.queue(f"p-{i}", 0, live=False)
    started, done = time.perf_counter(), 0
    while taken := _take_all(slots):
        assert len(taken) <= 64 and slots.held_by(0) <= 64
        for name in taken:
            slots.ended(name)
        done += len(slots.pop_ended())
    assert done == 100_000
    assert time.perf_counter() - started < 10


def test_an_owner_at_its_bound_churning_pods_keeps_the_queue_small() -> None:
    import tracemalloc

    slots = _slots(8)  # 2 per owner
    for i in range(2):
        slots.queue(f"held-{i}", 1000, live=True)
    assert len(_take_all(slots)) == 2
    # Its pods made and removed while it is at its bound: each leaves a dropped entry, never handed out; they
    # must not pile up (100,000 of them kept were about 10 MB).
    tracemalloc.start()
    try:
        for i in range(100_000):
            slots.queue(f"churn-{i}", 1000, live=True)
            slots.drop(f"churn-{i}")
        grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert grown < 100_000, f"{grown} bytes kept for 100,000 dropped entries"
    slots.queue("last", 1000, live=True)
    _end(slots, "held-0")
    assert _take_all(slots) == ["last"]


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_the_per_owner_option_takes_a_whole_number_and_names_the_fix(value: str, capsys) -> None:
    from uploader.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["agent", f"--max-deliveries-per-owner={value}"])
    assert exited.value.code == 2
    assert f"{value!r} is not a whole number (0 or more)" in capsys.readouterr().err


def test_the_agents_help_shows_the_per_owner_default(capsys) -> None:
    from uploader.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["agent", "--help"])
    assert exited.value.code == 0
    assert "--max-deliveries-per-owner" in (out := capsys.readouterr().out) and "0: 25% of --max-" in out
