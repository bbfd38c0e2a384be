"""What a report costs above its design floor, step by step, in one process (timeit, interleaved).

    python benchmarks/floor_steps.py [--runs R] [-n N]

The design floor formats the spool's metric line with one f-string and os.write()s it. Each following row
adds, cumulatively, one thing reportMetric does beyond that, written out inline (no call but the one row
that adds a call); the last row is a real Reporter's reportMetric (its uploader running, against a
Pushgateway this script starts on 127.0.0.1). Rows alternate within each run; figures are the median and the
minimum over runs, and their ratio to the design floor's.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import sys
import tempfile
import time
import timeit
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness import Pushgateway, reap_uploaders  # noqa: E402

_LINE = 'f\'{{"seq":{seq},"ts_us":{ts},"kind":"metric","name":"{name}","value":{v!r}}}\\n\'.encode()'
# Cumulative: each step's code is the previous one's plus one thing.
STEPS = [
    ("design floor: one f-string + os.write", ["seq = i", "ts = ns() // 1000", f"w(fd, {_LINE})"]),
    (
        "+ a call of a Python function (2 arguments)",
        ["call(name, v)", "seq = i", "ts = ns() // 1000", f"w(fd, {_LINE})"],
    ),
    (
        "+ the name and value checks (a known name, a float)",
        [
            "call(name, v)",
            "if type(name) is not str or name not in s.names or type(v) is not float: pass",
            "seq = i",
            "ts = ns() // 1000",
            f"w(fd, {_LINE})",
        ],
    ),
    (
        "+ the rare-path flag",
        [
            "call(name, v)",
            "if type(name) is not str or name not in s.names or type(v) is not float: pass",
            "if s.slow: pass",
            "seq = i",
            "ts = ns() // 1000",
            f"w(fd, {_LINE})",
        ],
    ),
    (
        "+ the sequence counter and the rotation mask",
        [
            "call(name, v)",
            "if type(name) is not str or name not in s.names or type(v) is not float: pass",
            "if s.slow: pass",
            "seq = next(s.seq)",
            "if not seq & 0xFFF: pass",
            "ts = ns() // 1000",
            f"w(fd, {_LINE})",
        ],
    ),
    (
        "+ the finiteness test",
        [
            "call(name, v)",
            "if type(name) is not str or name not in s.names or type(v) is not float: pass",
            "if s.slow: pass",
            "seq = next(s.seq)",
            "if not seq & 0xFFF: pass",
            "ts = ns() // 1000",
            f"d = {_LINE} if isfinite(v) else b''",
            "w(fd, d)",
        ],
    ),
    (
        "+ the short-write check and the tick's clock test",
        [
            "call(name, v)",
            "if type(name) is not str or name not in s.names or type(v) is not float: pass",
            "if s.slow: pass",
            "seq = next(s.seq)",
            "if not seq & 0xFFF: pass",
            "ts = ns() // 1000",
            f"d = {_LINE} if isfinite(v) else b''",
            "if w(s.fd, d) != len(d): pass",
            "if ts >= s.tick_at: pass",
        ],
    ),
    ("reportMetric of a Reporter, as a user calls it", ["reporter.reportMetric(name, v)"]),
    # The spool file is in the pod directory the uploader watches: while its watch is idle (not yet
    # switched to streaming, see uploader/delivery/watch.py) each write(2) there also queues an inotify event.
    ("design floor, its file in the watched pod directory", ["seq = i", "ts = ns() // 1000", f"w(pod_fd, {_LINE})"]),
]


class _State:
    """Stands for the writer's attributes the steps read."""

    def __init__(self, fd: int) -> None:
        self.names, self.slow, self.fd, self.tick_at = {"loss"}, False, fd, 1 << 62
        self.seq = itertools.count(1)


def _noop(name: str, value: float) -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("-n", type=int, default=50_000, help="reports per row and run")
    args = parser.parse_args(argv)
    from runai.reporter import Reporter

    with tempfile.TemporaryDirectory(prefix="runai-floor-") as work:
        gw = Pushgateway(work).start()
        try:
            reporter = Reporter(
                pod_uuid=f"floor-{uuid.uuid4()}", gateway_url=gw.address, spool_dir=os.path.join(work, "spool")
            )
            reporter.reportMetric("loss", 0.0)
            fd = os.open(os.path.join(work, "floor.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            # Not a spool file (no .jsonl): the uploader's watch sees its writes, its reader ignores them.
            pod_fd = os.open(
                os.path.join(reporter.settings.pod_dir, "floor.bin"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )
            env = {
                "w": os.write,
                "ns": time.time_ns,
                "fd": fd,
                "pod_fd": pod_fd,
                "name": "loss",
                "s": _State(fd),
                "call": _noop,
                "isfinite": math.isfinite,
                "reporter": reporter,
            }
            timers = [
                (
                    label,
                    timeit.Timer(
                        "for i in range(n):\n    v = 0.123456789 + i\n" + "".join(f"    {line}\n" for line in body),
                        globals={**env, "n": args.n},
                    ),
                )
                for label, body in STEPS
            ]
            samples: dict[str, list[float]] = {label: [] for label, _ in STEPS}
            for _ in range(args.runs):
                for label, timer in timers:
                    samples[label].append(timer.timeit(1) / args.n * 1e6)
                os.ftruncate(fd, 0)
                os.ftruncate(pod_fd, 0)
            os.close(fd)
            os.close(pod_fd)
            assert reporter.finish()
        finally:
            try:
                reap_uploaders(work, 15, "the uploader to exit")
            finally:
                gw.stop()
    floor, floor_min = statistics.median(samples[STEPS[0][0]]), min(samples[STEPS[0][0]])
    width = max(len(label) for label, _ in STEPS)
    print(f"{'step (cumulative)':{width}}  median µs  × floor  min µs  × floor")
    for label, values in samples.items():
        med, low = statistics.median(values), min(values)
        print(f"{label:{width}}  {med:9.3f}  {med / floor:7.3f}  {low:6.3f}  {low / floor_min:7.3f}")
    print(f"\n{args.runs} runs of {args.n:,} reports per row, interleaved; python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
