"""The node agent at scale: how long it takes to deliver N dead pods (its catch-up), its CPU and the receiver's,
its memory and idle CPU afterwards, and how soon an orphaned pod's last value reaches the gateway.

    python benchmarks/agent_scale.py [--pods 1000,2000,5000,10000] [--receivers gateway,remote-write]
        [--baseline REV [--baseline-pods 1000,2000]] [--plot docs/design/agent-catchup.png] [--quick]

For each size, that many dead pods (a finished spool of 20 reports each, never delivered) are laid in a fresh
spool directory, a fresh receiver is started (a real Pushgateway; ``gateway-unchecked``: one run with
``--push.disable-consistency-check``; ``remote-write``: VictoriaMetrics), then ``runai-uploader agent`` over them:

* catch-up: the seconds from the agent's start until it has delivered every pod (it logs one ``done`` line per
  pod: the benchmark counts them on its stderr, which costs the agent nothing), pods/s, and the CPU seconds
  the agent (its start included) and the receiver spent meanwhile: a receiver whose cost per pod grows with the
  pods it holds is told apart from the agent;
* RSS and threads once it has, and its CPU over an idle window (every pod delivered, nothing written, found more
  than NEW_POD_SECONDS ago: the steady state). The benchmark reads the agent's totals from its page restricted
  with ``?name[]=`` (a few lines whatever the pods), never the whole page;
* orphan delay (Pushgateway, up to --delay-pods pods): a "pod" process writes a last value while holding the
  pod's lock, as its own uploader does, and is killed with SIGKILL; the seconds from the kill to the value on
  the gateway, the median of --delays pods; beside it ``runai-uploader recover`` started at the kill.

With --baseline REV the agent of git revision REV runs too, on the --baseline-pods sizes, in the same run.

--empty 10000,100000 adds rows of EMPTY pod directories of one non-root uid (issue 22, point 3): the agent's idle
RSS (before and after a scrape of the whole page), idle CPU and the whole /metrics page's size; --hostile 10000,100000
adds rows of a victim's orphaned pod timed (as the orphan delay above) with that many such directories present and
256 pods of the same uid each with a live writer and no uploader (which took every delivery slot before issue
22). The base revision runs them too, up to --empty-baseline-max directories. --pods= --baseline-pods= leave the
catch-up out.
Linear catch-up: the time per pod at the largest size is within 1.5x of the time per pod at the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks._agent_run import Receiver, run_agent  # noqa: E402
from benchmarks._empty_rows import empty_row, print_empty_table  # noqa: E402
from benchmarks._hot_path import unpack_revision  # noqa: E402
from runai.reporter.spool import SpoolWriter  # noqa: E402

REPORTS = 20


def _dead_pods(spool: str, count: int) -> None:
    for i in range(count):
        pod = f"dead-{i:06d}"
        writer = SpoolWriter(os.path.join(spool, pod), pod)
        for j in range(REPORTS):
            writer.write_metric("loss", float(j))
        writer.close()


def measure(
    root: str,
    pods: int,
    receiver: str,
    idle: float,
    delays: int,
    code: str | None,
    max_deliveries: int | None,
    limit: float,
) -> dict[str, Any]:
    spool = os.path.join(root, f"spool-{pods}-{'baseline' if code else 'today'}")
    os.makedirs(spool, mode=0o700)
    _dead_pods(spool, pods)
    try:
        with Receiver(root, receiver) as rx:
            row = run_agent(
                rx, spool, pods, idle, 0 if receiver == "remote-write" else delays, code, max_deliveries, limit
            )
    finally:
        shutil.rmtree(spool, ignore_errors=True)
    row.update(pods=pods, code="baseline" if code else "today", receiver=receiver)
    return row


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]], idle: float) -> None:
    print(
        f"node agent catch-up: N dead pods ({REPORTS} reports each); {os.cpu_count()} CPUs; "
        f"idle CPU over {idle:.0f} s; CPU seconds include the agent's start"
    )
    print(
        f"{'receiver':>17} {'code':>8} {'pods':>6} {'catch-up s':>10} {'pods/s':>7} {'ms/pod':>7} "
        f"{'agent CPU s':>11} {'receiver CPU s':>14} {'RSS MiB':>8} {'threads':>7} {'idle CPU %':>10} "
        f"{'orphan s':>8} {'recover s':>9}"
    )
    for r in rows:
        per_pod = None if r["catch_up"] is None else 1000 * r["catch_up"] / r["pods"]
        rate = None if r["catch_up"] is None else r["pods"] / r["catch_up"]
        print(
            f"{r['receiver']:>17} {r['code']:>8} {r['pods']:>6} {_fmt(r['catch_up'], '10.2f')} {_fmt(rate, '7.0f')} "
            f"{_fmt(per_pod, '7.2f')} {r['agent_cpu']:>11.2f} {r['receiver_cpu']:>14.2f} "
            f"{_fmt(r.get('rss'), '8.1f')} {_fmt(r.get('threads'), '7')} {_fmt(r.get('cpu'), '10.3f')} "
            f"{_fmt(r.get('delay'), '8.2f')} {_fmt(r.get('recover'), '9.2f')}"
        )
    for (receiver, code), done in _series(rows).items():
        if len(done) >= 2:
            small, large = done[0], done[-1]
            ratio = (large["catch_up"] / large["pods"]) / (small["catch_up"] / small["pods"])
            print(
                f"{receiver}, {code}: time per pod at {large['pods']:,} pods / at {small['pods']:,} pods = "
                f"{ratio:.2f} (linear: <= 1.5)"
            )


def _series(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The finished rows by (receiver, code), each by size."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["pods"]):
        if r["catch_up"] is not None:
            out.setdefault((r["receiver"], r["code"]), []).append(r)
    return out


_NAMES = {
    "gateway": "Pushgateway",
    "gateway-unchecked": "Pushgateway, no consistency check",
    "remote-write": "VictoriaMetrics (remote write)",
}


def plot(rows: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    colours = dict(zip(_NAMES, ("tab:blue", "tab:green", "tab:orange"), strict=True))
    for (receiver, code), done in _series(rows).items():
        xs, ys = [r["pods"] for r in done], [r["catch_up"] for r in done]
        colour = colours[receiver]
        ax.plot(
            xs,
            ys,
            "o-" if code == "today" else "s--",
            color=colour,
            alpha=1 if code == "today" else 0.6,
            label=f"{_NAMES[receiver]}, {'this change' if code == 'today' else 'before'}",
        )
        if code == "today" and len(done) > 1:  # linear from the smallest size
            ax.plot([0, xs[-1]], [0, ys[0] / xs[0] * xs[-1]], ":", color=colour, alpha=0.7)
    ax.axhline(60, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("dead pods (20 reports each); dotted: linear from the smallest size; dashed: one minute")
    ax.set_ylabel("seconds until all delivered")
    ax.set_title(f"Node agent catch-up ({os.cpu_count()} cores, shared with other work)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.ticklabel_format(style="plain", axis="x")
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", default="1000,2000,5000,10000", help="sizes, comma-separated (default: %(default)s)")
    parser.add_argument(
        "--receivers",
        default="gateway",
        help="comma-separated, of gateway, gateway-unchecked (a Pushgateway with "
        "--push.disable-consistency-check), remote-write (VictoriaMetrics) (default: %(default)s)",
    )
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="the idle CPU window (default: 10)")
    parser.add_argument("--delays", type=int, default=5, help="orphaned pods timed per size, gateway only (default: 5)")
    parser.add_argument("--delay-pods", type=int, default=1000, help="orphan delays up to this size (default: 1000)")
    parser.add_argument("--max-deliveries", type=int, help="the agent's --max-deliveries (default: its own)")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds a catch-up may take (default: 600)")
    parser.add_argument("--baseline", metavar="REV", help="also run the agent of this git revision")
    parser.add_argument("--baseline-pods", default="1000,2000", help="its sizes (default: %(default)s)")
    parser.add_argument("--plot", metavar="PNG", help="draw catch-up time against pods into this PNG")
    parser.add_argument("--save", metavar="JSON", help="write the rows measured into this file")
    parser.add_argument(
        "--load",
        metavar="JSON",
        action="append",
        default=[],
        help="add the rows another run saved to the table and the plot (repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="100 and 300 pods, a 3 s window, 2 delays")
    parser.add_argument("--empty", default="", help="sizes of empty pod directories, comma-separated (default: none)")
    parser.add_argument(
        "--hostile", default="", help="sizes of a hostile uid's empty directories beside its live pods, a victim timed"
    )
    parser.add_argument("--empty-baseline-max", type=int, default=10_000, help="the base's largest (default: 10000)")
    args = parser.parse_args()
    sizes = [100, 300] if args.quick else [int(n) for n in args.pods.split(",") if n]
    idle, delays = (3.0, 2) if args.quick else (args.idle_seconds, args.delays)
    rows = []
    with tempfile.TemporaryDirectory(prefix="agent-scale-") as root:
        base = unpack_revision(args.baseline, root) if args.baseline else None
        runs = [(n, None) for n in sizes] + [(int(n), base) for n in args.baseline_pods.split(",") if base and n]
        for receiver in args.receivers.split(","):
            if receiver not in _NAMES:
                parser.error(f"--receivers: {receiver!r} is none of {', '.join(_NAMES)}")
            for n, code in runs:
                rows.append(
                    measure(
                        root,
                        n,
                        receiver,
                        idle,
                        delays if n <= args.delay_pods else 0,
                        code,
                        args.max_deliveries,
                        args.limit,
                    )
                )
                print(f"  {receiver} {rows[-1]['code']} {n} pods: {_fmt(rows[-1]['catch_up'], '.2f')} s", flush=True)
        empty = _empty_rows(args, root, base, idle, delays)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(rows, f, indent=1)
    for path in args.load:
        with open(path) as f:
            rows += json.load(f)
    if rows:
        print_table(rows, idle)
    if empty:
        print_empty_table(empty, idle)
    if args.plot:
        plot(rows, args.plot)


def _empty_rows(args: argparse.Namespace, root: str, base: str | None, idle: float, delays: int) -> list[Any]:
    """The rows of --empty and --hostile, the base's beside today's (up to --empty-baseline-max)."""
    runs = [(int(n), 0) for n in args.empty.split(",") if n] + [(int(n), delays) for n in args.hostile.split(",") if n]
    rows: list[Any] = []
    with Receiver(root, "gateway") as rx:
        for n, timed in runs:
            for code in (None, base) if base and n <= args.empty_baseline_max else (None,):
                rows.append(empty_row(root, n, code, idle, timed, rx, args.limit))
                print(f"  {n} empty dirs, {rows[-1]['code']}: settled in {rows[-1]['settle']:.1f} s", flush=True)
    return rows


if __name__ == "__main__":
    main()
