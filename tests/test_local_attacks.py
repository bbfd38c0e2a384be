"""Local attacks and configuration traps (issue 10, points 4, 13, 14, 15, 17), tried for real: a second
and a third uid (``setpriv``), planted symlinks, a stray ``uploader.py``, a podUUID the file system
cannot hold, and prometheus_client pinned to the oldest release setup.py allows."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from typing import Iterator

import pytest

from runai.reporter import ConfigError, Reporter
from runai.reporter.spool import checkpoint_path
from runai.reporter.spool import SpoolWriter, encode_end, encode_header, encode_metric
from harness import REPO, Pushgateway, job_env, kill_uploaders, metric_name, uploader_pids, wait_for
from tests._helpers import uploader_cli

VICTIM, ATTACKER = 54321, 54322  # uids with no account: setpriv needs none
SETPRIV = shutil.which("setpriv")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or SETPRIV is None,
                                reason="a second uid needs root and setpriv (util-linux)")


_NO_NETWORK = re.compile(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
                         r"ProxyError|ConnectTimeout|Could not fetch URL|No matching distribution found")


def _venv(path: str, base_python: str, *requirements: str) -> str:
    """A clean virtual environment at *path* holding *requirements*: its python (skips if pip has no network)."""
    subprocess.run([base_python, "-m", "venv", path], check=True, timeout=60)
    python = os.path.join(path, "bin", "python")
    pip = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
                         text=True, capture_output=True, timeout=120)
    if pip.returncode != 0 and _NO_NETWORK.search(pip.stdout + pip.stderr):
        pytest.skip(f"pip cannot reach a package index to install {' '.join(requirements)}: "
                    f"{(pip.stdout + pip.stderr).strip().splitlines()[-1]}")
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return python


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


def _forged_spool(pod: str, name: str, value: float) -> bytes:
    """A whole, valid spool file for *pod* holding one metric."""
    return encode_header("f" * 32, pod, 1) + encode_metric(1, 1, name, value) + encode_end(2, 2)


@pytest.fixture
def shared_tmp() -> Iterator[str]:
    """A world-writable sticky directory, as /tmp is: the TMPDIR of every user in the attack."""
    path = tempfile.mkdtemp(prefix="runai-shared-", dir="/tmp")
    os.chmod(path, 0o1777)
    yield path
    kill_uploaders(path)
    shutil.rmtree(path, ignore_errors=True)


# -- 14: the shared temp fallback taken over by another user ---------------------------------------------------

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


def test_a_pod_directory_another_user_made_is_refused(env: dict[str, str], spool_dir: str, pod: str) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    os.mkdir(pod_dir, 0o755)
    os.chown(pod_dir, ATTACKER, ATTACKER)
    with pytest.raises(ConfigError) as refused:
        Reporter()
    assert "reporterSpoolDir" in str(refused.value) and pod_dir in str(refused.value)
    assert os.stat(pod_dir).st_mode & 0o777 == 0o755 and os.listdir(pod_dir) == []


def _precious(tmp_path, name: str) -> str:
    path = str(tmp_path / name)
    with open(path, "w") as f:
        f.write(f"precious {name}\n")
    return path


def _unchanged(path: str) -> bool:
    with open(path) as f:
        return f.read() == f"precious {os.path.basename(path)}\n"


def test_planted_symlinks_for_checkpoints_and_spool_files_are_not_followed(tmp_path, env: dict[str, str],
                                                                            gateway: Pushgateway, pod: str,
                                                                            spool_dir: str) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    writer = SpoolWriter(pod_dir, pod)
    writer.write_metric("real", 7.0)
    writer.close()
    name = os.path.basename(writer.path)
    checkpoint = checkpoint_path(writer.path)
    ckpt_target, tmp_target = _precious(tmp_path, "ckpt"), _precious(tmp_path, "ckpt-tmp")
    os.symlink(ckpt_target, checkpoint)
    os.symlink(tmp_target, os.path.join(pod_dir, f".{os.path.basename(checkpoint)}.tmp"))
    # A "spool file" that is a symlink to a forged spool somewhere else.
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(_forged_spool(pod, "forged", 666.0))
    os.symlink(forged, os.path.join(pod_dir, "w1-ffffffff.jsonl"))

    done = uploader_cli(env, "recover", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert gateway.value(pod, metric_name("real")) == 7.0
    assert gateway.value(pod, metric_name("forged")) is None, "a symlinked spool file was pushed"
    assert _unchanged(ckpt_target) and _unchanged(tmp_target), "a checkpoint was written through a symlink"
    assert not os.path.islink(checkpoint) and json.loads(open(checkpoint).read())["offset"] == writer.offset
    assert name in os.listdir(pod_dir)


@pytest.mark.parametrize("planted", ["uploader.lock", "uploader.log"])
def test_a_planted_lock_or_log_symlink_is_not_followed(tmp_path, env: dict[str, str], pod: str, spool_dir: str,
                                                      planted: str) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    writer = SpoolWriter(pod_dir, pod)
    writer.write_metric("real", 1.0)
    writer.close()
    target = _precious(tmp_path, planted)
    os.symlink(target, os.path.join(pod_dir, planted))
    # `run` opens the log and then the lock; `recover` takes the lock.
    done = uploader_cli({**env, "reporterRetryTimeout": "1"}, "run" if planted == "uploader.log" else "recover",
                        "--timeout" if planted == "uploader.lock" else "--push-interval", "1")
    assert _unchanged(target), f"the uploader wrote through {planted}"
    assert "symlink" in done.stderr and planted in done.stderr, done.stderr
    # A planted log costs only the log (`run` logs to stderr and delivers); a planted lock stops the uploader.
    assert done.returncode == (0 if planted == "uploader.log" else 1), done.stderr


# -- 15: a stray uploader.py next to the training script ---------------------------------------------------------

TRAIN = """
import sys
import runai.reporter
assert "uploader" not in sys.modules, sys.modules["uploader"]
reporter = runai.reporter.Reporter()
reporter.reportMetric("with_stray_module", 5.0)
print("REPORTED", reporter.settings.pod_dir, flush=True)
print("FINISHED", reporter.finish(timeout=3), flush=True)
"""


def test_a_stray_uploader_py_next_to_the_script_does_not_break_import(tmp_path, env: dict[str, str],
                                                                     pod: str) -> None:
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "uploader.py").write_text("STRAY = True  # the user's own module, nothing to do with runai\n")
    (job_dir / "train.py").write_text(TRAIN)
    # Run as a user runs a script: its directory first on sys.path; runai found through PYTHONPATH.
    done = subprocess.run([sys.executable, "train.py"], cwd=job_dir, env=job_env(), text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "REPORTED" in done.stdout
    from runai.reporter.spool import decode, spool_file_names

    pod_dir = os.path.join(env["reporterSpoolDir"], pod)
    (name,) = spool_file_names(pod_dir)
    with open(os.path.join(pod_dir, name), "rb") as f:
        values = [r.value for r in map(decode, f.read().splitlines()) if r.name == "with_stray_module"]
    assert values == [5.0]


# -- 4 and 13: podUUIDs that cannot be a directory name or a command-line value -------------------------------


def test_a_pod_uuid_that_is_not_utf8_is_refused_at_creation(monkeypatch: pytest.MonkeyPatch,
                                                            env: dict[str, str]) -> None:
    undecodable = os.fsdecode(b"caf\xe9")  # 'caf\udce9': a lone surrogate
    with pytest.raises(ConfigError, match="pod_uuid"):
        Reporter(pod_uuid=undecodable)
    monkeypatch.setenv("podUUID", undecodable)
    with pytest.raises(ConfigError, match="podUUID"):
        Reporter()


def test_a_pod_uuid_longer_than_the_file_system_allows_is_refused(env: dict[str, str], gateway: Pushgateway,
                                                                  spool_dir: str) -> None:
    name_max = os.pathconf(spool_dir, "PC_NAME_MAX")
    with pytest.raises(ConfigError, match=f"podUUID.*at most {name_max} bytes"):
        Reporter(pod_uuid="é" * (name_max // 2 + 1))  # few characters, too many bytes
    longest = "p" * name_max
    with Reporter(pod_uuid=longest) as reporter:
        reporter.reportMetric("long_pod", 1.0)
    assert reporter.finish() is True
    assert gateway.value(longest, metric_name("long_pod")) == 1.0


def test_the_printed_recover_command_works_for_a_pod_uuid_starting_with_a_dash(env: dict[str, str],
                                                                               gateway: Pushgateway,
                                                                               spool_dir: str) -> None:
    pod = f"-{uuid.uuid4()}"
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.write_metric("dashed", 3.0)
    writer.close()
    status = json.loads(uploader_cli(env, "status", "--json").stdout)
    (command,) = [p["recover_command"] for p in status["pods"] if p["pod_uuid"] == pod]
    argv = shlex.split(command)
    assert argv[:2] == ["runai-uploader", "recover"]
    # The printed command, run for real (as `python -m uploader`, so that this checkout is what runs).
    done = subprocess.run([sys.executable, "-m", "uploader", *argv[1:]], env=job_env(), text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert gateway.value(pod, metric_name("dashed")) == 3.0


# -- 17: the oldest prometheus_client setup.py allows, pinned ----------------------------------------------------

def test_the_minimum_prometheus_client_keeps_a_space_in_the_grouping_key(tmp_path, env: dict[str, str],
                                                                         gateway: Pushgateway,
                                                                         spool_dir: str) -> None:
    with open(os.path.join(REPO, "setup.py")) as f:
        (minimum,) = re.findall(r'"prometheus_client>=([0-9.]+)"', f.read())
    python = _venv(str(tmp_path / "venv"), sys.executable, f"prometheus_client=={minimum}", "watchdog>=4")
    version = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('prometheus_client'))"],
                             text=True, capture_output=True, check=True).stdout.strip()
    assert version in (minimum, minimum + ".0")  # the pin installed that very release

    pod = f"my pod {uuid.uuid4()}"
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.write_metric("spaced", 4.0)
    writer.close()
    # A clean venv: only the pinned prometheus_client and watchdog, and this checkout's code.
    done = subprocess.run([python, "-m", "uploader", "recover", f"--pod-uuid={pod}", "--timeout", "20"],
                          env={**job_env(), "PYTHONPATH": REPO}, text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    groups = [g["labels"].get("podUUID") for g in gateway.groups()]
    assert pod.replace(" ", "+") not in groups, f"prometheus_client {minimum} sent the space as '+'"
    assert gateway.value(pod, metric_name("spaced")) == 4.0


# -- 14, follow-up: another user's entry on the spool root's path (a symlink, a swapped directory) ---------------

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


# -- 14, follow-up: a pod directory that cannot be used is shown, not hidden; root may read a user's pod ------

def _spool_with(pod_dir: str, pod: str, count: int) -> None:
    writer = SpoolWriter(pod_dir, pod)
    for i in range(count):
        writer.write_metric("pending", float(i))
    writer.close()


def test_a_pod_directory_made_group_writable_is_shown_refused_not_hidden(env: dict[str, str], spool_dir: str,
                                                                          pod: str) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    _spool_with(pod_dir, pod, 10)
    os.chmod(pod_dir, 0o2770)  # what the kubelet does to an fsGroup volume's subdirectory when it mounts it again

    text = uploader_cli(env, "status")
    assert text.returncode == 0, text.stderr
    assert f"pod {pod}: refused" in text.stdout and "2770" in text.stdout, text.stdout
    (entry,) = json.loads(uploader_cli(env, "status", "--json").stdout)["pods"]
    assert entry["pod_uuid"] == pod and "2770" in entry["refused"]

    recovered = uploader_cli(env, "recover", "--all", "--timeout", "5")
    assert recovered.returncode == 1, recovered.stdout + recovered.stderr
    assert pod in recovered.stderr and "2770" in recovered.stderr and "not fully delivered" in recovered.stderr
    # Its reports cannot be counted: the summary says so rather than "0 still pending".
    assert "the reports of 1 refused pod, not counted" in recovered.stdout, recovered.stdout
    history = uploader_cli(env, "history", f"--pod-uuid={pod}")
    assert history.returncode == 1 and "2770" in history.stderr, history.stdout + history.stderr
    with pytest.raises(ConfigError, match="2770") as refused:
        Reporter()
    # It is this user's own directory, holding their pending reports: the advice is to fix its mode, not remove it.
    assert f"chmod -R go= {pod_dir}" in str(refused.value) and "remove it" not in str(refused.value)


@needs_root
def test_root_reads_and_recovers_a_users_private_pod_directory_but_never_writes_as_its_owner(
        env: dict[str, str], spool_dir: str, pod: str, gateway: Pushgateway) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    _spool_with(pod_dir, pod, 10)
    for path in [pod_dir, *(os.path.join(pod_dir, n) for n in os.listdir(pod_dir))]:
        os.chown(path, VICTIM, VICTIM)  # a user's job left it; root (this process) looks after it

    (entry,) = json.loads(uploader_cli(env, "status", "--json").stdout)["pods"]
    assert entry["refused"] is None and entry["reports_pending"] == 10 and entry["recover_command"], entry
    history = uploader_cli(env, "history", f"--pod-uuid={pod}", "--json")
    assert history.returncode == 0 and len(json.loads(history.stdout)) == 10, history.stderr
    recovered = uploader_cli(env, "recover", f"--pod-uuid={pod}", "--timeout", "20")
    assert recovered.returncode == 0, recovered.stderr
    assert gateway.value(pod, metric_name("pending")) == 9.0
    # What root created there (the lock, the checkpoint) is the user's, so their own uploader can open it later.
    owners = {name: os.stat(os.path.join(pod_dir, name)).st_uid for name in os.listdir(pod_dir)}
    assert "uploader.lock" in owners and any(n.endswith(".ckpt") for n in owners), owners
    assert set(owners.values()) == {VICTIM}, owners
    # The writer's side stays strict: root does not write into another user's pod directory.
    with pytest.raises(ConfigError, match=f"belongs to uid {VICTIM}"):
        Reporter()


@needs_root
def test_root_recovering_a_users_pod_never_writes_through_a_planted_hard_link(tmp_path, env: dict[str, str],
                                                                              spool_dir: str, pod: str) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    _spool_with(pod_dir, pod, 3)
    # The user's "uploader.lock" is a second name of a file that is not theirs (a kernel without
    # fs.protected_hardlinks lets anyone link any file they can see); root truncates and writes the lock.
    target = _precious(tmp_path, "root-file")
    os.link(target, os.path.join(pod_dir, "uploader.lock"))
    for path in [pod_dir, *(os.path.join(pod_dir, n) for n in os.listdir(pod_dir) if n != "uploader.lock")]:
        os.chown(path, VICTIM, VICTIM)
    done = uploader_cli(env, "recover", f"--pod-uuid={pod}", "--timeout", "5")
    assert _unchanged(target), "root wrote through a hard link in a user's pod directory"
    assert done.returncode == 1 and "uploader.lock" in done.stderr and "links" in done.stderr, done.stderr
