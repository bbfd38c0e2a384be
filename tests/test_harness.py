"""The test harness: its imports run one way, and its process helpers see and reap real uploaders."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from harness import REPO, Pushgateway, kill_uploaders, reap_uploaders, uploader_pids, wait_for
from runai.reporter import Reporter


def _imported(folder: str) -> dict[str, set[str]]:
    """{file under *folder*: the top-level packages it imports}."""
    found: dict[str, set[str]] = {}
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read(), path)
                packages = found.setdefault(os.path.relpath(path, REPO), set())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        packages.update(alias.name.split(".")[0] for alias in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        packages.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("folder", ["benchmarks", "scripts", "harness"])
def test_benchmarks_the_demo_and_the_harness_never_import_the_tests(folder: str) -> None:
    assert {path for path, packages in _imported(folder).items() if "tests" in packages} == set()


@pytest.mark.parametrize("folder", ["runai", "uploader"])
def test_the_shipped_packages_never_import_the_harness(folder: str) -> None:
    assert {path for path, packages in _imported(folder).items() if "harness" in packages} == set()


@pytest.mark.e2e
def test_reap_uploaders_kills_what_did_not_exit_and_says_so(tmp_path: os.PathLike[str]) -> None:
    marker = str(tmp_path)
    # Not an uploader: a process whose command line looks like one to uploader_pids.
    stuck = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "uploader", "run", marker], stdin=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: uploader_pids(marker) == [stuck.pid], 10, "the stand-in uploader")
        with pytest.raises(AssertionError, match="timed out after 0.2 s waiting for the stand-in to exit"):
            reap_uploaders(marker, 0.2, "the stand-in to exit")
        assert stuck.wait(10) == -9
        reap_uploaders(marker, 0.2, "nothing left")  # none left: returns at once
    finally:
        stuck.kill()
        stuck.wait()


@pytest.mark.e2e
def test_leftover_uploaders_helper_finds_real_processes(
    env: dict[str, str], own_gateway: Pushgateway, spool_dir: str
) -> None:
    # The autouse guard relies on uploader_pids(); prove it sees a live uploader.
    reporter = Reporter(gateway_url=own_gateway.address)
    reporter.reportMetric("x", 1)
    wait_for(lambda: uploader_pids(spool_dir), 10, "the uploader to be visible")
    assert reporter.finish(timeout=0.1) is False
    assert kill_uploaders(spool_dir)
    wait_for(lambda: not uploader_pids(spool_dir), 10, "the killed uploader to disappear")
