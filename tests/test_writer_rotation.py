"""Rotation of the writer's spool file under signals and descriptor exhaustion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from harness import job_env
from runai.reporter.spool import SpoolWriter

_FINISH_IN_ROTATION = """
import json, os, signal, sys
from runai.reporter import spool

writer = spool.SpoolWriter(sys.argv[1], "pod", max_bytes=4096)
signal.signal(signal.SIGTERM, lambda *a: writer.close())  # what a handler calling finish() does
create = spool.SpoolWriter._create

def create_and_signal(self):
    out = create(self)
    if self.path:  # a rotation, not the first file: the signal lands inside _maybe_rotate
        os.kill(os.getpid(), signal.SIGTERM)
    return out

spool.SpoolWriter._create = create_and_signal
for i in range(4096):  # the 4096th report checks for rotation
    writer.write_metric("loss", float(i))
print(json.dumps({"closed": writer.closed, "fd": writer._fd, "files": [f.path for f in writer.files]}))
"""


@pytest.mark.e2e
def test_finish_from_a_signal_handler_inside_a_rotation_leaves_no_stray_file(spool_dir: str) -> None:
    pod_dir = os.path.join(spool_dir, "pod")
    done = subprocess.run(
        [sys.executable, "-c", _FINISH_IN_ROTATION, pod_dir],
        env=job_env(),
        text=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)
    assert state["closed"] and state["fd"] == -1, state
    on_disk = sorted(os.path.join(pod_dir, n) for n in os.listdir(pod_dir) if n.endswith(".jsonl"))
    assert on_disk == sorted(state["files"]), "a spool file was created after close() and never ended"
    for path in on_disk:
        with open(path, "rb") as f:
            assert json.loads(f.read().splitlines()[-1])["kind"] == "end", path


_EMFILE = """
import fcntl, os, resource, sys, time
from runai.reporter.spool import SpoolWriter

writer = SpoolWriter(sys.argv[1], "pod", max_bytes=4096)
for i in range(4096):  # a rotation check, with the file over 4096 bytes: rotated
    writer.write_metric("loss", float(i))
rotated = writer._rotated[0]
while time.monotonic() - rotated[3] < 1.0:  # the writer's own deadline for releasing it
    time.sleep(0.05)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
for i in range(4096):  # the next rotation check releases the rotated file: needs a descriptor
    writer.write_metric("loss", float(i))
for fd in held:
    os.close(fd)
for i in range(4096):  # a later pass, with descriptors to spare
    writer.write_metric("loss", float(i))
probe = os.open(rotated[1], os.O_RDONLY)
fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while the writer still holds the file
writer.close()
print("released")
"""


@pytest.mark.e2e
def test_out_of_descriptors_a_report_does_not_raise_and_the_release_is_retried(spool_dir: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EMFILE, os.path.join(spool_dir, "pod")],
        env=job_env(),
        text=True,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0 and "released" in done.stdout, done.stderr


def test_close_from_a_signal_handler_during_the_rotations_swap_leaves_no_live_file(
    spool_dir: str, pod: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() run at the last call inside a rotation (where a signal handler's finish() could run it)."""
    from runai.reporter.spool import writer as spool

    writer = SpoolWriter(os.path.join(spool_dir, pod), pod, max_bytes=4096)
    real_monotonic = time.monotonic
    fire = []

    def monotonic() -> float:
        if fire:
            fire.clear()
            writer.close()  # what a SIGTERM handler's finish() does
        return real_monotonic()

    monkeypatch.setattr(spool.time, "monotonic", monotonic)
    for _ in range(0x1000 - 1):
        writer.write_metric("m", 1.0)
    fire.append(True)
    writer.write_metric("m", 2.0)  # sequence number 4096, a rotation check: past 4096 bytes, the file rotates
    monkeypatch.undo()
    assert writer.closed and writer._fd < 0
    names = sorted(n for n in os.listdir(os.path.join(spool_dir, pod)) if n.endswith(".jsonl"))
    assert [os.path.basename(f.path) for f in writer.files] == names, (writer.files, names)
