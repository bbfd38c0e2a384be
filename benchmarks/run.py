"""The benchmark suite: every row beside a baseline measured in the same run.

    python benchmarks/run.py [--quick] [--baseline REV] [--hot-path-only | --remote-write-only]

With ``--baseline REV`` the hot-path rows (and the drains, remote write's too) also run the library as it was at the
git revision REV (unpacked into a temp dir, interleaved with today's runs), so
that a change to the report path is judged against its baseline in one run.

Starts its own Pushgateway on 127.0.0.1 (Debian's prometheus-pushgateway) and a
Prometheus taking remote writes (Debian's prometheus, with an out-of-order
window), and prints one table. Figures are medians over repeated runs: the machines are
noisy, so compare ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks._hot_path import fetch_041, hot_path, unpack_revision  # noqa: E402
from benchmarks._remote_write_rows import rw_drain, rw_footprint, rw_latency  # noqa: E402
from benchmarks._rows import (  # noqa: E402
    drain,
    drain_versus,
    finish_time,
    footprint,
    gateway_load,
    keras_row,
    latency,
    pushes,
    staleness,
)
from benchmarks.integrations_overhead import rows as integrations_rows  # noqa: E402
from harness import Prometheus, Pushgateway, reap_uploaders  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and samples")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the hot path and the drains (remote write's too) at this git revision, interleaved",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--hot-path-only", action="store_true", help="only the hot-path rows")
    only.add_argument("--remote-write-only", action="store_true", help="only the remote-write sink's rows")
    args = parser.parse_args(argv)
    runs = 3 if args.quick else 7
    with tempfile.TemporaryDirectory(prefix="runai-bench-") as work:
        spool = os.path.join(work, "spool")
        os.makedirs(spool)
        gw = Pushgateway(work).start()
        quiet_gw = Pushgateway(work).start()  # latency polls /api/v1/metrics: keep it small
        receiver = Prometheus(work, remote_write=True, out_of_order_window="1h").start()
        try:
            baseline = (args.baseline, unpack_revision(args.baseline, work)) if args.baseline else None
            if args.remote_write_only:
                return _print_table(_remote_write(gw, receiver, spool, args.quick, baseline), runs)
            rows = hot_path(
                gw,
                spool,
                runs,
                20_000 if args.quick else 100_000,
                None if args.hot_path_only else fetch_041(work),
                baseline,
            )
            if baseline is not None:
                rows += drain_versus(gw, spool, 20_000 if args.quick else 100_000, runs, baseline)
            if args.hot_path_only:
                return _print_table(rows, runs)
            rows += finish_time(gw, spool, runs, 100_000)
            rows += latency(quiet_gw, spool, 8 if args.quick else 20)
            rows += staleness(quiet_gw, spool, 5.0 if args.quick else 15.0)
            rows += pushes(gw, spool, 100_000, 5.0 if args.quick else 10.0)
            rows += gateway_load(gw, spool, 3.0 if args.quick else 5.0)
            rows += drain(gw, spool, (1_000, 10_000, 100_000) if args.quick else (1_000, 10_000, 100_000, 1_000_000))
            rows += footprint(gw, spool, 2.0 if args.quick else 5.0)
            rows += _remote_write(gw, receiver, spool, args.quick, baseline)
            rows += keras_row(args.quick)
            rows += integrations_rows(args.quick)
        finally:
            try:  # every uploader exits by itself once delivered
                reap_uploaders(work, 15, "the benchmark's uploaders to exit")
            finally:
                gw.stop()
                quiet_gw.stop()
                receiver.stop()
    return _print_table(rows, runs)


def _remote_write(
    gw: Pushgateway, receiver: Prometheus, spool: str, quick: bool, baseline: tuple[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """Issue 12's rows: the remote-write sink against a real Prometheus, beside the gateway (and *baseline*)."""
    return (
        rw_drain(gw, receiver, spool, 100_000 if quick else 1_000_000, 5 if quick else 3, baseline)
        + rw_latency(receiver, spool, 8 if quick else 20)
        + rw_footprint(gw, receiver, spool, 3.0 if quick else 10.0)
    )


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
