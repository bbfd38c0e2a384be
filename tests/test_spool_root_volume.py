"""Who may own the spool root on a volume shared with other users (issue 10's local attacks, tried for real
with a second uid): a group-writable root refused, and the Kubernetes recipe (a private subdirectory on an
fsGroup volume) never following a group member's swap. The temp fallback's attacks are test_spool_root.py's."""

from __future__ import annotations

import os

import pytest

from harness import Pushgateway, metric_name, wait_for
from runai.reporter import ConfigError, Reporter
from tests._helpers import uploader_cli
from tests._users import ATTACKER, _as_attacker, _everything_under, needs_root

pytestmark = pytest.mark.e2e


def test_a_group_writable_root_is_refused_and_a_private_subdirectory_works(
    tmp_path, env: dict[str, str], gateway: Pushgateway, pod: str
) -> None:
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
def test_the_kubernetes_recipe_refuses_a_group_members_swap_at_creation(
    fsgroup_volume: str, elsewhere: str, pod: str, gateway: Pushgateway
) -> None:
    private = os.path.join(fsgroup_volume, f"runai-spool-{os.getuid()}")
    os.mkdir(private, 0o700)  # the documented recipe: mkdir -m 0700 -p /data/runai-spool-$(id -u)
    _steal(fsgroup_volume, private, elsewhere)
    with pytest.raises(ConfigError) as refused:
        Reporter(spool_dir=private, pod_uuid=pod, gateway_url=gateway.address, finish_timeout=5)
    assert "reporterSpoolDir" in str(refused.value) and f"symlink of uid {ATTACKER}" in str(refused.value)
    # A spool root still to be created below the attacker's symlink: refused before anything is created.
    with pytest.raises(ConfigError, match=f"symlink of uid {ATTACKER}"):
        Reporter(spool_dir=os.path.join(private, "sub"), pod_uuid=pod, gateway_url=gateway.address, finish_timeout=5)
    assert _everything_under(elsewhere) == []


@needs_root
def test_the_kubernetes_recipe_never_follows_a_swap_in_the_middle_of_a_job(
    fsgroup_volume: str, elsewhere: str, pod: str, gateway: Pushgateway, caplog: pytest.LogCaptureFixture
) -> None:
    private = os.path.join(fsgroup_volume, f"runai-spool-{os.getuid()}")
    os.mkdir(private, 0o700)
    # Small spool files: the writer starts new ones (in the pod directory, resolved again) as the job goes on.
    reporter = Reporter(
        spool_dir=private, pod_uuid=pod, gateway_url=gateway.address, finish_timeout=5, spool_file_bytes=4096
    )
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
    done = uploader_cli(
        {"reporterGatewayURL": gateway.address},
        "recover",
        "--all",
        "--spool-dir",
        os.path.dirname(stolen),
        "--timeout",
        "20",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert gateway.value(pod, metric_name("after_swap")) == 1.0
