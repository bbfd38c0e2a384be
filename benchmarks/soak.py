"""Soak: 10 million reports through one writer, disk use sampled against the bound.

    python benchmarks/soak.py [--quick] [--reports N]

With the default rotation (64 MiB per spool file) and history bound (256 MiB
of delivered spool per pod), disk use should stay under the history bound
plus the files still being written or delivered. Reports are paced (default
200,000/s, far above any training job's rate): undelivered data is never
deleted, so a writer outrunning the uploader grows the disk use by its
backlog, by design. Starts its own Pushgateway.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness import Pushgateway, metric_name, uploader_pids, wait_for  # noqa: E402
from runai.reporter import Reporter  # noqa: E402
from runai.reporter.settings import DEFAULT_HISTORY_BYTES, DEFAULT_SPOOL_FILE_BYTES  # noqa: E402

MIB = 1 << 20


def disk_use(path: str) -> int:
    total = 0
    for name in os.listdir(path):
        try:
            total += os.stat(os.path.join(path, name)).st_blocks * 512
        except FileNotFoundError:
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 million reports, 8 MiB files, 32 MiB history")
    parser.add_argument("--reports", type=int, help="how many reports (default: 10 million)")
    parser.add_argument(
        "--rate",
        type=float,
        default=200_000,
        help="reports per second (default: 200,000; the uploader's sustained drain rate bounds it)",
    )
    args = parser.parse_args(argv)
    reports = args.reports or (1_000_000 if args.quick else 10_000_000)
    file_bytes = 8 * MIB if args.quick else DEFAULT_SPOOL_FILE_BYTES
    history = 32 * MIB if args.quick else DEFAULT_HISTORY_BYTES
    with tempfile.TemporaryDirectory(prefix="runai-soak-") as work:
        gateway = Pushgateway(work).start()
        try:
            reporter = Reporter(
                pod_uuid="soak",
                gateway_url=gateway.address,
                spool_dir=work,
                spool_file_bytes=file_bytes,
                history_bytes=history,
            )
            peak = [0]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.1):
                    peak[0] = max(peak[0], disk_use(reporter.settings.pod_dir))

            sampler = threading.Thread(target=sample, name="disk-sampler")
            sampler.start()
            t0 = time.perf_counter()
            batch = 1000
            for start in range(0, reports, batch):
                for i in range(start, min(start + batch, reports)):
                    reporter.reportMetric("loss", i)
                ahead = t0 + (start + batch) / args.rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the load, not synchronising
            written = time.perf_counter() - t0
            delivered = reporter.finish(timeout=600)
            finished = time.perf_counter() - t0
            wait_for(lambda: not uploader_pids(work), 60, "the uploader to exit")
            done.set()
            sampler.join()
            final = disk_use(reporter.settings.pod_dir)
            last = gateway.value("soak", metric_name("loss"))
        finally:
            gateway.stop()
    line_bytes = 90
    # Delivered history, plus what is not history yet: the live file, one file
    # being delivered, and the files rotated within the last second (a writer
    # lets go of a rotated file a second after rotating it).
    recent = args.rate * line_bytes * 1.0
    bound = history + 2 * file_bytes + recent
    print(f"\n{'soak':44s}  result")
    print(f"{'reports':44s}  {reports:,} (about {reports * line_bytes / MIB:,.0f} MiB of spool)")
    print(f"{'written in':44s}  {written:.1f} s ({reports / written:,.0f} reports/s, paced at {args.rate:,.0f})")
    print(f"{'finish() returned':44s}  {delivered} after {finished - written:.1f} s")
    print(f"{'last value on the gateway':44s}  {last:,.0f} (expected {reports - 1:,})")
    print(f"{'peak disk use (sampled every 0.1 s)':44s}  {peak[0] / MIB:.1f} MiB")
    print(f"{'disk use after the uploader exited':44s}  {final / MIB:.1f} MiB")
    print(
        f"{'bound: history + 2 files + last second':44s}  {bound / MIB:.1f} MiB "
        f"({history / MIB:.0f} + 2 x {file_bytes / MIB:.0f} + {recent / MIB:.0f})"
    )
    ok = delivered and last == reports - 1 and peak[0] <= bound and final <= history
    print(f"\nwithin the bound and all delivered: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
