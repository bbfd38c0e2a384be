"""The rows of benchmarks/run.py for the remote-write sink (issue 12): recover's drain to a real Prometheus
remote-write receiver beside the gateway's, report -> visible in Prometheus after a quiet spell, and the
uploader's RSS while a job streams to both sinks. Each returns its table rows (name, result, target)."""

from __future__ import annotations

import statistics
import threading
import time
import uuid

from benchmarks._common import quiet_spell_latencies, recover_times, rss_mib
from harness import Prometheus, Pushgateway, metric_name, uploader_pids, wait_for

__all__ = ["rw_drain", "rw_footprint", "rw_latency"]


def rw_drain(
    gw: Pushgateway, receiver: Prometheus, spool: str, n: int, runs: int = 3, baseline: tuple[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """recover of *n* records (100 names) to the receiver alone, then to the gateway alone, *runs* times
    interleaved (so that a busy spell of the shared machine slows both): medians, and the ratio of each pair.
    *baseline* (revision, its unpacked tree): the same drain to the receiver with that code, interleaved too."""
    to_rw, to_gw, then = [], [], []
    for _ in range(runs):
        to_rw.append(recover_times(None, spool, n, remote_write_url=receiver.write_url))
        if baseline is not None:
            then.append(recover_times(None, spool, n, baseline[1], remote_write_url=receiver.write_url))
        to_gw.append(recover_times(gw, spool, n))
    rw, gw_s = (statistics.median(wall for wall, _ in times) for times in (to_rw, to_gw))
    ratios = sorted(g / r for (r, _), (g, _) in zip(to_rw, to_gw, strict=True))
    rows = [
        (
            f"drain: recover of {n:,} records to remote write (median of {runs})",
            f"{n / rw:,.0f} records/s ({rw:.2f} s incl. interpreter start; runs {_rates(n, to_rw)})",
            ">= 100,000/s",
        ),
        (
            "  same to the gateway, interleaved",
            f"{n / gw_s:,.0f} records/s ({gw_s:.2f} s; runs {_rates(n, to_gw)})",
            "",
        ),
        (
            "  remote-write drain rate / gateway's, per pair",
            f"median {statistics.median(ratios):.2f} (min {ratios[0]:.2f}, max {ratios[-1]:.2f})",
            "",
        ),
        (
            "  uploader CPU per record (user + sys), remote write / gateway",
            f"{_cpu_us(n, to_rw):.2f} / {_cpu_us(n, to_gw):.2f} us (medians)",
            "",
        ),
    ]
    if baseline is not None:
        before = statistics.median(wall for wall, _ in then)
        rows += [
            (
                f"  same to remote write at {baseline[0]}, interleaved",
                f"{n / before:,.0f} records/s (runs {_rates(n, then)}); CPU {_cpu_us(n, then):.2f} us/record",
                "",
            ),
            (f"  remote-write drain rate now / at {baseline[0]} (medians)", f"{before / rw:.2f}", ""),
        ]
    return rows


def _rates(n: int, times: list[tuple[float, float]]) -> str:
    return "/".join(f"{n / wall / 1000:.0f}k" for wall, _ in times)


def _cpu_us(n: int, times: list[tuple[float, float]]) -> float:
    return statistics.median(cpu for _, cpu in times) / n * 1e6


def _shown(receiver: Prometheus, pod: str) -> float | None:
    found = receiver.query(f'{metric_name("lat")}{{podUUID="{pod}"}}')
    return float(found[0]["value"][1]) if found else None


def _visible(receiver: Prometheus, pod: str, value: float, deadline: float) -> None:
    while _shown(receiver, pod) != value:  # each query is a round trip to Prometheus: the poll's own pace
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{value} never became visible in Prometheus")


def rw_latency(receiver: Prometheus, spool: str, samples: int) -> list[tuple[str, str, str]]:
    """A report after a quiet spell, until Prometheus' query API answers with it: median over *samples*."""
    from runai.reporter import Reporter

    pod = f"bench-{uuid.uuid4()}"
    with Reporter(pod_uuid=pod, remote_write_url=receiver.write_url, spool_dir=spool) as reporter:
        times = quiet_spell_latencies(
            reporter, lambda value, deadline: _visible(receiver, pod, value, deadline), samples
        )
    times.sort()
    return [
        (
            "report -> visible in Prometheus (remote write), after a quiet spell",
            f"median {statistics.median(times) * 1e3:.1f} ms, max {times[-1] * 1e3:.1f} ms (n={len(times)})",
            "median <= 50 ms",
        )
    ]


def rw_footprint(
    gw: Pushgateway, receiver: Prometheus, spool: str, seconds: float, rate: int = 1000
) -> list[tuple[str, str, str]]:
    """The uploader's RSS, sampled every 50 ms, while a job streams *rate* reports/s to both sinks."""
    from runai.reporter import Reporter

    reporter = Reporter(
        pod_uuid=f"bench-{uuid.uuid4()}", gateway_url=gw.address, remote_write_url=receiver.write_url, spool_dir=spool
    )
    stop = threading.Event()
    sent = [0]

    def stream() -> None:
        t0 = time.perf_counter()
        while not stop.is_set():
            for _ in range(10):  # 10 names, as a training loop's handful of metrics
                reporter.reportMetric(f"m{sent[0] % 10}", float(sent[0]))
                sent[0] += 1
            time.sleep(max(0.0, t0 + sent[0] / rate - time.perf_counter()))  # pacing the load

    writer = threading.Thread(target=stream, name="stream")
    writer.start()
    rss: list[float] = []
    try:
        pid = wait_for(lambda: uploader_pids(reporter.settings.pod_uuid), 10, "the uploader")[0]
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rss.append(rss_mib(pid))
            time.sleep(0.05)  # sampling, not synchronisation
    finally:
        stop.set()
        writer.join()
        assert reporter.finish(timeout=60)
    return [
        (
            f"uploader RSS, {rate:,} reports/s to gateway + remote write ({seconds:.0f} s, {sent[0]:,} sent)",
            f"max {max(rss):.1f} MiB, median {statistics.median(rss):.1f} MiB",
            "<= 60 MB (57.2 MiB)",
        )
    ]
