"""The uploader's schedule: push timing, backoff with jitter, and the give-up rule, on made-up times."""

from __future__ import annotations

import math

from uploader.delivery.schedule import Schedule


def test_values_wait_out_the_push_interval_unless_flushed() -> None:
    schedule = Schedule(push_interval=1.0)
    assert schedule.push_at(flush=False) == 0.0  # nothing pushed yet: at once
    assert schedule.succeeded(10.0, pushed=True) is None
    assert schedule.push_at(flush=False) == 11.0
    assert schedule.push_at(flush=True) == 0.0  # end-of-stream, a dead writer, recovery: at once
    assert schedule.quiet_at() == 11.0


def test_a_commit_without_values_does_not_restart_the_interval() -> None:
    schedule = Schedule(push_interval=1.0)
    schedule.succeeded(10.0, pushed=True)
    schedule.succeeded(10.5, pushed=False)
    assert schedule.push_at(flush=False) == 11.0


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    schedule = Schedule(backoff=(0.1, 5.0))
    delays = [schedule.failed(100.0) - 100.0 for _ in range(12)]
    for failures, delay in enumerate(delays, start=1):
        full = min(5.0, 0.1 * 2.0 ** (failures - 1))
        assert full * 0.5 <= delay <= full
    assert schedule.failures == 12 and schedule.failing_since == 100.0
    # A flush does not skip the backoff.
    assert schedule.push_at(flush=True) == schedule.next_try > 100.0


def test_success_ends_the_outage_and_says_how_long_it_was() -> None:
    schedule = Schedule(backoff=(0.1, 5.0))
    schedule.failed(10.0)
    schedule.failed(12.0)
    assert schedule.failing_for(13.0) == 3.0
    assert schedule.succeeded(14.5, pushed=True) == 4.5
    assert schedule.failures == 0 and schedule.failing_since is None and schedule.next_try == 0.0
    assert schedule.failing_for(20.0) == -math.inf


def test_gives_up_only_after_the_retry_timeout_and_once_no_writer_is_alive() -> None:
    schedule = Schedule(retry_timeout=600.0)
    assert not schedule.gives_up(1e9, writers_alive=False)  # never failed
    schedule.failed(0.0)
    assert not schedule.gives_up(599.0, writers_alive=False)
    assert not schedule.gives_up(10_000.0, writers_alive=True)  # a live job must not lose its uploader
    assert schedule.gives_up(600.0, writers_alive=False)


def test_liveness_and_fsync_timers() -> None:
    schedule = Schedule(poll_interval=0.5, fsync_interval=2.0)
    assert schedule.liveness_due(0.0) and not schedule.liveness_due(0.4) and schedule.liveness_due(0.5)
    assert schedule.fsync_due(0.0) and not schedule.fsync_due(1.9) and schedule.fsync_due(2.0)
    assert not Schedule(fsync_interval=None).fsync_due(100.0)


def test_sleep_is_bounded_by_the_poll_interval_and_the_next_fsync() -> None:
    schedule = Schedule(poll_interval=0.5, fsync_interval=2.0)
    assert schedule.sleep(0.0, math.inf, writers_alive=False) == 0.5
    assert schedule.sleep(0.0, 0.2, writers_alive=False) == 0.2
    assert schedule.sleep(1.0, 0.2, writers_alive=False) == 0.0  # overdue: no sleep
    schedule.fsync_due(0.0)  # the next fsync at 2.0
    assert schedule.sleep(1.75, math.inf, writers_alive=True) == 0.25
    assert schedule.sleep(1.75, math.inf, writers_alive=False) == 0.5  # no writer: nothing grows
