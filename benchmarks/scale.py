"""Scale: many simulated pods, each with a writer at 1 kHz and its own uploader, one gateway.

    python benchmarks/scale.py [--pods 200] [--rate 1000] [--seconds 20] [--quick]

Writers are grouped in a few processes (a pod is one Reporter with its own
podUUID, so each starts its own real uploader process, as in a cluster). The
gateway is polled for every pod's latest value, which is the wall-clock time it
was reported, to measure staleness. Prints a table: delivery, staleness, the
gateway's CPU, the reports actually achieved, and where the machine's CPU went.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness import (  # noqa: E402
    Pushgateway,
    job_env,
    metric_name,
    process_cpu_seconds,
    reap_uploaders,
    uploader_pids,
    wait_for,
)

_WRITERS = r"""
import json, sys, time
from runai.reporter import Reporter
rate, seconds, spool, gateway = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
reporters = [Reporter(pod_uuid=p, gateway_url=gateway, spool_dir=spool, finish_timeout=300) for p in sys.argv[5:]]
print("ready", flush=True)
sys.stdin.readline()
t0, ticks = time.perf_counter(), 0
while time.perf_counter() - t0 < seconds:
    now = time.time()
    for r in reporters:
        r.reportMetric("now", now)
    ticks += 1
    time.sleep(max(0.0, t0 + ticks / rate - time.perf_counter()))  # pacing, as a training loop would
last = time.time()
for r in reporters:
    r.reportMetric("now", last)
ok = all(r.finish() for r in reporters)
print(json.dumps({"ok": ok, "ticks": ticks, "pods": len(reporters), "elapsed": time.perf_counter() - t0,
                  "last": last}), flush=True)
"""


def machine_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        values = [float(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--rate", type=float, default=1000.0, help="reports per second per pod")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--processes", type=int, default=10, help="writer processes the pods are spread over")
    parser.add_argument("--quick", action="store_true", help="20 pods for 10 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.pods, args.seconds, args.processes = 20, 10.0, 2
    pods = [f"scale-{i:03d}" for i in range(args.pods)]
    with tempfile.TemporaryDirectory(prefix="runai-scale-") as work:
        gateway = Pushgateway(work).start()
        jobs: list[subprocess.Popen[str]] = []
        try:
            env = job_env()
            for k in range(args.processes):
                group = pods[k :: args.processes]
                jobs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            _WRITERS,
                            str(args.rate),
                            str(args.seconds),
                            work,
                            gateway.address,
                            *group,
                        ],
                        env=env,
                        text=True,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                    )
                )
            for job in jobs:
                assert job.stdout is not None and job.stdout.readline().strip() == "ready"
            wait_for(lambda: len(uploader_pids(work)) >= args.pods, 120, "every pod's uploader to start")
            gw_cpu0, (busy0, total0) = process_cpu_seconds(gateway.proc.pid), machine_busy()  # type: ignore[union-attr]
            started = time.monotonic()
            for job in jobs:
                assert job.stdin is not None
                job.stdin.write("go\n")
                job.stdin.flush()
            ages: list[float] = []
            while time.monotonic() - started < args.seconds:
                t_poll = time.time()
                for group in gateway.groups():
                    family = group.get(metric_name("now"))
                    if family:
                        ages.append(t_poll - float(family["metrics"][0]["value"]))
                time.sleep(0.5)  # sampling, not synchronisation
            window = time.monotonic() - started
            gw_cpu = (process_cpu_seconds(gateway.proc.pid) - gw_cpu0) / window  # type: ignore[union-attr]
            busy1, total1 = machine_busy()
            results = [json.loads(job.communicate(timeout=600)[0].splitlines()[-1]) for job in jobs]
            delivered = all(r["ok"] for r in results)
            last_ok = sum(
                1
                for g in gateway.groups()
                for r in results
                if g.get(metric_name("now")) and float(g[metric_name("now")]["metrics"][0]["value"]) == r["last"]
            )
        finally:
            for job in jobs:
                job.kill()
            try:
                reap_uploaders(work, 60, "the uploaders to exit")
            finally:
                gateway.stop()
    achieved = sum(r["ticks"] * r["pods"] / r["elapsed"] for r in results)
    ages.sort()
    p99 = ages[int(len(ages) * 0.99)] if ages else float("nan")
    busy = (busy1 - busy0) / (total1 - total0)
    print(f"\n{'scale':48s}  result")
    print(f"{'pods (writer + own uploader each)':48s}  {args.pods}, over {args.processes} writer processes")
    print(f"{'asked':48s}  {args.rate:,.0f} reports/s per pod, {args.pods * args.rate:,.0f}/s in all")
    print(f"{'achieved':48s}  {achieved:,.0f} reports/s in all ({achieved / args.pods:,.0f} per pod)")
    print(f"{'everything delivered (finish() True everywhere)':48s}  {delivered}")
    print(f"{'pods whose last value is on the gateway':48s}  {last_ok} of {args.pods}")
    print(
        f"{'staleness of the values shown':48s}  median {statistics.median(ages):.2f} s, p99 {p99:.2f} s "
        f"({len(ages)} samples)"
        if ages
        else "no samples"
    )
    print(f"{'gateway CPU':48s}  {gw_cpu * 100:.0f}% of a core")
    print(f"{'machine CPU busy (all processes)':48s}  {busy * 100:.0f}% of {os.cpu_count()} cores")
    return 0 if delivered else 1


if __name__ == "__main__":
    sys.exit(main())
