"""A pod directory and the files in it: another user's or a group-writable one refused (and shown so), planted
symlinks and hard links never followed, root reading a user's pod without writing as its owner."""

from __future__ import annotations

import json
import os

import pytest

from harness import Pushgateway, metric_name, wait_for
from runai.reporter import ConfigError, Reporter
from runai.reporter.spool import SpoolWriter, checkpoint_path
from tests._helpers import uploader_cli
from tests._users import ATTACKER, VICTIM, _forged_spool, needs_root

pytestmark = pytest.mark.e2e


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


def test_planted_symlinks_for_checkpoints_and_spool_files_are_not_followed(
    tmp_path, env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
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
def test_a_planted_lock_or_log_symlink_is_not_followed(
    tmp_path, env: dict[str, str], pod: str, spool_dir: str, planted: str
) -> None:
    pod_dir = os.path.join(spool_dir, pod)
    writer = SpoolWriter(pod_dir, pod)
    writer.write_metric("real", 1.0)
    writer.close()
    target = _precious(tmp_path, planted)
    os.symlink(target, os.path.join(pod_dir, planted))
    # `run` opens the log and then the lock; `recover` takes the lock.
    done = uploader_cli(
        {**env, "reporterRetryTimeout": "1"},
        "run" if planted == "uploader.log" else "recover",
        "--timeout" if planted == "uploader.lock" else "--push-interval",
        "1",
    )
    assert _unchanged(target), f"the uploader wrote through {planted}"
    assert "symlink" in done.stderr and planted in done.stderr, done.stderr
    # A planted log costs only the log (`run` logs to stderr and delivers); a planted lock stops the uploader.
    assert done.returncode == (0 if planted == "uploader.log" else 1), done.stderr


def _spool_with(pod_dir: str, pod: str, count: int) -> None:
    writer = SpoolWriter(pod_dir, pod)
    for i in range(count):
        writer.write_metric("pending", float(i))
    writer.close()


def test_a_pod_directory_made_group_writable_is_shown_refused_not_hidden(
    env: dict[str, str], spool_dir: str, pod: str
) -> None:
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
    env: dict[str, str], spool_dir: str, pod: str, gateway: Pushgateway
) -> None:
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
def test_root_recovering_a_users_pod_never_writes_through_a_planted_hard_link(
    tmp_path, env: dict[str, str], spool_dir: str, pod: str
) -> None:
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


@needs_root
def test_the_agent_never_lists_a_directory_swapped_in_for_a_pod_it_delivers(
    gateway: Pushgateway, start_agent, spool_dir: str, pod: str, tmp_path
) -> None:
    from tests._helpers import dead_job

    pod_dir = os.path.join(spool_dir, pod)
    writer = SpoolWriter(pod_dir, pod)  # a live writer whose job started no uploader: the agent delivers it
    try:
        writer.write_metric("real", 1.0)
        agent = start_agent(gateway.address, "--grace-seconds=0")
        wait_for(lambda: gateway.value(pod, metric_name("real")) == 1.0, 15, "the agent delivering the pod")
        private = tmp_path / "private"  # another user's private directory, which root can read
        os.mkdir(private, 0o700)
        (private / "w1-secretname.jsonl").write_bytes(_forged_spool(pod, "forged", 666.0))
        for path in (private, private / "w1-secretname.jsonl"):
            os.chown(path, VICTIM, VICTIM)
        os.rename(pod_dir, f"{pod_dir}.moved")
        os.symlink(private, pod_dir)  # the pod's owner swaps a symlink in for its directory
        wait_for(lambda: f"cannot list {pod_dir}" in agent.stderr(), 10, "the delivery's listing refused")
        for later in (f"{pod}-later0", f"{pod}-later1"):  # the agent's loop, and the delivery's polls, go on
            dead_job(spool_dir, later, 2)
            wait_for(lambda name=later: gateway.value(name, metric_name("loss")) == 1, 15, "a later pod")
        log = agent.stderr()
        assert "secretname" not in log, "the agent listed another user's directory through a swapped symlink"
        assert log.count(f"cannot list {pod_dir}") == 1, "a listing failing every poll is logged once a minute"
        assert gateway.value(pod, metric_name("forged")) is None
    finally:
        writer.close()
