"""The benchmark suite: every row beside a baseline measured in the same run.

    python benchmarks/run.py [--quick] [--baseline REV]

With ``--baseline REV`` the hot-path rows also run the library as it was at the
git revision REV (unpacked into a temp dir, interleaved with today's runs), so
that a change to the report path is judged against its baseline in one run.

Starts its own Pushgateway on 127.0.0.1 (Debian's prometheus-pushgateway) and
prints one table. Figures are medians over repeated runs: the machines are
noisy, so compare ratios within one run, not absolute numbers across runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

from tests._helpers import (  # noqa: E402
    Pushgateway,
    job_env,
    kill_uploaders,
    metric_name,
    process_cpu_seconds,
    uploader_pids,
    wait_for,
)
from tests._proxy import FaultProxy  # noqa: E402

# Each hot-path child measures its own CPU (all threads, user + system) from
# the first report to the end of finish().
_CHILD = r"""
import json, os, resource, sys, time
mode, n = sys.argv[1], int(sys.argv[2])

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

if mode == "floor":
    from runai.reporter.spool import encode_metric
    line = b"x" * (len(encode_metric(n, time.time_ns() // 1000, "loss", 0.123456789)) - 1) + b"\n"
    fd = os.open(os.path.join(os.environ["reporterSpoolDir"], "floor.bin"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    c0 = cpu()
    for i in range(n):
        os.write(fd, line)
    c1 = cpu()
    ok = True
elif mode in ("metric", "parameter", "forked"):
    import runai.reporter
    reporter = runai.reporter.Reporter()
    # As in a training job, the Reporter exists before the reports flow: wait
    # until its uploader runs and has delivered a first report.
    reporter.reportMetric("warmup", 0)
    while not any(n.endswith(".ckpt") for n in os.listdir(reporter.settings.pod_dir)):
        time.sleep(0.01)
    if mode == "forked":
        pid = os.fork()
        if pid:
            _, status = os.waitpid(pid, 0)
            sys.exit(0)
    report = reporter.reportParameter if mode == "parameter" else reporter.reportMetric
    c0 = cpu()
    for i in range(n):
        report("loss", 0.123456789 + i)
    ok = reporter.finish()
    c1 = cpu()
elif mode == "runai-041":
    # The real runai 0.4.1 (first on sys.path through PYTHONPATH): a forked
    # worker process that POSTs every report; its finish() waits for them all.
    import runai.reporter
    assert runai.reporter.__file__.startswith(os.environ["RUNAI_041_DIR"]), runai.reporter.__file__
    c0 = cpu()
    for i in range(n):
        runai.reporter.reportMetric("loss", 0.123456789 + i)
    runai.reporter.finish()
    c1 = cpu()
    ok = True
elif mode == "pushadd":
    # What runai 0.4.1 does per report: build a registry and POST it at once.
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway
    c0 = cpu()
    for i in range(n):
        registry = CollectorRegistry()
        g = Gauge("reporter_push_gateway_metric_loss", "", ["metric_name", "push_gateway_type"], registry=registry)
        g.labels("loss", "metric").set(0.123456789 + i)
        pushadd_to_gateway(os.environ["reporterGatewayURL"], job="reporter_pod_info", registry=registry,
                           grouping_key={"podUUID": os.environ["podUUID"]})
    c1 = cpu()
    ok = True
print(json.dumps({"us": (c1 - c0) / n * 1e6, "ok": ok}))
"""


def fetch_041(work: str) -> str | None:
    """Download and unpack runai 0.4.1's sdist into *work* (never into the repository)."""
    try:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "runai==0.4.1", "-d", work], check=True, capture_output=True, timeout=180)
        with tarfile.open(os.path.join(work, "runai-0.4.1.tar.gz")) as sdist:
            sdist.extractall(work, filter="data")
    except (OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
        print(f"runai 0.4.1 is unavailable ({exc}); its row is left out", file=sys.stderr)
        return None
    return os.path.join(work, "runai-0.4.1")


def unpack_revision(rev: str, work: str) -> str:
    """The repository as it was at git revision *rev*, unpacked into *work* (never into the repository)."""
    target = os.path.join(work, "baseline")
    os.makedirs(target)
    archive = subprocess.run(["git", "-C", REPO, "archive", "--format=tar", rev], check=True,
                             capture_output=True, timeout=60).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True, timeout=60)
    return target


def child(mode: str, n: int, gateway: str, spool: str, runai_041: str | None = None,
          baseline: str | None = None) -> float:
    env = job_env(podUUID=f"bench-{uuid.uuid4()}", reporterGatewayURL=gateway, reporterSpoolDir=spool)
    if mode == "runai-041":
        assert runai_041 is not None
        env["PYTHONPATH"], env["RUNAI_041_DIR"] = runai_041, runai_041
    if mode.endswith("@baseline"):
        # The same child code, importing (and spawning the uploader of) the baseline revision.
        assert baseline is not None
        mode = mode.split("@", 1)[0]
        env["PYTHONPATH"] = baseline
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(n)], env=env, capture_output=True, text=True,
                         check=True, timeout=600, cwd=spool)
    line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
    result = json.loads(line)
    if not result["ok"]:
        raise RuntimeError(f"{mode}: finish() did not deliver")
    return float(result["us"])


def hot_path(gw: Pushgateway, spool: str, runs: int, n: int, runai_041: str | None,
             baseline: tuple[str, str] | None = None) -> list[tuple[str, str, str]]:
    modes = {"floor": n, "metric": n, "parameter": n, "forked": n, "pushadd": max(200, n // 50)}
    if baseline is not None:
        modes["metric@baseline"] = n
    if runai_041 is not None:
        modes["runai-041"] = max(1000, n // 50)  # its finish() waits for one POST per report
    samples: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(runs):  # interleaved, so drift in machine load hits every mode alike
        for mode, count in modes.items():
            samples[mode].append(child(mode, count, gw.address, spool, runai_041,
                                       baseline[1] if baseline else None))
    floor = statistics.median(samples["floor"])
    labels = {
        "floor": "raw os.write of a same-size line (floor)",
        "metric": "reportMetric, first report to finish()",
        "parameter": "reportParameter, first report to finish()",
        "forked": "reportMetric in a forked child",
        "pushadd": "pushadd_to_gateway per report (0.4.1's way)",
        "runai-041": "runai 0.4.1 itself, reportMetric to finish()",
        "metric@baseline": f"reportMetric at {baseline[0] if baseline else ''}, first report to finish()",
    }
    rows = []
    for mode, values in samples.items():
        med = statistics.median(values)
        target = "<= 3x floor" if mode in ("metric", "parameter", "forked") else ""
        rows.append((f"CPU/report: {labels[mode]}", f"{med:.2f} us ({med / floor:.1f}x floor)", target))
    if baseline is not None:
        ratio = statistics.median(samples["metric"]) / statistics.median(samples["metric@baseline"])
        rows.append((f"  reportMetric now / at {baseline[0]} (ratio of medians)", f"{ratio:.3f}", "<= 1.10"))
    return rows


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
    return [(f"finish() after {n:,} reports, gateway up", f"median {statistics.median(times):.3f} s, "
             f"max {max(times):.3f} s", "<= 1 s")]


def _visible(gw: Pushgateway, pod: str, value: float, deadline: float) -> None:
    while gw.value(pod, metric_name("lat")) != value:
        if time.perf_counter() > deadline:
            raise RuntimeError("value never arrived")


def latency(gw: Pushgateway, spool: str, samples: int) -> list[tuple[str, str, str]]:
    from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway

    from runai.reporter import Reporter

    pod = f"bench-{uuid.uuid4()}"
    ours, base = [], []
    with Reporter(pod_uuid=pod, gateway_url=gw.address, spool_dir=spool) as reporter:
        reporter.reportMetric("lat", -1)
        _visible(gw, pod, -1, time.perf_counter() + 10)
        for i in range(samples):
            time.sleep(reporter.settings.push_interval + 0.1)  # a quiet spell
            t0 = time.perf_counter()
            reporter.reportMetric("lat", i)
            _visible(gw, pod, i, t0 + 10)
            ours.append(time.perf_counter() - t0)
    base_pod = f"bench-{uuid.uuid4()}"
    for i in range(samples):
        t0 = time.perf_counter()
        registry = CollectorRegistry()
        Gauge(metric_name("lat"), "", ["metric_name", "push_gateway_type"], registry=registry).labels(
            "lat", "metric").set(i)
        pushadd_to_gateway(gw.address, job="reporter_pod_info", registry=registry, grouping_key={"podUUID": base_pod})
        _visible(gw, base_pod, i, t0 + 10)
        base.append(time.perf_counter() - t0)

    def fmt(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"median {statistics.median(xs) * 1e3:.1f} ms, max {xs[-1] * 1e3:.1f} ms (n={len(xs)})"

    return [("report -> visible on gateway, after a quiet spell", fmt(ours), "median <= 10 ms"),
            ("  baseline: synchronous pushadd per report", fmt(base), "")]


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
    return [(f"staleness under a {rate:,}/s stream ({len(ages)} samples)",
             f"median {statistics.median(ages) * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, max {ages[-1] * 1e3:.0f} ms",
             f"<= {bound * 1e3:.0f} ms")]


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
    return [(f"pushes for {n:,} reports over {duration:.1f} s", f"{proxy.pushes} pushes "
             f"({proxy.push_bytes / max(1, proxy.pushes):.0f} B each); 0.4.1 would make {n:,}",
             f"<= {bound:.0f}")]


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
        rows.append((f"gateway load at {rate:,} reports/s ({sent:,} in {duration:.1f} s)",
                     f"{per_second:.2f} pushes/s, {proxy.push_bytes / max(1, proxy.pushes):.0f} B/push",
                     f"<= {1 / reporter.settings.push_interval:.0f}/s (+1 at the end)"))
    return rows


def drain(gw: Pushgateway, spool: str, sizes: tuple[int, ...]) -> list[tuple[str, str, str]]:
    """finish() after N reports, and recover's throughput over a spool written beforehand."""
    from benchmarks._common import finish_seconds, recover_seconds

    rows = [(f"finish() after {n:,} reports", f"{finish_seconds(gw, spool, n):.3f} s",
             "<= 5 s at 1e6" if n == 1_000_000 else "") for n in sizes]
    n = sizes[-1]
    elapsed = recover_seconds(gw, spool, n)
    rows.append((f"drain: recover of {n:,} records (100 names), gateway up",
                 f"{n / elapsed:,.0f} records/s ({elapsed:.2f} s incl. interpreter start)", ">= 200,000/s"))
    return rows


def _proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def footprint(gw: Pushgateway, spool: str, window: float) -> list[tuple[str, str, str]]:
    """The uploader's memory, and its CPU while idle and while the gateway is down."""
    from runai.reporter import Reporter

    rows = []
    proxy = FaultProxy(gw.address).start()
    try:
        reporter = Reporter(pod_uuid=f"bench-{uuid.uuid4()}", gateway_url=proxy.address, spool_dir=spool,
                            retry_timeout=1)
        reporter.reportMetric("warmup", 0)
        pid = wait_for(lambda: uploader_pids(reporter.settings.pod_uuid), 10, "the uploader")[0]
        wait_for(lambda: any(n.endswith(".ckpt") for n in os.listdir(reporter.settings.pod_dir)), 10, "a push")
        c0 = process_cpu_seconds(pid)
        time.sleep(window)  # a measurement window
        idle = (process_cpu_seconds(pid) - c0) / window
        rows.append(("uploader RSS, following a live writer", f"{_proc_rss_mib(pid):.1f} MiB", ""))
        rows.append((f"uploader CPU while idle ({window:.0f} s)", f"{idle * 100:.2f}% of a core", "about 0"))
        proxy.refuse()
        for i in range(1000):
            reporter.reportMetric("loss", float(i))
        time.sleep(1.0)  # let the first failures pass
        c0 = process_cpu_seconds(pid)
        time.sleep(window)
        down = (process_cpu_seconds(pid) - c0) / window
        rows.append((f"uploader CPU while the gateway is down ({window:.0f} s)", f"{down * 100:.2f}% of a core",
                     "no busy loop"))
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
        out = subprocess.run([sys.executable, script, *(["--quick"] if quick else [])], env=env, capture_output=True,
                             text=True, timeout=900, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [("Keras fit with and without autolog", f"not measured ({exc})", "<= 1.02x")]
    ratio = next(line for line in out.splitlines() if line.startswith("overhead of autolog"))
    cpu = next(line for line in out.splitlines() if line.startswith("the callback's own CPU"))
    return [("Keras fit with/without autolog (every batch)", ratio.split(": ", 1)[1].split(",")[0], "<= 1.02x"),
            ("  the callback's own CPU per batch", cpu.split(": ", 1)[1].split(", on")[0], "")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and samples")
    parser.add_argument("--baseline", metavar="REV", help="also run the hot path at this git revision, interleaved")
    parser.add_argument("--hot-path-only", action="store_true", help="only the hot-path rows")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 7
    with tempfile.TemporaryDirectory(prefix="runai-bench-") as work:
        spool = os.path.join(work, "spool")
        os.makedirs(spool)
        gw = Pushgateway(work).start()
        quiet_gw = Pushgateway(work).start()  # latency polls /api/v1/metrics: keep it small
        try:
            baseline = (args.baseline, unpack_revision(args.baseline, work)) if args.baseline else None
            rows = hot_path(gw, spool, runs, 20_000 if args.quick else 100_000,
                            None if args.hot_path_only else fetch_041(work), baseline)
            if args.hot_path_only:
                return _print_table(rows, runs)
            rows += finish_time(gw, spool, runs, 100_000)
            rows += latency(quiet_gw, spool, 8 if args.quick else 20)
            rows += staleness(quiet_gw, spool, 5.0 if args.quick else 15.0)
            rows += pushes(gw, spool, 100_000, 5.0 if args.quick else 10.0)
            rows += gateway_load(gw, spool, 3.0 if args.quick else 5.0)
            rows += drain(gw, spool, (1_000, 10_000, 100_000) if args.quick else (1_000, 10_000, 100_000, 1_000_000))
            rows += footprint(gw, spool, 2.0 if args.quick else 5.0)
            rows += keras_row(args.quick)
        finally:
            try:  # every uploader exits by itself once delivered
                wait_for(lambda: not uploader_pids(work), 15, "the benchmark's uploaders to exit")
            finally:
                kill_uploaders(work)
                gw.stop()
                quiet_gw.stop()
    return _print_table(rows, runs)


def _print_table(rows: list[tuple[str, str, str]], runs: int) -> int:
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"\n{'benchmark':{width}}  {'result':{vwidth}}  target")
    print(f"{'-' * width}  {'-' * vwidth}  ------")
    for name, value, target in rows:
        print(f"{name:{width}}  {value:{vwidth}}  {target}")
    print(f"\n{runs} runs per hot-path row; python {sys.version.split()[0]}; {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
