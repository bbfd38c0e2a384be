"""Who may own the spool root (issue 10's local attacks, tried for real with a second and a third uid):
the shared temp fallback taken over, a symlink on its path, a group member's swap on a Kubernetes volume."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import Iterator

import pytest

from harness import REPO, Pushgateway, job_env, kill_uploaders, metric_name, uploader_pids, wait_for
from runai.reporter import ConfigError, Reporter
from tests._helpers import uploader_cli
from tests._users import ATTACKER, SETPRIV, VICTIM, _forged_spool, _venv, needs_root

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
        site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, text=True, capture_output=True, timeout=30).stdout.strip()
        for package in ("runai", "uploader"):
            shutil.copytree(os.path.join(REPO, package), os.path.join(site, package),
                            ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(["chmod", "-R", "a+rX", path], check=True, timeout=30)
        yield python
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as(uid: int, python: str, code: str, *args: str, env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """Run Python *code* as *uid* (group too, no supplementary groups), in a fresh interpreter."""
    assert SETPRIV is not None
    return subprocess.Popen([SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", python, "-c", code, *args],
                            env=env if env is not None else job_env(), text=True, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _run_as(uid: int, python: str, code: str, *args: str) -> None:
    proc = _as(uid, python, code, *args)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A world-writable sticky directory, as /tmp is: the TMPDIR of every user in the attack."""
    path = tempfile.mkdtemp(prefix="runai-shared-", dir="/tmp")
    os.chmod(path, 0o1777)
    yield path
    kill_uploaders(path)
    shutil.rmtree(path, ignore_errors=True)



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
def test_another_user_cannot_take_over_the_shared_temp_spool(shared_tmp: str, world_python: str,
                                                              gateway: Pushgateway, pod: str) -> None:
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
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("reporter") and k not in ("XDG_STATE_HOME", "PYTHONPATH")}
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
    wait_for(lambda: not uploader_pids(shared_tmp) or not intact() or gateway.value(pod, metric_name("forged")),
             30, "the victim's uploaders to exit")
    assert intact(), "the victim's file was written through a planted symlink"
    assert gateway.value(pod, metric_name("forged")) is None, "a forged value was pushed as the victim"
    assert first.startswith("REFUSED"), f"the job used a spool root another user owns: {first + out + err}"
    assert "reporterSpoolDir" in first and "mkdir -m 0700" in first
    assert os.listdir(root) == [], "the refused job wrote into the attacker's directory"


def test_a_group_writable_root_is_refused_and_a_private_subdirectory_works(tmp_path, env: dict[str, str],
                                                                            gateway: Pushgateway,
                                                                            pod: str) -> None:
    # A Kubernetes volume with fsGroup: root-owned, group-writable, setgid, no sticky bit.
    volume = tmp_path / "volume"
    volume.mkdir()
    os.chmod(volume, 0o2775)
    with pytest.raises(ConfigError) as refused:
        Reporter(spool_dir=str(volume))
    assert "reporterSpoolDir" in str(refused.value) and "mkdir -m 0700" in str(refused.value)
    assert os.listdir(volume) == []
    # The way out the message gives: a private subdirectory the job creates.
    private = volume / f"runai-spool-{os.getuid()}"
    private.mkdir(mode=0o700)
    with Reporter(spool_dir=str(private)) as reporter:
        reporter.reportMetric("on_volume", 1.0)
    assert reporter.finish() is True
    assert gateway.value(pod, metric_name("on_volume")) == 1.0
    # A world-writable root with the sticky bit (as /tmp) is fine too: nobody can rename what is not theirs.
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    Reporter(spool_dir=str(sticky), pod_uuid=f"{pod}-sticky").finish(timeout=10)
    assert oct(os.stat(sticky / f"{pod}-sticky").st_mode & 0o777) == oct(0o700)


def _as_attacker(*argv: str) -> None:
    """Run the command *argv* as ATTACKER (gid ATTACKER too, no other groups)."""
    assert SETPRIV is not None
    subprocess.run([SETPRIV, f"--reuid={ATTACKER}", f"--regid={ATTACKER}", "--clear-groups", *argv],
                   check=True, timeout=30, capture_output=True)


def _everything_under(path: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), path) for d, dirs, files in os.walk(path) for n in dirs + files)


@pytest.fixture
def elsewhere(shared_tmp: str) -> str:
    """A root-owned sticky directory the attacker would like the spool in (as /dev/shm is)."""
    path = os.path.join(shared_tmp, "elsewhere")
    os.mkdir(path)
    os.chmod(path, 0o1777)
    return path


@needs_root
def test_another_users_symlink_at_the_temp_fallback_is_refused(shared_tmp: str, elsewhere: str, pod: str,
                                                               gateway: Pushgateway,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
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


@pytest.fixture
def fsgroup_volume(shared_tmp: str) -> str:
    """A Kubernetes volume mounted with fsGroup: root-owned, group-writable and setgid, the attacker in the group."""
    path = os.path.join(shared_tmp, "data")
    os.mkdir(path)
    os.chown(path, 0, ATTACKER)
    os.chmod(path, 0o2775)
    return path


def _steal(volume: str, private: str, target: str) -> None:
    """The group member's move: our private subdirectory renamed away, their symlink in its place."""
    _as_attacker("mv", private, os.path.join(volume, "stolen"))
    _as_attacker("ln", "-s", target, private)


@needs_root
def test_the_kubernetes_recipe_refuses_a_group_members_swap_at_creation(fsgroup_volume: str, elsewhere: str,
                                                                        pod: str, gateway: Pushgateway) -> None:
    private = os.path.join(fsgroup_volume, f"runai-spool-{os.getuid()}")
    os.mkdir(private, 0o700)  # the documented recipe: mkdir -m 0700 -p /data/runai-spool-$(id -u)
    _steal(fsgroup_volume, private, elsewhere)
    with pytest.raises(ConfigError) as refused:
        Reporter(spool_dir=private, pod_uuid=pod, gateway_url=gateway.address, finish_timeout=5)
    assert "reporterSpoolDir" in str(refused.value) and f"symlink of uid {ATTACKER}" in str(refused.value)
    # A spool root still to be created below the attacker's symlink: refused before anything is created.
    with pytest.raises(ConfigError, match=f"symlink of uid {ATTACKER}"):
        Reporter(spool_dir=os.path.join(private, "sub"), pod_uuid=pod, gateway_url=gateway.address,
                 finish_timeout=5)
    assert _everything_under(elsewhere) == []


@needs_root
def test_the_kubernetes_recipe_never_follows_a_swap_in_the_middle_of_a_job(fsgroup_volume: str, elsewhere: str,
                                                                           pod: str, gateway: Pushgateway,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    private = os.path.join(fsgroup_volume, f"runai-spool-{os.getuid()}")
    os.mkdir(private, 0o700)
    # Small spool files: the writer starts new ones (in the pod directory, resolved again) as the job goes on.
    reporter = Reporter(spool_dir=private, pod_uuid=pod, gateway_url=gateway.address, finish_timeout=5,
                        spool_file_bytes=4096)
    try:
        reporter.reportMetric("before_swap", 1.0)
        wait_for(lambda: gateway.value(pod, metric_name("before_swap")) == 1.0, 15, "the first report")
        _steal(fsgroup_volume, private, elsewhere)

        def next_spool_file_tried() -> bool:
            for _ in range(50):
                reporter.reportMetric("after_swap", 1.0)
            # Where the writer's next spool file went: the attacker's directory, or nowhere (refused).
            return bool(_everything_under(elsewhere)) or "cannot start a new spool file" in caplog.text

        wait_for(next_spool_file_tried, 15, "the writer to start a new spool file")
    finally:
        delivered = reporter.finish(timeout=5)
    assert _everything_under(elsewhere) == [], "the reporter or its uploader wrote where the attacker pointed"
    # Nothing was steered; the job's delivery is what the swap cost (a denial of service, documented).
    assert not delivered
    assert gateway.value(pod, metric_name("before_swap")) == 1.0
    stolen = os.path.join(fsgroup_volume, "stolen", pod)
    assert all(os.lstat(os.path.join(stolen, n)).st_uid == 0 for n in os.listdir(stolen))
    # The reports are in the renamed directory, still private: recovered from there (docs/operations.md).
    done = uploader_cli({"reporterGatewayURL": gateway.address}, "recover", "--all", "--spool-dir",
                        os.path.dirname(stolen), "--timeout", "20")
    assert done.returncode == 0, done.stdout + done.stderr
    assert gateway.value(pod, metric_name("after_swap")) == 1.0
