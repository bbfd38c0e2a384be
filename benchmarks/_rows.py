"""The rows of benchmarks/run.py after the hot path: finish(), latency, staleness, pushes, gateway load,
drain, the uploader's footprint and Keras' overhead. Each returns its table rows (name, result, target)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid

from benchmarks._common import finish_seconds, quiet_spell_latencies, recover_seconds, rss_mib
from harness import FaultProxy, Pushgateway, metric_name, process_cpu_seconds, uploader_pids, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def finish_time(gw: Pushgateway, spool: str, runs: int, n: int) -> list[tuple[str, str, str]]:
    from runai.reporter import Reporter

    times = []
    for _ in range(runs):
        reporter = Reporter(pod_uuid=f"bench-{uuid.uuid4()}", gateway_url=gw.address, spool_dir=spool)
        for i in range(n):
            reporter.reportMetric("loss", float(i))
        t0 = time.perf_counter()
        assert reporter.finish()
        times.append(time.perf_counter() - t0)
    return [
        (
            f"finish() after {n:,} reports, gateway up",
            f"median {statistics.median(times):.3f} s, max {max(times):.3f} s",
            "<= 1 s",
        )
    ]


def _visible(gw: Pushgateway, pod: str, value: float, deadline: float) -> None:
    while gw.value(pod, metric_name("lat")) != value:
        if time.perf_counter() > deadline:
            raise RuntimeError("value never arrived")


def latency(gw: Pushgateway, spool: str, samples: int) -> list[tuple[str, str, str]]:
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    from runai.reporter import Reporter

    pod = f"bench-{uuid.uuid4()}"
    base: list[float] = []
    with Reporter(pod_uuid=pod, gateway_url=gw.address, spool_dir=spool) as reporter:
        ours = quiet_spell_latencies(reporter, lambda value, deadline: _visible(gw, pod, value, deadline), samples)
    base_pod = f"bench-{uuid.uuid4()}"
    for i in range(samples):
        t0 = time.perf_counter()
        registry = CollectorRegistry()
        Gauge(metric_name("lat"), "", ["metric_name", "push_gateway_type"], registry=registry).labels(
            "lat", "metric"
        ).set(i)
        pushadd_to_gateway(gw.address, job="reporter_pod_info", registry=registry, grouping_key={"podUUID": base_pod})
        _visible(gw, base_pod, i, t0 + 10)
        base.append(time.perf_counter() - t0)

    def fmt(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"median {statistics.median(xs) * 1e3:.1f} ms, max {xs[-1] * 1e3:.1f} ms (n={len(xs)})"

    return [
        ("report -> visible on gateway, after a quiet spell", fmt(ours), "median <= 10 ms"),
        ("  baseline: synchronous pushadd per report", fmt(base), ""),
    ]


def staleness(gw: Pushgateway, spool: str, seconds: float, rate: int = 1000) -> list[tuple[str, str, str]]:
    """Under a continuous stream: how old is the value the gateway shows?"""
    import threading

    from runai.reporter import Reporter

    pod = f"bench-{uuid.uuid4()}"
    reporter = Reporter(pod_uuid=pod, gateway_url=gw.address, spool_dir=spool)
    stop = threading.Event()

    def stream() -> None:  # each report's value is the wall-clock time it was made
        sent = 0
        t0 = time.perf_counter()
        while not stop.is_set():
            reporter.reportMetric("now", time.time())
            sent += 1
            time.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))  # pacing the load

    writer = threading.Thread(target=stream, name="stream")
    writer.start()
    ages: list[float] = []
    try:
        wait_for(lambda: gw.value(pod, metric_name("now")) is not None, 10, "the first push")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            shown = gw.value(pod, metric_name("now"))
            if shown is not None:
                ages.append(time.time() - shown)
            time.sleep(0.02)  # sampling, not synchronisation
    finally:
        stop.set()
        writer.join()
        assert reporter.finish()
    ages.sort()
    p99 = ages[min(len(ages) - 1, int(len(ages) * 0.99))]
    bound = reporter.settings.push_interval + 0.020
    return [
        (
            f"staleness under a {rate:,}/s stream ({len(ages)} samples)",
            f"median {statistics.median(ages) * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, max {ages[-1] * 1e3:.0f} ms",
            f"<= {bound * 1e3:.0f} ms",
        )
    ]


def pushes(gw: Pushgateway, spool: str, n: int, seconds: float) -> list[tuple[str, str, str]]:
    from runai.reporter import Reporter

    proxy = FaultProxy(gw.address).start()
    try:
        reporter = Reporter(pod_uuid=f"bench-{uuid.uuid4()}", gateway_url=proxy.address, spool_dir=spool)
        batches = 100
        t0 = time.perf_counter()
        for b in range(batches):
            for i in range(n // batches):
                reporter.reportMetric("loss", float(i))
            time.sleep(max(0.0, t0 + (b + 1) * seconds / batches - time.perf_counter()))
        assert reporter.finish()
        duration = time.perf_counter() - t0
    finally:
        proxy.stop()
    bound = duration / reporter.settings.push_interval + 2
    return [
        (
            f"pushes for {n:,} reports over {duration:.1f} s",
            f"{proxy.pushes} pushes ({proxy.push_bytes / max(1, proxy.pushes):.0f} B each); 0.4.1 would make {n:,}",
            f"<= {bound:.0f}",
        )
    ]


def gateway_load(gw: Pushgateway, spool: str, seconds: float) -> list[tuple[str, str, str]]:
    from runai.reporter import Reporter

    rows = []
    for rate in (10, 1_000, 100_000):
        proxy = FaultProxy(gw.address).start()
        try:
            reporter = Reporter(pod_uuid=f"bench-{uuid.uuid4()}", gateway_url=proxy.address, spool_dir=spool)
            batch = max(1, rate // 100)
            t0, sent = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                for _ in range(batch):
                    reporter.reportMetric("loss", float(sent))
                    sent += 1
                time.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))  # pacing the load
            assert reporter.finish()
            duration = time.perf_counter() - t0
        finally:
            proxy.stop()
        per_second = proxy.pushes / duration
        rows.append(
            (
                f"gateway load at {rate:,} reports/s ({sent:,} in {duration:.1f} s)",
                f"{per_second:.2f} pushes/s, {proxy.push_bytes / max(1, proxy.pushes):.0f} B/push",
                f"<= {1 / reporter.settings.push_interval:.0f}/s (+1 at the end)",
            )
        )
    return rows


def drain(gw: Pushgateway, spool: str, sizes: tuple[int, ...]) -> list[tuple[str, str, str]]:
    """finish() after N reports, and recover's throughput over a spool written beforehand."""
    rows = [
        (
            f"finish() after {n:,} reports",
            f"{finish_seconds(gw, spool, n):.3f} s",
            "<= 5 s at 1e6" if n == 1_000_000 else "",
        )
        for n in sizes
    ]
    n = sizes[-1]
    elapsed = recover_seconds(gw, spool, n)
    rows.append(
        (
            f"drain: recover of {n:,} records (100 names), gateway up",
            f"{n / elapsed:,.0f} records/s ({elapsed:.2f} s incl. interpreter start)",
            ">= 200,000/s",
        )
    )
    return rows


def drain_versus(
    gw: Pushgateway, spool: str, n: int, runs: int, baseline: tuple[str, str]
) -> list[tuple[str, str, str]]:
    """recover's throughput now and at a baseline revision, runs interleaved, as medians and their ratio."""
    rev, code = baseline
    now, then = [], []
    for _ in range(runs):
        now.append(recover_seconds(gw, spool, n))
        then.append(recover_seconds(gw, spool, n, code))
    ratio = statistics.median(now) / statistics.median(then)
    return [
        (f"drain: recover of {n:,} records, now", f"{n / statistics.median(now):,.0f} records/s (median)", ""),
        (f"drain: recover of {n:,} records, at {rev}", f"{n / statistics.median(then):,.0f} records/s (median)", ""),
        (f"  drain time now / at {rev} (ratio of medians)", f"{ratio:.3f}", "<= 1.10"),
    ]


def footprint(gw: Pushgateway, spool: str, window: float) -> list[tuple[str, str, str]]:
    """The uploader's memory, and its CPU while idle and while the gateway is down."""
    from runai.reporter import Reporter

    rows = []
    proxy = FaultProxy(gw.address).start()
    try:
        reporter = Reporter(
            pod_uuid=f"bench-{uuid.uuid4()}", gateway_url=proxy.address, spool_dir=spool, retry_timeout=1
        )
        reporter.reportMetric("warmup", 0)
        pid = wait_for(lambda: uploader_pids(reporter.settings.pod_uuid), 10, "the uploader")[0]
        wait_for(lambda: any(n.endswith(".ckpt") for n in os.listdir(reporter.settings.pod_dir)), 10, "a push")
        c0 = process_cpu_seconds(pid)
        time.sleep(window)  # a measurement window
        idle = (process_cpu_seconds(pid) - c0) / window
        rows.append(("uploader RSS, following a live writer", f"{rss_mib(pid):.1f} MiB", ""))
        rows.append((f"uploader CPU while idle ({window:.0f} s)", f"{idle * 100:.2f}% of a core", "about 0"))
        proxy.refuse()
        for i in range(1000):
            reporter.reportMetric("loss", float(i))
        time.sleep(1.0)  # let the first failures pass
        c0 = process_cpu_seconds(pid)
        time.sleep(window)
        down = (process_cpu_seconds(pid) - c0) / window
        rows.append(
            (f"uploader CPU while the gateway is down ({window:.0f} s)", f"{down * 100:.2f}% of a core", "no busy loop")
        )
        proxy.heal()
        assert reporter.finish(timeout=30)
    finally:
        proxy.stop()
    return rows


def keras_row(quick: bool) -> list[tuple[str, str, str]]:
    """Keras fit with and without autolog, from benchmarks/keras_overhead.py (its own process: Keras is heavy)."""
    script = os.path.join(HERE, "keras_overhead.py")
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "torch"))
    try:
        out = subprocess.run(
            [sys.executable, script, *(["--quick"] if quick else [])],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [("Keras fit with and without autolog", f"not measured ({exc})", "<= 1.02x")]
    ratio = next(line for line in out.splitlines() if line.startswith("overhead of autolog"))
    cpu = next(line for line in out.splitlines() if line.startswith("the callback's own CPU"))
    return [
        ("Keras fit with/without autolog (every batch)", ratio.split(": ", 1)[1].split(",")[0], "<= 1.02x"),
        ("  the callback's own CPU per batch", cpu.split(": ", 1)[1].split(", on")[0], ""),
    ]
