"""The harness the tests, benchmarks and the demo share: where it may be imported from, and its process helpers."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from harness import REPO, reap_uploaders, uploader_pids, wait_for


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


def test_reap_uploaders_kills_what_did_not_exit_and_says_so(tmp_path: os.PathLike[str]) -> None:
    marker = str(tmp_path)
    # Not an uploader: a process whose command line looks like one to uploader_pids.
    stuck = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "uploader", "run", marker],
                             stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: uploader_pids(marker) == [stuck.pid], 10, "the stand-in uploader")
        with pytest.raises(AssertionError, match="timed out after 0.2 s waiting for the stand-in to exit"):
            reap_uploaders(marker, 0.2, "the stand-in to exit")
        assert stuck.wait(10) == -9
        reap_uploaders(marker, 0.2, "nothing left")  # none left: returns at once
    finally:
        stuck.kill()
        stuck.wait()
