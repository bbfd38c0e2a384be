"""The uploader loop in-process, against the real gateway, with injected failures."""

from __future__ import annotations

import errno
import os

import pytest

from harness import Pushgateway, metric_name
from runai.reporter.spool import SpoolWriter, checkpoint_path, load_checkpoint
from uploader.delivery import DeliveryOptions
from uploader.delivery.service import EXIT_DELIVERED, EXIT_PENDING, Uploader
from uploader.sinks.pushgateway import Pusher

pytestmark = pytest.mark.e2e


def finished_spool(pod_dir: str, pod: str, n: int) -> SpoolWriter:
    writer = SpoolWriter(pod_dir, pod)
    for i in range(n):
        writer.write_metric("loss", float(i))
    writer.close()
    return writer


def test_checkpoint_write_failure_is_retried_not_skipped(tmp_path, gateway: Pushgateway, pod: str, monkeypatch) -> None:
    pod_dir = str(tmp_path / pod)
    writer = finished_spool(pod_dir, pod, 50)
    real_fsync, failures = os.fsync, []

    def flaky_fsync(fd: int) -> None:
        if len(failures) < 2:
            failures.append(fd)
            raise OSError(errno.EIO, "injected")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    uploader = Uploader(
        pod_dir, Pusher(gateway.url, pod), DeliveryOptions(follow=False, backoff=(0.01, 0.05), use_watchdog=False)
    )
    assert uploader.run() == EXIT_DELIVERED
    assert len(failures) == 2
    ckpt = load_checkpoint(writer.path, writer.spool_id)
    assert ckpt is not None and ckpt.records == 50 and ckpt.ended and ckpt.offset == writer.offset
    assert gateway.value(pod, metric_name("loss")) == 49


def test_unreachable_gateway_gives_up_and_keeps_everything(tmp_path, own_gateway: Pushgateway, pod: str) -> None:
    pod_dir = str(tmp_path / pod)
    writer = finished_spool(pod_dir, pod, 10)
    uploader = Uploader(
        pod_dir,
        Pusher(own_gateway.url, pod, timeout=1),
        DeliveryOptions(follow=False, retry_timeout=0.3, backoff=(0.01, 0.05), use_watchdog=False),
    )
    assert uploader.run() == EXIT_PENDING
    assert "Connection refused" in uploader.last_error
    assert uploader.pending_records() == 10
    assert not os.path.exists(checkpoint_path(writer.path))


def test_stop_is_safe_twice_and_ends_the_loop(tmp_path, gateway: Pushgateway, pod: str) -> None:
    pod_dir = str(tmp_path / pod)
    writer = SpoolWriter(pod_dir, pod)  # stays open: a live writer keeps a follower busy
    writer.write_metric("x", 1.0)
    uploader = Uploader(pod_dir, Pusher(gateway.url, pod), DeliveryOptions(poll_interval=0.05))
    uploader.stop()
    uploader.stop()
    assert uploader.run() in (EXIT_DELIVERED, EXIT_PENDING)
    writer.close()


def test_coalescing_pushes_only_the_latest_value(tmp_path, gateway: Pushgateway, pod: str) -> None:
    pod_dir = str(tmp_path / pod)
    finished_spool(pod_dir, pod, 10_000)
    pusher = Pusher(gateway.url, pod)
    uploader = Uploader(pod_dir, pusher, DeliveryOptions(follow=False, use_watchdog=False))
    assert uploader.run() == EXIT_DELIVERED
    assert pusher.pushes == 1 and uploader.delivered_records == 10_000
    assert gateway.value(pod, metric_name("loss")) == 9999
