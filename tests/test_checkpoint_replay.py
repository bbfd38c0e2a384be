"""The uploader and its checkpoints: a damaged or foreign one means a replay, and
a checkpoint covers only what the gateway acknowledged."""

from __future__ import annotations

import json
import os

import pytest

from harness import FaultProxy, Pushgateway, metric_name, parameter_name
from runai.reporter import Reporter
from runai.reporter.spool import SpoolWriter, checkpoint_path, load_checkpoint
from tests._helpers import checkpoint, cli_env, finished_spool, recover, start_uploader
from uploader.delivery import DeliveryOptions
from uploader.delivery.service import EXIT_PENDING, Uploader
from uploader.sinks.pushgateway import Pusher

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"\0" * 64,
        b"{not json",
        b'{"spool_id":"SAME","offset":4',
        b'{"spool_id":"x","offset":5,"records":1,"last_seq":1}',
        b'{"spool_id":"SAME","offset":99999999,"records":1,"last_seq":1}',
        b'{"spool_id":"SAME","offset":7,"records":1,"last_seq":1}',
        b"only-temp",
    ],
    ids=["empty", "nul", "garbage", "truncated", "other-file", "past-end", "mid-line", "only-temp"],
)
def test_corrupt_checkpoint_means_replay(env: dict[str, str], gateway: Pushgateway, pod: str, damage: bytes) -> None:
    with Reporter() as reporter:
        for i in range(10):
            reporter.reportMetric("loss", i)
        reporter.reportParameter("opt", "adam")
    assert reporter.finish() is True
    gateway.delete_group(pod)
    ckpt = reporter._writer.path[: -len(".jsonl")] + ".ckpt"
    if damage == b"only-temp":  # a crash between writing the temp file and the rename
        os.rename(ckpt, os.path.join(os.path.dirname(ckpt), "." + os.path.basename(ckpt) + ".tmp"))
    else:
        with open(ckpt, "wb") as f:
            f.write(damage.replace(b"SAME", reporter._writer.spool_id.encode()))
    done = recover(env)
    assert done.returncode == 0, done.stderr
    assert "delivered 11 reports" in done.stdout
    assert gateway.value(pod, metric_name("loss")) == 9
    assert gateway.series(pod)[parameter_name("opt")][0]["param_value"] == "adam"


def test_a_checkpoint_of_a_replaced_spool_file_is_not_applied(
    env: dict[str, str], gateway: Pushgateway, pod: str
) -> None:
    from runai.reporter.spool import encode_header

    with Reporter() as reporter:
        reporter.reportMetric("loss", 1)
    path = reporter._writer.path
    old_size = os.path.getsize(path)
    # Another file now stands at that path, larger than the old checkpoint's offset.
    lines = [encode_header("f" * 32, pod, 1)] + [
        f'{{"seq":{i},"ts_us":{i},"kind":"metric","name":"replaced","value":{i}}}\n'.encode() for i in range(1, 40)
    ]
    with open(path, "wb") as f:
        f.write(b"".join(lines))
    assert os.path.getsize(path) > old_size
    done = recover(env)
    assert done.returncode == 0, done.stderr
    assert "delivered 39 reports" in done.stdout  # replayed from the start, nothing skipped
    assert gateway.value(pod, metric_name("replaced")) == 39


# 1e999 overflowed int(); 1.5 and true were taken for offset 1: a checkpoint's numbers are JSON integers.
@pytest.mark.parametrize("damage", ["1e999", "-1e999", "1.5", "true"])
def test_a_checkpoint_with_a_number_out_of_range_is_replayed_not_a_crash(
    gateway: Pushgateway, spool_dir: str, pod: str, damage: str
) -> None:
    path = finished_spool(spool_dir, pod, {"x": 7.0})
    spool_id = json.loads(open(path).readline())["spool_id"]
    with open(checkpoint_path(path), "w") as f:
        f.write('{"spool_id":"%s","offset":%s,"records":1,"last_seq":1}' % (spool_id, damage))
    assert load_checkpoint(path, spool_id) is None
    status = start_uploader(cli_env(spool_dir, pod, gateway.address), "status", "--json")
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0 and json.loads(out)["pods"][0]["reports_pending"] == 1, err
    proc = start_uploader(cli_env(spool_dir, pod, gateway.address), "recover", "--timeout=20")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "is unreadable" in err and "Traceback" not in err, err
    assert gateway.value(pod, metric_name("x")) == 7.0


def test_a_checkpoint_covers_only_what_the_gateway_acknowledged(
    tmp_path: os.PathLike[str], gateway: Pushgateway, proxy: FaultProxy, pod: str
) -> None:
    pod_dir = os.path.join(str(tmp_path), pod)
    writer = SpoolWriter(pod_dir, pod)
    for i in range(5000):
        writer.write_metric(f"m{i}", float(i))
    writer.close()
    proxy.fault, proxy.fail_after = "fail_after", 3
    uploader = Uploader(
        pod_dir,
        Pusher(f"http://{proxy.address}", pod, timeout=5),
        DeliveryOptions(follow=False, use_watchdog=False, retry_timeout=0.5, backoff=(0.01, 0.05), max_pending=1000),
    )
    assert uploader.run() == EXIT_PENDING
    ckpt = checkpoint(writer.path)
    assert ckpt is not None and 0 < ckpt["records"] < 5000  # some delivered, the rest still pending
    on_gateway = gateway.series(pod)
    with open(writer.path, "rb") as f:
        covered = f.read(ckpt["offset"]).splitlines()[1:]  # after the header
    assert len(covered) == ckpt["records"]
    for line in covered:
        name = json.loads(line)["name"]
        assert metric_name(name) in on_gateway, f"{name} is checkpointed but the gateway never acknowledged it"
    gateway.delete_group(pod)
