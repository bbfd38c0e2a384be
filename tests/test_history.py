"""`runai-uploader history`: every report from the local spool, whether or not the gateway was reachable."""

from __future__ import annotations

import csv
import io
import itertools
import json
import subprocess
import sys
import time

import pytest

from harness import job_env
from runai.reporter import Reporter
from runai.reporter.spool import writer as spool_writer
from tests._helpers import uploader_cli

pytestmark = pytest.mark.e2e


def history(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return uploader_cli(env, "history", *args, timeout=120)


def test_history_csv_returns_every_report_in_order(env: dict[str, str]) -> None:
    with Reporter() as reporter:
        for i in range(1000):
            reporter.reportMetric("loss", 1 / (i + 1))
            if i % 250 == 0:
                reporter.reportParameter("phase", f"p{i // 500}")  # changes twice, repeats twice
        reporter.reportMetric("other", 5)
    done = history(env, "--csv", "--metric", "loss", "--metric", "phase")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    losses = [r for r in rows if r["name"] == "loss"]
    assert [float(r["value"]) for r in losses] == [1 / (i + 1) for i in range(1000)]
    assert [int(r["seq"]) for r in rows] == sorted(int(r["seq"]) for r in rows)
    assert [r["value"] for r in rows if r["name"] == "phase"] == ["p0", "p1"]  # its changes only
    assert "other" not in {r["name"] for r in rows}
    as_json = json.loads(history(env, "--json", "--metric", "other").stdout)
    assert [(r["kind"], r["value"]) for r in as_json] == [("metric", 5.0)]


@pytest.mark.parametrize("x_axis", ["time", "step"])
def test_history_plot_writes_a_png(env: dict[str, str], tmp_path, x_axis: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image

    # 600 reports take about a millisecond: on a time axis they would stand in one vertical line. A clock
    # 10 ms a report (ending seconds ago, never in the future) spreads the curves as a training run would.
    clock = itertools.count(time.time_ns() - 10**10, 10_000_000)
    monkeypatch.setattr(spool_writer, "_time_ns", lambda: next(clock))
    with Reporter() as reporter:
        for i in range(300):
            reporter.reportMetric("loss", 2.0 / (1 + i / 30))
            reporter.reportMetric("accuracy", 1 - 1.0 / (1 + i / 30))
    out = tmp_path / "curves.png"
    done = history(env, "--plot", str(out), "--x", x_axis)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "accuracy, loss" in done.stdout
    # The curves are drawn: many pixels in matplotlib's first line colour (#1f77b4), in both halves.
    pixels = matplotlib.image.imread(str(out))[:, :, :3]
    line = abs(pixels - (0x1F / 255, 0x77 / 255, 0xB4 / 255)).sum(axis=2) < 0.1
    top, bottom = line[: len(line) // 2].sum(), line[len(line) // 2 :].sum()
    assert top > 300 and bottom > 300, (top, bottom)


def test_history_into_a_closed_pipe_stops_quietly(env: dict[str, str]) -> None:
    """`runai-uploader history | head` must not end in a traceback."""
    from runai.reporter.spool import SpoolWriter

    writer = SpoolWriter(f"{env['reporterSpoolDir']}/{env['podUUID']}", env["podUUID"])
    for i in range(20_000):  # far more than a pipe buffer holds
        writer.write_metric("loss", i)
    writer.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uploader", "history", "--csv"],
        env=job_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"time,ts,seq,")
    proc.stdout.close()  # as `head -1` does
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and stderr == ""


def test_history_without_a_reachable_gateway(env: dict[str, str], own_gateway, spool_dir: str) -> None:
    """The gateway was never up: the spool alone answers."""
    from tests._helpers import wait_for_give_up

    reporter = Reporter(gateway_url=own_gateway.address, retry_timeout=0.5)  # not started: refused
    for i in range(100):
        reporter.reportMetric("loss", i)
    reporter.reportParameter("opt", "sgd")
    assert reporter.finish(timeout=0.2) is False
    wait_for_give_up(reporter.settings.pod_dir, spool_dir)
    rows = list(csv.DictReader(io.StringIO(history(env, "--csv").stdout)))
    assert [float(r["value"]) for r in rows if r["name"] == "loss"] == list(range(100))
    assert [r["value"] for r in rows if r["kind"] == "parameter"] == ["sgd"]


def test_history_plot_without_matplotlib_says_how_to_install_it(env: dict[str, str], tmp_path) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("loss", 1)
    shadow = tmp_path / "no-matplotlib" / "matplotlib"  # first on the path: importing it fails as if absent
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    out = tmp_path / "curves.png"
    done = history({**env, "PYTHONPATH": f"{shadow.parent}:{job_env()['PYTHONPATH']}"}, "--plot", str(out))
    assert done.returncode == 2 and not out.exists()
    assert done.stderr == (
        "runai-uploader: --plot draws with matplotlib, which is not installed: pip install 'runai[plot]'\n"
    )
