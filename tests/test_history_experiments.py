"""`runai-uploader history` as an experiment tool: a header row, the job's own step on the x axis (train and
validation curves on one axis), runs that shared a podUUID kept apart (--run), several pods overlaid in one plot.
Against real jobs (fresh interpreters) writing real spools."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest

from harness import job_env
from tests._helpers import uploader_cli

pytestmark = pytest.mark.e2e

# As the Transformers callback reports: a log's metrics, then the step (HF's on_log); a validation metric once
# every 20 steps; a few milliseconds of "training" a step. argv: the steps, the loss's offset.
_JOB = """
import sys, time
from runai.reporter import Reporter
steps, offset = int(sys.argv[1]), float(sys.argv[2])
with Reporter(quiet=True) as r:
    for step in range(1, steps + 1):
        time.sleep(0.003)
        r.reportMetric("train_loss", offset + 1.0 / step)
        if step % 20 == 0:
            r.reportMetric("val_loss", offset + 2.0 / step)
        r.reportMetric("global_step", step)
"""


def _job(spool_dir: str, pod: str, steps: int, offset: float) -> None:
    env = job_env(podUUID=pod, reporterSpoolDir=spool_dir)
    for name in ("reporterGatewayURL", "reporterRemoteWriteURL"):
        env.pop(name, None)  # local mode: no uploader needed
    done = subprocess.run(
        [sys.executable, "-c", _JOB, str(steps), str(offset)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def _csv(env: dict[str, str], *args: str) -> list[dict[str, str]]:
    done = uploader_cli(env, "history", "--csv", *args)
    assert done.returncode == 0, done.stderr
    return list(csv.DictReader(io.StringIO(done.stdout)))


def test_history_steps_runs_and_header(env: dict[str, str], spool_dir: str, pod: str) -> None:
    _job(spool_dir, pod, 60, 0.0)
    _job(spool_dir, pod, 40, 1.0)  # a second job under the same podUUID: a second run
    rows = _csv(env)
    runs = list(dict.fromkeys(r["run"] for r in rows))
    assert len(runs) == 2 and all(run.startswith("w") for run in runs), runs
    first, second = ([r for r in rows if r["run"] == run] for run in runs)
    # Each report carries the step its job reported beside it: validation every 20, training every step.
    assert [r["step"] for r in first if r["name"] == "val_loss"] == ["20", "40", "60"]
    assert [r["step"] for r in first if r["name"] == "train_loss"] == [str(i) for i in range(1, 61)]
    assert [r["step"] for r in second if r["name"] == "val_loss"] == ["20", "40"]
    assert {r["pod_uuid"] for r in rows} == {pod}

    # --run (or --writer) keeps one run apart; a bare pid means the same.
    only = _csv(env, "--run", runs[1], "--metric", "val_loss")
    assert [(r["run"], float(r["value"])) for r in only] == [(runs[1], 1.1), (runs[1], 1.05)]
    assert _csv(env, "--writer", runs[0][1:], "--metric", "val_loss") == [r for r in first if r["name"] == "val_loss"]

    # The table has a header row, then one line a report.
    table = uploader_cli(env, "history", "--metric", "val_loss").stdout.splitlines()
    assert table[0].split() == ["time", "(UTC)", "run", "step", "seq", "kind", "name", "value"]
    assert len(table) == 1 + 5 and table[1].split()[1:3] == [runs[0], "20"]


def test_history_plots_steps_and_overlays_pods(env: dict[str, str], spool_dir: str, pod: str, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image

    other = f"{pod}-b"
    _job(spool_dir, pod, 60, 0.0)
    _job(spool_dir, other, 60, 0.5)
    out = tmp_path / "compare.png"
    done = uploader_cli(
        env,
        "history",
        f"--pod-uuid={pod}",
        f"--pod-uuid={other}",
        "--x",
        "step",
        "--metric",
        "train_loss",
        "--metric",
        "val_loss",
        f"--plot={out}",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out}: train_loss, val_loss\n"
    # Both pods are drawn: pixels of matplotlib's first and second line colours (#1f77b4, #ff7f0e).
    pixels = matplotlib.image.imread(str(out))[:, :, :3]
    for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
        near = (abs(pixels - tuple(c / 255 for c in colour)).sum(axis=2) < 0.1).sum()
        assert near > 200, (colour, near)
    table = uploader_cli(env, "history", f"--pod-uuid={pod}", f"--pod-uuid={other}", "--metric", "val_loss")
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["time", "(UTC)", "pod"] and len(lines) == 1 + 6
