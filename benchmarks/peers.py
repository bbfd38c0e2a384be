"""This reporter beside what a user would pick instead: W&B (offline) and MLflow (a local file store).

    python benchmarks/peers.py [--python PY] [-n N] [--runs R] [--plot PNG]

Each logger runs in a fresh interpreter of PY (default: this one), runs alternating between loggers; the
figures are medians. Install the peers in a venv of their own (benchmarks/requirements-peers.txt) and pass
its python; a logger PY cannot import is reported as such. Nothing leaves the machine: W&B runs with
WANDB_MODE=offline and every directory in a temp dir, MLflow on a file store there, this reporter against a
Pushgateway this script starts on 127.0.0.1.

Columns:
  CPU/report    the training process's CPU (user + system, all threads) from the first call to the end of the
                logger's own finish (finish(), run.finish(), end_run()), over N reports, per report
  flush         wall-clock seconds of that finish: from the last call until everything is flushed (for this
                reporter: delivered to the gateway)
  durable       a second run SIGKILLs the training process right after the N-th call returns; once the
                logger's own helper processes have exited, how many of the N reports are on disk
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
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness import Pushgateway, job_env, reap_uploaders, wait_for  # noqa: E402

CHILD = os.path.join(REPO, "benchmarks", "_peer_child.py")
LABELS = {
    "os.write": "os.write of a same-size line (no logger)",
    "runai": "this reporter, reportMetric",
    "wandb": "wandb, offline, run.log",
    "mlflow": "mlflow, file store, log_metric",
    "mlflow-async": "mlflow, file store, log_metric(synchronous=False)",
}
IMPORTS = {"runai": "runai.reporter", "wandb": "wandb", "mlflow": "mlflow", "mlflow-async": "mlflow"}


def _env(logger: str, work: str, gateway: str) -> dict[str, str]:
    env = job_env(
        podUUID=f"peers-{uuid.uuid4()}", reporterGatewayURL=gateway, reporterSpoolDir=os.path.join(work, "spool")
    )
    env.update(
        HOME=work,  # nothing written outside the run's directory, whatever a logger keeps in ~
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=work,
        WANDB_CONFIG_DIR=os.path.join(work, "wandb-config"),
        WANDB_CACHE_DIR=os.path.join(work, "wandb-cache"),
        WANDB_DATA_DIR=os.path.join(work, "wandb-data"),
        MLFLOW_TRACKING_URI="file://" + os.path.join(work, "mlruns"),
        # MLflow 3 refuses a file store unless asked: the local store a new user gets without a database.
        MLFLOW_ALLOW_FILE_STORE="true",
    )
    return env


def _child(python: str, what: str, logger: str, n: int, work: str, gateway: str) -> dict[str, object]:
    out = subprocess.run(
        [python, CHILD, what, logger, str(n), work],
        env=_env(logger, work, gateway),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=work,
    )
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{logger} {what}: exit {out.returncode}\n{out.stderr[-2000:]}")
    result: dict[str, object] = json.loads(lines[-1])
    return result


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def durable(python: str, logger: str, n: int, base: str, gateway: str) -> int:
    """Reports on disk after a SIGKILL right after the n-th call, once the logger's helpers have exited."""
    work = tempfile.mkdtemp(prefix=f"kill-{logger}-", dir=base)
    proc = subprocess.run(
        [python, CHILD, "kill", logger, str(n), work],
        env=_env(logger, work, gateway),
        capture_output=True,
        text=True,
        timeout=900,
        cwd=work,
    )
    if proc.returncode != -9:
        raise RuntimeError(f"{logger} kill: exit {proc.returncode}, not SIGKILL\n{proc.stderr[-2000:]}")
    helpers = json.loads(proc.stdout.splitlines()[0])["children"]
    # A helper that holds reports (W&B's service) may still write them: wait until it has gone.
    wait_for(lambda: not any(_alive(pid) for pid in helpers), 60, f"{logger}'s helper processes to exit")
    return int(_child(python, "count", logger, n, work, gateway)["count"])


def installed(python: str, logger: str) -> bool:
    module = IMPORTS.get(logger)
    if module is None:
        return True
    env = job_env()
    return (
        subprocess.run(
            [python, "-c", f"import {module}"], env=env, capture_output=True, timeout=120, cwd=REPO
        ).returncode
        == 0
    )


def measure(python: str, n: int, runs: int, base: str, gateway: str) -> dict[str, dict[str, object]]:
    loggers = [name for name in LABELS if installed(python, name)]
    cpu: dict[str, list[float]] = {name: [] for name in loggers}
    flush: dict[str, list[float]] = {name: [] for name in loggers}
    kept: dict[str, list[int]] = {name: [] for name in loggers}
    for _ in range(runs):  # alternating, so drift in the machine's load hits every logger alike
        for name in loggers:
            result = _child(python, "time", name, n, tempfile.mkdtemp(prefix=f"{name}-", dir=base), gateway)
            cpu[name].append(float(result["us"]))  # type: ignore[arg-type]
            flush[name].append(float(result["flush_s"]))  # type: ignore[arg-type]
        for name in loggers:
            kept[name].append(durable(python, name, n, base, gateway))
    return {
        name: {
            "us": statistics.median(cpu[name]),
            "us_runs": cpu[name],
            "flush_s": statistics.median(flush[name]),
            "kept": kept[name],
        }
        for name in loggers
    } | {name: {"missing": True} for name in LABELS if name not in loggers}


def table(results: dict[str, dict[str, object]], n: int, runs: int) -> str:
    rows = [
        f"| logger | CPU/report, µs (median of {runs}) | runs | last call → flushed | "
        f"durable on return: of {n:,} reports after SIGKILL |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if r.get("missing"):
            rows.append(f"| {LABELS[name]} | not installed in this Python | | | |")
            continue
        kept = r["kept"]
        assert isinstance(kept, list)
        verdict = "yes" if min(kept) == n else "no"
        runs_text = " / ".join(f"{x:.1f}" for x in r["us_runs"])  # type: ignore[attr-defined]
        rows.append(
            f"| {LABELS[name]} | {r['us']:.1f} | {runs_text} | {float(r['flush_s']) * 1e3:.1f} ms "  # type: ignore[arg-type]
            f"| {verdict}: {min(kept):,} kept (each run: {', '.join(f'{k:,}' for k in kept)}) |"
        )
    return "\n".join(rows)


def plot(results: dict[str, dict[str, object]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, r in results.items() if not r.get("missing")]
    values = [float(results[name]["us"]) for name in names]  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    bars = ax.barh(
        [LABELS[name] for name in names],
        values,
        color=["#888" if n == "os.write" else "#2a7" if n == "runai" else "#c63" for n in names],
    )
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("training-process CPU per report, µs (log scale; first call to finish)")
    for bar, value in zip(bars, values, strict=True):
        ax.text(value * 1.1, bar.get_y() + bar.get_height() / 2, f"{value:.1f} µs", va="center", fontsize=8)
    ax.set_xlim(min(values) / 2, max(values) * 8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _versions(python: str) -> str:
    """Python's version and each peer's, as PYTHON has them."""
    code = (
        "import sys, importlib.metadata as m\n"
        "def v(p):\n    try: return m.version(p)\n    except m.PackageNotFoundError: return 'absent'\n"
        'print(f\'python {sys.version.split()[0]}, wandb {v("wandb")}, mlflow-skinny {v("mlflow-skinny")}\')'
    )
    return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip()


def interpreter(path: str) -> str:
    """PATH made absolute against the caller's cwd: each logger's child runs in a directory of its own."""
    python = os.path.abspath(path)  # not realpath: a venv's python is a symlink that must stay one
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise SystemExit(
            f"peers.py: --python {path}: no executable at {python}; create the peers' venv first "
            "(see benchmarks/requirements-peers.txt) or pass its python's path"
        )
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="the interpreter the loggers run in")
    parser.add_argument("-n", type=int, default=10_000, help="reports per run (default 10,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs per logger (default 3)")
    parser.add_argument("--plot", metavar="PNG", help="also draw CPU per report, log scale, into PNG")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    args.python = interpreter(args.python)
    with tempfile.TemporaryDirectory(prefix="runai-peers-") as base:
        gw = Pushgateway(base).start()
        try:
            started = time.perf_counter()
            results = measure(args.python, args.n, args.runs, base, gw.address)
        finally:
            try:  # every uploader exits by itself once delivered
                reap_uploaders(base, 30, "the benchmark's uploaders to exit")
            finally:
                gw.stop()
    print(table(results, args.n, args.runs))
    versions = _versions(args.python)
    print(
        f"\n{args.n:,} reports per run, {args.runs} runs alternating; {versions} ({args.python}); "
        f"{os.cpu_count()} CPUs; {time.perf_counter() - started:.0f} s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "runs": args.runs, "results": results}, f, indent=1)
    if args.plot:
        plot(results, args.plot, f"median of {args.runs} fresh interpreters, {args.n:,} reports each\n{versions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
