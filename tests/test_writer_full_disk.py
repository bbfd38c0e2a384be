"""A full disk (a real 256 KiB tmpfs): reports are lost and counted, training and finish() go on."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from typing import Iterator

import pytest

from harness import (
    Pushgateway,
    job_env,
    kill_uploaders,
    metric_name,
    wait_for,
)
from runai.reporter import Reporter
from tests._helpers import _finish_job, _warnings, spool_records, start_job

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_disk(tmp_path) -> Iterator[str]:
    mount = str(tmp_path / "small")
    os.makedirs(mount)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", mount], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the disk-full test needs root and mount")
    yield mount
    subprocess.run(["umount", "-l", mount], check=False)


def test_a_full_disk_loses_reports_but_never_training(
    env: dict[str, str], gateway: Pushgateway, pod: str, small_disk: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    filler = os.path.join(small_disk, "filler")
    reporter = Reporter(spool_dir=small_disk)
    reporter.reportMetric("before", 1)
    wait_for(lambda: gateway.value(pod, metric_name("before")) == 1, 10, "the first push")
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # take the rest of the disk
        while os.write(fd, b"\0" * 512):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    try:
        for i in range(1000):
            reporter.reportMetric("during", i)  # never raises
        os.unlink(filler)  # space returns
        reporter.reportMetric("after", 2)
    finally:
        assert reporter.finish(timeout=20) is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("reports are being lost" in w for w in warnings) == 1  # once, not per report
    lost = [w for w in warnings if "reports were lost" in w]
    assert len(lost) == 1 and lost[0].startswith(f"{reporter._writer.lost} of ")
    assert reporter._writer.lost >= 900
    assert gateway.value(pod, metric_name("after")) == 2  # the record after space returned is whole
    names = [r.name for r in spool_records(reporter.settings.pod_dir)]
    assert names[-1] == "after" or names[-2] == "after"


FULL_DISK_JOB = """
import logging, time, runai.reporter
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
reporter = runai.reporter.Reporter()
for i in range(50_000):
    reporter.reportMetric("loss", i)
started = time.monotonic()
ok = reporter.finish(timeout=10)
print(ok, round(time.monotonic() - started, 2), reporter._writer.lost, flush=True)
"""


def test_finish_returns_on_a_full_disk(env: dict[str, str], small_disk: str, tmp_path) -> None:  # noqa: F811
    """Issue 10, point 1: close() failed to write the end record and hung on its own lock."""
    proc = start_job(FULL_DISK_JOB, job_env(**{**env, "reporterSpoolDir": small_disk}))
    try:
        out, err = _finish_job(proc, 40, "finish(timeout=10) on a full disk")
    finally:
        kill_uploaders(str(tmp_path))  # it cannot checkpoint on the full disk, so it would keep trying
    assert proc.returncode == 0, err
    ok, seconds, lost = out.split()
    assert ok == "False"
    assert float(seconds) < 12, f"finish(timeout=10) took {seconds} s"
    assert int(lost) > 0
    warnings = _warnings(err)
    assert sum("reports are being lost" in w for w in warnings) == 1, warnings  # the writer's, once
    from_finish = [w for w in warnings if "runai.reporter._finish" in w]
    assert len(from_finish) == 1, warnings
    assert "timed out" in from_finish[0] and f"{lost} more were lost" in from_finish[0]
