"""Cost growth: finish() and `runai-uploader recover` time against the number of reports.

    python benchmarks/cost_growth.py [--quick] [--out docs/design/cost-growth.png]

Needs matplotlib (a benchmark-only dependency: ``pip install '.[bench]'``).
Prints a table and writes a PNG; both curves should be straight lines: the
cost per report does not grow with the number of reports.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks._common import finish_seconds, recover_seconds  # noqa: E402
from harness import Pushgateway  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 100,000 reports")
    parser.add_argument(
        "--out", default=os.path.join(REPO, "docs", "design", "cost-growth.png"), help="the PNG to write"
    )
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("this benchmark draws with matplotlib: pip install '.[bench]'", file=sys.stderr)
        return 2
    sizes = [1_000, 3_000, 10_000, 30_000, 100_000] + ([] if args.quick else [300_000, 1_000_000])
    finish, recover = [], []
    with tempfile.TemporaryDirectory(prefix="runai-growth-") as work:
        gw = Pushgateway(work).start()
        try:
            for n in sizes:
                finish.append(finish_seconds(gw, work, n))
                recover.append(recover_seconds(gw, work, n))
        finally:
            gw.stop()
    print(f"\n{'reports':>10s}  {'finish()':>10s}  {'recover':>10s}  {'recover per report':>18s}")
    for n, f, r in zip(sizes, finish, recover, strict=True):
        print(f"{n:>10,d}  {f:>9.3f}s  {r:>9.3f}s  {r / n * 1e6:>15.2f} us")

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.plot(sizes, finish, "o-", label="finish() after the reports")
    ax.plot(sizes, recover, "s-", label="runai-uploader recover (incl. interpreter start)")
    ax.set_xlabel("reports")
    ax.set_ylabel("seconds")
    ax.set_title("Cost growth: linear in the number of reports")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.ticklabel_format(style="plain", axis="x")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
