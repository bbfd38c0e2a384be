"""Recovery that unblocks: ``recover --take-over`` stops a pod's live uploader once the job's writers are gone
(SIGTERM, then its lock within the timeout) and delivers with the receivers it was given; without it, the "an
uploader is delivering it" message names the option and the pid. Against a real job, its real uploader retrying a
dead URL, and a real Pushgateway."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import Pushgateway, free_port, job_env, metric_name, uploader_pids, wait_for
from runai.reporter.spool import holder_pid, lock_holders
from tests._helpers import recover

pytestmark = pytest.mark.e2e

# Reports against a dead gateway, says so, waits for its stdin to close, then finishes (its uploader goes on
# retrying for reporterRetryTimeout: 600 s).
_JOB = """
import sys
from runai.reporter import Reporter
r = Reporter()
for i in range(10):
    r.reportMetric('loss', float(i))
print('reported', flush=True)
sys.stdin.read()
print(r.finish(timeout=0.5), flush=True)
"""


def test_take_over_stops_a_stuck_uploader_once_the_job_is_gone(
    env: dict[str, str], gateway: Pushgateway, spool_dir: str, pod: str, tmp_path
) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    dead = f"127.0.0.1:{free_port()}"  # nothing listens: every push is refused
    job = subprocess.Popen(
        [sys.executable, "-c", _JOB],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=job_env(**{**env, "reporterGatewayURL": dead, "reporterRetryTimeout": "600"}),
    )
    try:
        assert job.stdout is not None and job.stdout.readline() == "reported\n"
        uploader = wait_for(lambda: holder_pid(pod_dir), 30, "the job's uploader")
        assert lock_holders(pod_dir) == {uploader}  # the pid its lock file names is the kernel's holder

        # While the job runs, its uploader is needed: --take-over refuses, and says why.
        alive = recover(env, "--take-over", "--timeout", "0.5")
        assert alive.returncode == 1
        assert "its job is still running (1 writers alive)" in alive.stderr, alive.stderr
        assert holder_pid(pod_dir) == uploader
    finally:
        out, _ = job.communicate("", timeout=60)  # the job finishes: its writer is gone
    assert out.strip().endswith("False")  # nothing reached the dead gateway

    # Its uploader goes on retrying the dead URL. recover without the option waits, then names it and the pid.
    busy = recover(env, "--timeout", "0.5")
    assert busy.returncode == 1
    assert f"an uploader (pid {uploader}) is delivering it" in busy.stderr
    assert f"an uploader (pid {uploader}) is still delivering it after 0.5 s" in busy.stderr
    assert "--take-over" in busy.stderr and "try again later" not in busy.stderr

    taken = recover(env, "--take-over")
    assert taken.returncode == 0, taken.stderr
    assert f"sent SIGTERM to its uploader (pid {uploader})" in taken.stderr
    assert f"pod {pod}: delivered 10 reports" in taken.stdout
    assert gateway.value(pod, metric_name("loss")) == 9
    wait_for(lambda: not uploader_pids(str(tmp_path)), 15, "the stopped uploader to be gone")


def test_recover_that_gives_up_says_what_to_do_next(env: dict[str, str], spool_dir: str, pod: str) -> None:
    from tests._helpers import dead_job

    dead_job(spool_dir, pod, 5)
    url = f"127.0.0.1:{free_port()}"
    done = recover({**env, "reporterGatewayURL": url}, "--timeout", "0.5")
    assert done.returncode == 1
    line = next(line for line in done.stderr.splitlines() if line.startswith(f"runai-uploader: pod {pod}:"))
    assert f"gateway http://{url} unreachable for 0.5 s" in line and "5 reports still pending" in line
    assert "check the URL" in line and "run this again once it is up" in line and "runai-uploader status" in line
    # Never "run `runai-uploader recover`": the command just run.
    assert "runai-uploader recover" not in done.stderr


def test_cli_errors_name_the_option_as_well_as_the_variable(env: dict[str, str]) -> None:
    no_pod = recover({**env, "podUUID": ""})
    assert no_pod.returncode == 2
    assert "podUUID is not set and no --pod-uuid (or --all) was given" in no_pod.stderr
    no_receiver = recover({**env, "reporterGatewayURL": ""})
    assert "reporterGatewayURL is not set and no --gateway was given" in no_receiver.stderr
    assert "set reporterRemoteWriteURL (or --remote-write)" in no_receiver.stderr
    bad = recover(env, "--pod-uuid=../x")
    assert bad.stderr.startswith("runai-uploader: error: --pod-uuid='../x' cannot be used as a directory name")


def test_a_lock_on_another_file_system_with_the_same_inode_is_no_holder(tmp_path: Path) -> None:
    # An inode number alone names a file on every file system: a pod's owner could name in its lock file the pid of
    # any process holding an flock on an inode of the same number elsewhere, and have root's --take-over signal it.
    mounts = [tmp_path / "a", tmp_path / "b"]
    for where in mounts:
        where.mkdir()
        if (
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True
            ).returncode
            != 0
        ):
            for mounted in mounts[: mounts.index(where)]:
                subprocess.run(["umount", str(mounted)], check=True)
            pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        pod_dir = mounts[0] / "pod"
        pod_dir.mkdir(mode=0o700)
        lock_fd = os.open(pod_dir / "uploader.lock", os.O_CREAT | os.O_RDWR, 0o600)
        inode = os.fstat(lock_fd).st_ino
        os.close(lock_fd)
        other = -1
        for i in range(1000):  # a fresh tmpfs numbers its inodes in order: the same number comes soon
            fd = os.open(mounts[1] / f"daemon{i}.lock", os.O_CREAT | os.O_RDWR, 0o600)
            if os.fstat(fd).st_ino == inode:
                other = fd
                break
            os.close(fd)
        assert other >= 0, f"no file of inode {inode} on the second tmpfs"
        fcntl.flock(other, fcntl.LOCK_EX)
        try:
            assert lock_holders(str(pod_dir)) == set()
        finally:
            os.close(other)
    finally:
        for where in mounts:
            subprocess.run(["umount", "-l", str(where)], check=True)
