"""``reporterPodDir``: the pod's own directory given directly, where the spool root is not mounted (a Kubernetes
job mounting only its pod's subdirectory at a fixed path; issue 22, point 6). Checked as a pod directory under the
root is; its files go out under podUUID, whatever the directory's name."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from harness import REPO, Pushgateway, metric_name, parameter_name
from runai.reporter import ConfigError, Reporter
from runai.reporter.settings import command_line, load_settings, recover_command
from runai.reporter.spool import SpoolWriter
from tests._helpers import uploader_cli
from tests._users import ATTACKER, SETPRIV, VICTIM, _forged_spool, needs_root
from uploader.cli import _parser
from uploader.cli._common import command_settings


@pytest.fixture
def own_dir(tmp_path: os.PathLike[str]) -> str:
    """A pod directory whose name is not the pod's, as a job's fixed mountPath is."""
    path = os.path.join(str(tmp_path), "mnt", "runai-reporter")
    os.makedirs(path, mode=0o700)
    return path


def _env(pod: str, own_dir: str, gateway_url: str = "http://127.0.0.1:9") -> dict[str, str]:
    # reporterSpoolDir as a ConfigMap gives it: the node's root, not there (not mounted) in the job.
    return {"podUUID": pod, "reporterPodDir": own_dir, "reporterSpoolDir": "/nonexistent/runai-reporter",
            "reporterGatewayURL": gateway_url}  # fmt: skip


def test_the_pod_dir_given_is_the_pods_directory_and_travels_to_the_uploader(own_dir: str, pod: str) -> None:
    settings = load_settings(environ=_env(pod, own_dir))
    assert settings.pod_dir == own_dir and settings.spool_dir == "/nonexistent/runai-reporter"
    argv = command_line(settings)
    assert f"--pod-dir={own_dir}" in argv
    args = _parser().parse_args(["run", *argv])
    assert command_settings(args).pod_dir == own_dir
    # Unset, nothing changes: the pod's directory under the root, and no --pod-dir on the uploader's argv.
    under_root = {k: v for k, v in _env(pod, own_dir).items() if k != "reporterPodDir"}
    plain = load_settings(environ=under_root)
    assert plain.pod_dir == os.path.join("/nonexistent/runai-reporter", pod)
    assert not any(a.startswith("--pod-dir") for a in command_line(plain))
    # A message's commands name the directory given, not a root it is not under.
    command = recover_command(settings.spool_dir, pod, "http://gw:9091", pod_dir=settings.own_pod_dir)
    assert f"--pod-dir={own_dir}" in command and "--spool-dir" not in command


def test_the_agent_and_recover_all_ignore_one_pods_directory(
    own_dir: str, pod: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _env(pod, own_dir).items():
        monkeypatch.setenv(key, value)
    args = argparse.Namespace(spool_dir="/nonexistent/runai-reporter", gateway_url=None)
    assert command_settings(args, "other", one_pod=False).pod_dir == "/nonexistent/runai-reporter/other"
    assert command_settings(args, "other").pod_dir == own_dir


def test_a_pod_dir_that_is_not_private_names_the_init_container_fix(own_dir: str, pod: str) -> None:
    os.chmod(own_dir, 0o750)  # as a kubelet makes a missing subPath directory (root's, here this test's uid)
    with pytest.raises(ConfigError) as refused:
        load_settings(environ=_env(pod, own_dir))
    message = str(refused.value)
    assert message.startswith("reporterPodDir: ") and own_dir in message and "init container" in message
    with pytest.raises(ConfigError, match="file system's root"):
        load_settings(environ=_env(pod, "/"))


@needs_root
def test_a_pod_dir_of_another_uid_is_refused_for_writing(own_dir: str, pod: str) -> None:
    os.chown(own_dir, VICTIM, VICTIM)
    with pytest.raises(ConfigError, match=f"reporterPodDir: .*belongs to uid {VICTIM}"):
        load_settings(environ=_env(pod, own_dir))
    assert load_settings(environ=_env(pod, own_dir), for_writing=False).pod_dir == own_dir  # root reads it


@needs_root
@pytest.mark.e2e
@pytest.mark.parametrize("owner, mode", [(0, 0o750), (VICTIM, 0o700)], ids=["kubelets-subpath-dir", "another-uid"])
def test_a_pod_dir_this_uid_cannot_open_is_refused_naming_the_fix(
    shared_tmp: str, pod: str, owner: int, mode: int
) -> None:
    # As the job runs: not root. The kubelet's own subPath directory (no init container, or its uid arguments not
    # the pod's runAsUser), or another uid's: reports would all be lost, with only the writer's warnings.
    own_dir = os.path.join(shared_tmp, "runai-reporter")
    os.mkdir(own_dir, mode)
    os.chown(own_dir, owner, owner)
    check = (
        "from runai.reporter.settings import load_settings, ConfigError\n"
        "try:\n    load_settings()\nexcept ConfigError as exc:\n    print(exc)\nelse:\n    print('accepted')\n"
    )
    env = {**os.environ, **_env(pod, own_dir), "PYTHONPATH": REPO}
    done = subprocess.run(
        [SETPRIV, f"--reuid={ATTACKER}", f"--regid={ATTACKER}", "--clear-groups", sys.executable, "-c", check],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    message = done.stdout.strip()
    assert message.startswith(f"reporterPodDir: this user (uid {ATTACKER}) cannot open {own_dir!r}"), done
    assert f"uid {owner}'s, mode {mode:04o}" in message and "init container" in message, message


def test_a_pod_dir_holding_another_pods_spool_is_refused(own_dir: str, pod: str) -> None:
    with open(os.path.join(own_dir, "w1-ffffffff.jsonl"), "wb") as f:
        f.write(_forged_spool("another-pod", "loss", 1.0))
    with pytest.raises(ConfigError) as refused:
        load_settings(environ=_env(pod, own_dir))
    assert "not this pod's own directory" in str(refused.value) and "another-pod" in str(refused.value)


@pytest.mark.e2e
def test_a_job_writing_through_its_pod_dir_is_delivered_under_its_pod_by_its_own_uploader(
    own_dir: str, pod: str, gateway: Pushgateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in _env(pod, own_dir, gateway.address).items():
        monkeypatch.setenv(key, value)
    reporter = Reporter()
    reporter.reportParameter("optimizer", "adam")
    reporter.reportMetric("loss", 0.5)
    assert reporter.finish(timeout=30)
    # Under podUUID, though the directory is named runai-reporter: its headers name the pod, not the directory.
    assert gateway.value(pod, metric_name("loss")) == 0.5
    assert gateway.value(pod, parameter_name("optimizer")) == 1.0
    assert not os.path.exists("/nonexistent/runai-reporter")


@pytest.mark.e2e
def test_recover_and_history_take_the_pod_dir(own_dir: str, pod: str, gateway: Pushgateway) -> None:
    writer = SpoolWriter(own_dir, pod)
    writer.write_metric("left", 3.0)
    writer.close()
    with open(os.path.join(own_dir, "w2-ffffffff.jsonl"), "wb") as f:
        f.write(_forged_spool("another-pod", "forged", 666.0))  # planted later: never sent as this pod
    env = {"reporterSpoolDir": "/nonexistent/runai-reporter"}
    shown = uploader_cli(env, "history", f"--pod-dir={own_dir}", f"--pod-uuid={pod}", "--csv")
    assert shown.returncode == 0 and f",{pod}" in shown.stdout and "left" in shown.stdout, shown.stderr
    done = uploader_cli(env, "recover", f"--pod-dir={own_dir}", f"--pod-uuid={pod}", f"--gateway={gateway.address}")
    assert done.returncode == 0, done.stderr
    assert gateway.value(pod, metric_name("left")) == 3.0
    assert gateway.value(pod, metric_name("forged")) is None and "names pod 'another-pod'" in done.stderr
    refused = uploader_cli(env, "recover", "--all", f"--pod-dir={own_dir}", f"--gateway={gateway.address}")
    assert refused.returncode == 2 and "--pod-dir is one pod's directory" in refused.stderr
