"""The gateway sink's pushes: capped, split on 400, 413, 504 and timeouts, a value refused by name, the rest
delivered."""

from __future__ import annotations

import http.client
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import FaultProxy, Pushgateway, metric_name, parameter_name
from runai.reporter import Reporter
from runai.reporter.spool import METRIC
from runai.reporter.spool import Metric as Record
from tests._helpers import checkpoint, cli_env, finished_spool, uploader_cli
from uploader.sinks.pushgateway import MAX_PUSH_BYTES, MAX_PUSH_VALUES, Pusher

pytestmark = pytest.mark.e2e


def test_an_unencodable_parameter_is_rejected_and_the_rest_delivered(
    gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    # The Reporter refuses such a value; a spool written directly can still hold one.
    path = finished_spool(spool_dir, pod, {"before": 1.0, "bad": os.fsdecode(b"caf\xe9"), "good": "ok", "after": 2.0})
    done = uploader_cli(cli_env(spool_dir, pod, gateway.address), "run")
    assert done.returncode == 0, done.stderr
    series = gateway.series(pod)
    assert series[metric_name("before")][1] == 1 and series[metric_name("after")][1] == 2
    assert series[parameter_name("good")][0]["param_value"] == "ok"
    assert parameter_name("bad") not in series
    ckpt = checkpoint(path)
    assert ckpt is not None and ckpt["offset"] == os.path.getsize(path) and ckpt["rejected"] == 1
    log = open(os.path.join(spool_dir, pod, "uploader.log")).read()
    assert "cannot push parameter 'bad'" in log and "cannot be encoded as UTF-8" in log


def test_pushes_are_capped_in_bytes_and_values(
    gateway: Pushgateway, proxy: FaultProxy, spool_dir: str, pod: str
) -> None:
    count = 25_000
    finished_spool(spool_dir, pod, {f"m{i}": float(i) for i in range(count)})
    done = uploader_cli(cli_env(spool_dir, pod, proxy.address), "recover", "--timeout", "30")
    assert done.returncode == 0, done.stderr
    assert proxy.largest_push <= MAX_PUSH_BYTES and proxy.most_values <= MAX_PUSH_VALUES
    assert proxy.pushes >= count // MAX_PUSH_VALUES
    series = gateway.series(pod)
    assert sum(name.startswith(metric_name("m")) for name in series) == count
    gateway.delete_group(pod)


def test_a_413_splits_the_push_and_rejects_only_the_value_too_big(
    gateway: Pushgateway, proxy: FaultProxy, spool_dir: str, pod: str
) -> None:
    proxy.fault, proxy.max_body = "413", 8 << 10
    reports: dict[str, float | str] = {f"m{i}": float(i) for i in range(300)}
    reports["big"] = "b" * (10 << 10)  # over the proxy's limit even alone
    path = finished_spool(spool_dir, pod, reports)
    done = uploader_cli(cli_env(spool_dir, pod, proxy.address), "recover", "--timeout", "10")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "1 names rejected by the gateway" in done.stdout and parameter_name("big") in done.stdout
    series = gateway.series(pod)
    assert all(series[metric_name(f"m{i}")][1] == i for i in range(300))
    assert parameter_name("big") not in series
    ckpt = checkpoint(path)
    assert ckpt is not None and ckpt["rejected"] == 1


def test_a_push_that_times_out_is_split(gateway: Pushgateway, proxy: FaultProxy, spool_dir: str, pod: str) -> None:
    # A gateway that cannot take a big push in time, but takes small ones.
    proxy.fault, proxy.max_body, proxy.slow_seconds = "hold_big", 8 << 10, 30
    finished_spool(spool_dir, pod, {f"m{i}": float(i) for i in range(150)})
    done = uploader_cli(cli_env(spool_dir, pod, proxy.address), "recover", "--timeout", "20", "--push-timeout", "0.5")
    assert done.returncode == 0, done.stderr
    assert "0 names rejected" in done.stdout
    series = gateway.series(pod)
    assert all(series[metric_name(f"m{i}")][1] == i for i in range(150))


class _TimeoutProxy:
    """An HTTP proxy to a real Pushgateway that answers 504 to a push of more than *max_values* values."""

    def __init__(self, upstream: str, max_values: int) -> None:
        self.answered_504 = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                values = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
                if values > max_values:
                    proxy.answered_504 += 1
                    status, data = 504, b"upstream timed out\n"
                else:
                    conn = http.client.HTTPConnection(upstream, timeout=10)
                    try:
                        conn.request(
                            "POST", self.path, body=body, headers={"Content-Type": self.headers.get("Content-Type", "")}
                        )
                        response = conn.getresponse()
                        status, data = response.status, response.read()
                    finally:
                        conn.close()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def test_a_504_from_a_proxy_splits_the_push_and_everything_arrives(gateway: Pushgateway, pod: str) -> None:
    proxy = _TimeoutProxy(gateway.address, max_values=10)
    pusher = Pusher(proxy.url, pod, timeout=10)
    try:
        records = [Record(i, time.time(), METRIC, f"m{i}", float(i)) for i in range(100)]
        assert pusher.push(records) == []
    finally:
        pusher.close()
        proxy.stop()
    assert proxy.answered_504 > 0
    series = gateway.series(pod)
    assert all(series[metric_name(f"m{i}")][1] == float(i) for i in range(100))


def test_a_rejected_metric_does_not_block_the_others(
    env: dict[str, str], gateway: Pushgateway, pod: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="runai")
    clash = metric_name(f"clash_{pod.replace('-', '_')}")
    # The same name already exists as a counter in another group: the gateway answers 400.
    assert gateway.push_text(f"job/other/instance/{pod}", f"# TYPE {clash} counter\n{clash} 1\n") == 200
    with Reporter() as reporter:
        reporter.reportMetric(clash[len("reporter_push_gateway_metric_") :], 5)
        for i in range(50):
            reporter.reportMetric("fine", i)
        reporter.reportParameter("opt", "adam")
        started = time.monotonic()
    assert reporter.finish() is False  # honest: one value was refused
    assert time.monotonic() - started < 10
    series = gateway.series(pod)
    assert series[metric_name("fine")][1] == 49
    assert parameter_name("opt") in series
    assert clash not in series
    assert any("refused 1" in r.getMessage() for r in caplog.records)
    log = open(os.path.join(reporter.settings.pod_dir, "uploader.log")).read()
    assert f"the gateway rejected metric '{clash[len('reporter_push_gateway_metric_') :]}'" in log
