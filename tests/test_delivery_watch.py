"""The Reporter's relay of the uploader log (runai.reporter._health): a garbled line costs a tick little.

Unit tests: a log file written here, read by a DeliveryWatch; no uploader, no receiver.
"""

from __future__ import annotations

import logging
import os
import time

import pytest

from runai.reporter._health import DeliveryWatch
from runai.reporter.spool import LOG_NAME

_FAILING = "; retrying with backoff, nothing is lost"


def _append(pod_dir: str, line: str) -> None:
    with open(os.path.join(pod_dir, LOG_NAME), "a") as f:
        f.write(line + "\n")


@pytest.mark.parametrize("who", ["something", "the gateway"])
def test_a_64_kb_hostile_failure_line_is_relayed_cut_short_without_quadratic_regex_work(
    tmp_path: os.PathLike[str], caplog: pytest.LogCaptureFixture, who: str
) -> None:
    caplog.set_level(logging.INFO, logger="runai")
    pod_dir = str(tmp_path)
    _append(pod_dir, "")
    watch = DeliveryWatch(pod_dir)
    # A run of "a." under the 64 KiB read per tick: before, the URL pattern tried a scheme from each "a" to the
    # end of the run (quadratic: seconds), and the whole 64 KB was relayed.
    run = "a." * 16_000  # twice: 64 KB
    _append(
        pod_dir, f"2026-01-01 00:00:00,000 WARNING pid=1 uploader.delivery.push: {who} {run} (http://{run}){_FAILING}"
    )
    started = time.perf_counter()
    watch.poll()
    assert time.perf_counter() - started < 0.5  # generous: the work is now linear in 300 characters
    assert watch.last_cause is not None and len(watch.last_cause) <= 400
    warned = [r.getMessage().replace(pod_dir, "") for r in caplog.records if "delivery is failing" in r.getMessage()]
    assert len(warned) == 1 and len(warned[0]) <= 500, warned
    _append(pod_dir, f"2026-01-01 00:00:01,000 INFO pid=1 uploader.delivery.push: {who} is reachable again after {run}")
    watch.poll()
    resumed = [r.getMessage() for r in caplog.records if "delivery resumed" in r.getMessage()]
    assert len(resumed) == 1 and len(resumed[0]) <= 400, resumed
