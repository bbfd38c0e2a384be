"""A damaged spool file delivered by the real uploader: partial, garbage, NUL, out-of-range and overlong lines
cost only themselves."""

from __future__ import annotations

import os

import pytest

from harness import Pushgateway, metric_name, wait_for
from runai.reporter import Reporter
from runai.reporter.spool import MAX_LINE_BYTES, SpoolWriter, encode_metric
from tests._helpers import cli_env, peak_rss_mib, recover, start_uploader, wait_for_give_up

pytestmark = pytest.mark.e2e


def write_raw(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_partial_line_is_delivered_once_complete(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("a", 1)
        path = reporter._writer.path
        write_raw(path, b'{"seq":1000,"ts_us":10000000000000000,"kind":"metric","name":"b",')
        wait_for(lambda: gateway.value(pod, metric_name("a")) == 1, 10, "a on the gateway")
        assert gateway.value(pod, metric_name("b")) is None
        write_raw(path, b'"value":2}\n')
        wait_for(lambda: gateway.value(pod, metric_name("b")) == 2, 10, "b once its line is complete")


def test_garbage_lines_are_skipped_and_never_pushed(env: dict[str, str], gateway: Pushgateway, pod: str) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("before", 1)
        path = reporter._writer.path
        write_raw(path, b"this is not json\n")
        write_raw(path, b'{"seq":7,"ts_us":1,"kind":"metric","name":"nofields"}\n')
        write_raw(path, b'{"seq":8,"ts_us":1,"kind":"metric","name":"bad","value":"12"}\n')
        write_raw(path, b"\0\0\0\0\n")
        reporter.reportMetric("after", 2)
    assert reporter.finish() is True
    series = gateway.series(pod)
    assert series[metric_name("before")][1] == 1 and series[metric_name("after")][1] == 2
    assert set(series) == {metric_name("before"), metric_name("after")}
    log = open(os.path.join(reporter.settings.pod_dir, "uploader.log")).read()
    assert log.count("which is not a valid record") == 4


def test_a_nul_filled_tail_is_never_pushed(
    env: dict[str, str], own_gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    reporter = Reporter(gateway_url=own_gateway.address, retry_timeout=0.5)
    for i in range(5):
        reporter.reportMetric("kept", i)
    reporter._writer._close_fd()  # the process "dies": no end marker
    write_raw(reporter._writer.path, b"\0" * 300)  # what a power cut leaves after the last page
    reporter._writer.closed, reporter._result = True, False
    wait_for_give_up(reporter.settings.pod_dir, spool_dir)
    own_gateway.start()
    done = recover({**env, "reporterGatewayURL": own_gateway.address})
    assert done.returncode == 0, done.stderr
    assert "delivered 5 reports" in done.stdout
    assert set(own_gateway.series(pod)) == {metric_name("kept")}
    assert own_gateway.value(pod, metric_name("kept")) == 4


@pytest.mark.parametrize(
    "line",
    [
        b'{"seq":2,"ts_us":1' + b"0" * 400 + b',"kind":"metric","name":"bad","value":1.5}',
        b'{"seq":1' + b"0" * 400 + b',"ts_us":1,"kind":"parameter","name":"bad","value":"v"}',
        b'{"seq":9223372036854775808,"ts_us":1,"kind":"metric","name":"bad","value":1.5}',
        b'{"seq":-1,"ts_us":1,"kind":"metric","name":"bad","value":1.5}',
    ],
)
def test_a_spool_line_with_a_number_out_of_range_is_skipped(
    gateway: Pushgateway, spool_dir: str, pod: str, line: bytes
) -> None:
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.write_metric("good", 1.0)
    os.write(writer._fd, line + b"\n")
    writer.write_metric("good2", 2.0)
    writer.close()
    proc = start_uploader(cli_env(spool_dir, pod, gateway.address), "recover", "--timeout=20")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "1 skipped as corrupt" in out, out + err
    assert gateway.value(pod, metric_name("good")) == 1.0
    assert gateway.value(pod, metric_name("good2")) == 2.0
    assert gateway.value(pod, metric_name("bad")) is None


def test_an_overlong_line_is_skipped_and_an_unterminated_tail_is_never_read_whole(
    gateway: Pushgateway, spool_dir: str, pod: str
) -> None:
    writer = SpoolWriter(os.path.join(spool_dir, pod), pod)
    writer.write_metric("before", 1.0)
    os.write(writer._fd, b"\0" * (2 * MAX_LINE_BYTES) + b"\n")  # too long, but it ends
    writer.write_metric("between", 3.0)
    os.write(writer._fd, b"\0" * (5 << 20) + b"\n")  # longer than a read, too
    writer.write_metric("after", 2.0)
    path = writer.path
    writer.close()
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) + (100 << 20))  # longer than one call searches, sparse
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + encode_metric(1 << 20, 1_700_000_000_000_000, "far", 4.0))
        f.truncate(f.tell() + (200 << 20))  # what a crash can leave on ext4/xfs: a NUL tail without a newline
    env = cli_env(spool_dir, pod, gateway.address)
    done, peak = peak_rss_mib(env, "recover", "--timeout=20")
    assert done.returncode == 0, done.stderr
    assert peak < 120, f"recover peaked at {peak:.0f} MiB on a 200 MiB unterminated tail"
    assert f"skipped 3: a line longer than {MAX_LINE_BYTES} bytes" in done.stdout, done.stdout + done.stderr
    assert gateway.value(pod, metric_name("before")) == 1.0
    assert gateway.value(pod, metric_name("between")) == 3.0
    assert gateway.value(pod, metric_name("after")) == 2.0
    assert gateway.value(pod, metric_name("far")) == 4.0
    done, peak = peak_rss_mib(env, "status")
    assert done.returncode == 0, done.stderr
    assert peak < 120, f"status peaked at {peak:.0f} MiB on a 200 MiB unterminated tail"
