"""Who may own the spool root (issue 10's local attacks, tried for real with a second and a third uid):
the shared temp fallback taken over, a symlink on its path. A shared volume's are test_spool_root_volume.py's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Iterator

import pytest

from harness import REPO, Pushgateway, job_env, metric_name, uploader_pids, wait_for
from runai.reporter import ConfigError, Reporter
from tests._users import ATTACKER, SETPRIV, VICTIM, _as_attacker, _everything_under, _forged_spool, _venv, needs_root

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def world_python() -> Iterator[str]:
    """A Python with this checkout's packages and their dependencies that any uid can run.

    The test venv, and the checkout itself, may sit under /root, where another uid cannot read.
    """
    base = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
    path = tempfile.mkdtemp(prefix="runai-world-python-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        python = _venv(os.path.join(path, "venv"), base, "prometheus_client>=0.25", "watchdog>=4")
        site = subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            text=True,
            capture_output=True,
            timeout=30,
        ).stdout.strip()
        for package in ("runai", "uploader"):
            shutil.copytree(
                os.path.join(REPO, package), os.path.join(site, package), ignore=shutil.ignore_patterns("__pycache__")
            )
        subprocess.run(["chmod", "-R", "a+rX", path], check=True, timeout=30)
        yield python
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as(
    uid: int,
    python: str,
    code: str,
    *args: str,
    env: dict[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """Run Python *code* as *uid* (group too, no supplementary groups), in a fresh interpreter."""
    assert SETPRIV is not None
    return subprocess.Popen(
        [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", python, "-c", code, *args],
        env=env if env is not None else job_env(),
        text=True,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _run_as(uid: int, python: str, code: str, *args: str) -> None:
    proc = _as(uid, python, code, *args)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


VICTIM_JOB = """
import sys
from runai.reporter import ConfigError, Reporter
try:
    reporter = Reporter()
except ConfigError as exc:
    print("REFUSED", exc, flush=True)
    sys.exit(0)
reporter.reportMetric("real", 1.0)
print("READY", reporter.settings.pod_dir, flush=True)
sys.stdin.readline()  # the attacker acts now
reporter.reportMetric("real", 2.0)
print("FINISHED", reporter.finish(timeout=5), flush=True)
"""

# The attacker owns the spool root, so may rename the victim's pod directory away and put their own in its
# place: a forged spool (pushed with the victim's credentials) and symlinks to the victim's files.
SWAP_POD_DIR = """
import os, sys
pod_dir, forged, secret = sys.argv[1:4]
os.rename(pod_dir, pod_dir + ".stash")
os.mkdir(pod_dir)
os.chmod(pod_dir, 0o777)
with open(os.path.join(pod_dir, "w1-ffffffff.jsonl"), "wb") as f:
    f.write(bytes.fromhex(forged))
for name in (".w1-ffffffff.ckpt.tmp", "uploader.log", "uploader.lock"):
    os.symlink(secret, os.path.join(pod_dir, name))
"""


@needs_root
def test_another_user_cannot_take_over_the_shared_temp_spool(
    shared_tmp: str, world_python: str, gateway: Pushgateway, pod: str
) -> None:
    # The victim keeps a file of their own; the attacker cannot read it, only point symlinks at it.
    home = os.path.join(shared_tmp, "victim-home")
    os.mkdir(home, 0o700)
    secret = os.path.join(home, "notes.txt")
    with open(secret, "w") as f:
        f.write("precious\n")
    os.chown(home, VICTIM, VICTIM)
    os.chown(secret, VICTIM, VICTIM)
    # Before the victim's first job, the attacker creates the victim's fallback spool root, open to all.
    root = os.path.join(shared_tmp, f"runai-reporter-{VICTIM}")
    _run_as(ATTACKER, world_python, "import os, sys; os.mkdir(sys.argv[1]); os.chmod(sys.argv[1], 0o777)", root)

    # No writable home: the reporter falls back to <TMPDIR>/runai-reporter-<uid>.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("reporter") and k not in ("XDG_STATE_HOME", "PYTHONPATH")
    }
    env.update(HOME="/nonexistent", TMPDIR=shared_tmp, podUUID=pod, reporterGatewayURL=gateway.address)
    job = _as(VICTIM, world_python, VICTIM_JOB, env=env, stdin=subprocess.PIPE)
    assert job.stdout is not None and job.stdin is not None
    first = job.stdout.readline()
    if first.startswith("READY"):  # not refused: the attack goes on, as it did before the fix
        pod_dir = first.split(" ", 1)[1].strip()
        wait_for(lambda: gateway.value(pod, metric_name("real")) == 1.0, 15, "the victim's first report")
        _run_as(ATTACKER, world_python, SWAP_POD_DIR, pod_dir, _forged_spool(pod, "forged", 666.0).hex(), secret)
        job.stdin.write("\n")
        job.stdin.flush()
    out, err = job.communicate(timeout=60)

    def intact() -> bool:
        with open(secret) as f:
            return f.read() == "precious\n"

    # Whatever the victim's uploaders do, they do it before they exit (or the harm shows first).
    wait_for(
        lambda: not uploader_pids(shared_tmp) or not intact() or gateway.value(pod, metric_name("forged")),
        30,
        "the victim's uploaders to exit",
    )
    assert intact(), "the victim's file was written through a planted symlink"
    assert gateway.value(pod, metric_name("forged")) is None, "a forged value was pushed as the victim"
    assert first.startswith("REFUSED"), f"the job used a spool root another user owns: {first + out + err}"
    assert "reporterSpoolDir" in first and "mkdir -m 0700" in first
    assert os.listdir(root) == [], "the refused job wrote into the attacker's directory"


@needs_root
def test_another_users_symlink_at_the_temp_fallback_is_refused(
    shared_tmp: str, elsewhere: str, pod: str, gateway: Pushgateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before this user's first job, the attacker points this user's fallback spool root at a directory that
    # passes every check on its own: root-owned and sticky.
    link = os.path.join(shared_tmp, f"runai-reporter-{os.getuid()}")
    _as_attacker("ln", "-s", elsewhere, link)
    monkeypatch.delenv("reporterSpoolDir", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", "/proc/no-state-here")  # not writable, even by root: the temp fallback
    monkeypatch.setenv("TMPDIR", shared_tmp)
    monkeypatch.setattr(tempfile, "tempdir", None)
    with pytest.raises(ConfigError) as refused:
        Reporter(pod_uuid=pod, gateway_url=gateway.address, finish_timeout=5)
    assert "reporterSpoolDir" in str(refused.value) and link in str(refused.value), refused.value
    assert f"symlink of uid {ATTACKER}" in str(refused.value)
    assert _everything_under(elsewhere) == [], "the reporter wrote where the attacker's symlink pointed"
