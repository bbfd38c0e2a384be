"""Bounded disk: spool rotation, delivered history kept under a bound, and the durability policies."""

from __future__ import annotations

import os

import pytest

from harness import Pushgateway, metric_name, uploader_pids, wait_for
from runai.reporter import ConfigError, Reporter
from runai.reporter.spool import decode, load_checkpoint
from tests._helpers import spool_records, wait_for_give_up

KIB = 1024


def spool_files(pod_dir: str) -> list[str]:
    return sorted((os.path.join(pod_dir, n) for n in os.listdir(pod_dir) if n.endswith(".jsonl")), key=os.path.getmtime)


@pytest.mark.e2e
def test_a_writer_rotates_its_spool_file(env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str) -> None:
    with Reporter(spool_file_bytes=64 * KIB, history_bytes=1 << 30) as reporter:
        for i in range(20_000):
            reporter.reportMetric("loss", i)
    assert reporter.finish() is True
    assert gateway.value(pod, metric_name("loss")) == 19_999
    files = spool_files(reporter.settings.pod_dir)
    # 20,000 lines of ~90 bytes; the size is checked every 4096 records, so files end near 360 KiB.
    assert len(files) >= 4 and sorted(f.path for f in reporter._writer.files) == sorted(files)
    delivered = 0
    for spool in reporter._writer.files:
        ckpt = load_checkpoint(spool.path, spool.spool_id)
        assert ckpt is not None and ckpt.offset == spool.size and ckpt.ended
        delivered += ckpt.records
        with open(spool.path, "rb") as f:
            assert decode(f.read().splitlines()[-1]).kind == "end"
    assert delivered == 20_000
    values = [r.value for r in spool_records(reporter.settings.pod_dir) if r.kind == "metric"]
    assert sorted(values) == [float(i) for i in range(20_000)]


@pytest.mark.e2e
def test_delivered_history_is_kept_under_its_bound(
    env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    bound = 1024 * KIB  # room for two or three of the ~360 KiB files
    with Reporter(spool_file_bytes=64 * KIB, history_bytes=bound) as reporter:
        for i in range(40_000):  # about 3.5 MiB of spool
            reporter.reportMetric("loss", i)
    assert reporter.finish() is True
    assert gateway.value(pod, metric_name("loss")) == 39_999
    wait_for(lambda: not uploader_pids(spool_dir), 15, "the uploader to exit")
    files = spool_files(reporter.settings.pod_dir)
    assert sum(os.path.getsize(f) for f in files) <= bound
    assert os.path.exists(reporter._writer.files[-1].path)  # the newest kept, the oldest deleted
    assert not os.path.exists(reporter._writer.files[0].path)
    checkpoints = [n for n in os.listdir(reporter.settings.pod_dir) if n.endswith(".ckpt")]
    assert len(checkpoints) == len(files)  # a deleted spool takes its checkpoint along


@pytest.mark.e2e
def test_undelivered_data_is_never_deleted(
    env: dict[str, str], own_gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    reporter = Reporter(
        gateway_url=own_gateway.address, spool_file_bytes=64 * KIB, history_bytes=64 * KIB, retry_timeout=0.5
    )
    for i in range(20_000):
        reporter.reportMetric("loss", i)
    assert reporter.finish(timeout=0.5) is False
    wait_for_give_up(reporter.settings.pod_dir, spool_dir)
    assert sorted(spool_files(reporter.settings.pod_dir)) == sorted(f.path for f in reporter._writer.files)
    values = [r.value for r in spool_records(reporter.settings.pod_dir) if r.kind == "metric"]
    assert len(values) == 20_000


@pytest.mark.e2e
def test_fsync_always_syncs_every_report(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    with Reporter(fsync="always") as reporter:
        for i in range(50):
            reporter.reportMetric("durable", i)
        spool_fd = reporter._writer._fd
        assert synced.count(spool_fd) == 50
    assert reporter.finish() is True


@pytest.mark.e2e
def test_fsync_interval_is_done_by_the_uploader(
    tmp_path, gateway: Pushgateway, pod: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from runai.reporter.spool import SpoolWriter
    from uploader.delivery import DeliveryOptions
    from uploader.delivery.service import Uploader
    from uploader.sinks.pushgateway import Pusher

    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    pod_dir = str(tmp_path / pod)
    writer = SpoolWriter(pod_dir, pod)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    uploader = Uploader(
        pod_dir, Pusher(gateway.url, pod), DeliveryOptions(fsync_interval=0.05, use_watchdog=False, poll_interval=0.05)
    )
    thread = threading.Thread(target=uploader.run)
    thread.start()
    try:
        writer.write_metric("a", 1.0)
        wait_for(lambda: writer.path in synced, 10, "the uploader to fsync the spool")
    finally:
        writer.close()
        thread.join(10)
    assert not thread.is_alive()


@pytest.mark.e2e
def test_durability_policy_is_checked(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.setenv("reporterFsync", "sometimes")
    with pytest.raises(ConfigError, match="reporterFsync='sometimes' is not a durability policy"):
        Reporter()
    monkeypatch.setenv("reporterFsync", "never")
    monkeypatch.setenv("reporterSpoolFileBytes", "12")
    with pytest.raises(ConfigError, match="reporterSpoolFileBytes"):
        Reporter()


def test_retention_never_deletes_through_a_pod_directory_swapped_for_a_symlink(tmp_path) -> None:
    # The node agent trims as root: a pod's owner who swaps the directory for a symlink between the
    # commit and the trim must not steer the unlink into another directory.
    from runai.reporter.spool import SpoolWriter
    from uploader.delivery.retention import History

    spool = tmp_path / "spool"
    writer = SpoolWriter(str(spool / "P"), "P")
    writer.write_metric("x", 1.0)
    writer.close()
    name = os.path.basename(writer.path)
    history = History(max_bytes=10**9)
    history.add(writer.path, writer.spool_id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / name).write_text("not the pod's")
    os.rename(spool / "P", spool / "P.moved")
    os.symlink(elsewhere, spool / "P")
    history.max_bytes = 0
    history._trim(0)
    assert (elsewhere / name).read_text() == "not the pod's"
    assert (spool / "P.moved" / name).exists()  # and nothing through the swap: the trim was refused
