"""docs/quickstart.md runs as written: each of its three paths (`## 1.`, `## 2.`, `## 3.`) is its ```sh blocks,
run in order by bash, with the real Pushgateway and Prometheus commands it shows (on free ports instead of 9091 and
9090), the real example job and the real `runai-uploader`. The page cannot go stale."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys

import pytest

from harness import REPO, free_port, job_env
from tests._doc_commands import FENCE, python_blocks

PAGE = os.path.join(REPO, "docs", "quickstart.md")


def paths() -> dict[str, list[str]]:
    """Each path's heading -> the lines of its ```sh blocks, in order (comments and blank lines dropped)."""
    found: dict[str, list[str]] = {}
    heading, language = None, None
    with open(PAGE, encoding="utf-8") as f:
        for line in f.read().splitlines():
            fence = FENCE.match(line)
            if fence:
                language = fence.group(2) if language is None else None
            elif language is None and re.match(r"## \d\. ", line):
                heading = line[3:]
                found[heading] = []
            elif language == "sh" and heading and line.strip() and not line.lstrip().startswith("#"):
                found[heading].append(line)
    return found


def test_the_page_has_three_paths_and_its_example_is_the_repositorys() -> None:
    assert [h.split(".")[0] for h in paths()] == ["1", "2", "3"]
    with open(os.path.join(REPO, "examples", "train.py"), encoding="utf-8") as f:
        example = f.read()
    # The page's Python block reports as the example does.
    ((_, block),) = python_blocks(PAGE)
    for call in (
        "Reporter()",
        'reportParameter("optimizer", "adam")',
        'reportMetric("loss"',
        'reportMetric("global_step", step)',
        ".finish()",
    ):
        assert call in block and call in example, call


def _run_path(index: int, tmp_path) -> subprocess.CompletedProcess[str]:
    heading, lines = list(paths().items())[index]
    gateway_port, prometheus_port = free_port(), free_port()
    script = "\n".join(line for line in lines if not line.startswith("pip install"))  # installed already
    script = script.replace("9091", str(gateway_port)).replace("9090", str(prometheus_port))
    script = script.replace("python examples/", f"python {REPO}/examples/")
    # `runai-uploader` as the package installs it, and `python` as this virtual environment's, on this checkout.
    (tmp_path / "bin").mkdir()
    for name, run in (("runai-uploader", f'"{sys.executable}" -m uploader'), ("python", f'"{sys.executable}"')):
        shim = tmp_path / "bin" / name
        shim.write_text(f'#!/bin/sh\nexec {run} "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = job_env(
        reporterSpoolDir=str(tmp_path / "spool"),
        MPLBACKEND="Agg",
        PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
    )
    for name in ("podUUID", "reporterGatewayURL", "reporterRemoteWriteURL"):
        env.pop(name, None)
    # The servers a path starts in the background stop with it; a command that fails ends it.
    stop = "trap 'status=$?; kill $(jobs -p) 2>/dev/null || true; wait || true; exit $status' EXIT"
    wrapped = f"set -eo pipefail\n{stop}\n{script}"
    done = subprocess.run(
        ["bash", "-c", wrapped],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{heading}:\n{script}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


@pytest.mark.e2e
def test_path_1_a_laptop_with_no_server(tmp_path) -> None:
    done = _run_path(0, tmp_path)
    assert "finish() returned True" in done.stdout
    assert "runai.reporter: pod laptop-run-1, spool " in done.stderr and "kept locally" in done.stderr
    assert "pod laptop-run-1: kept locally (its job named no receiver): 0 reports delivered, 411 pending" in done.stdout
    table = [line for line in done.stdout.splitlines() if " val_loss " in line]
    assert len(table) == 10 and [line.split()[2] for line in table] == [str(s) for s in range(20, 201, 20)]
    assert (tmp_path / "laptop-run-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.e2e
def test_path_2_to_a_pushgateway(tmp_path) -> None:
    done = _run_path(1, tmp_path)
    assert "finish() returned True" in done.stdout
    assert re.search(r'reporter_push_gateway_metric_loss\{.*podUUID="gateway-run-1".*\} [0-9.e+-]+', done.stdout)
    assert "pod gateway-run-1: 411 reports delivered, 0 pending" in done.stdout


@pytest.mark.e2e
def test_path_3_every_report_into_prometheus_by_remote_write(tmp_path) -> None:
    done = _run_path(2, tmp_path)
    assert "finish() returned True" in done.stdout
    answer, _ = json.JSONDecoder().raw_decode(done.stdout[done.stdout.index('{"status"') :])  # curl ends no line
    assert [r["value"][1] for r in answer["data"]["result"]] == ["200"]  # every loss report, a sample each
    assert "pod remote-write-run-1: 411 reports delivered, 0 pending" in done.stdout
