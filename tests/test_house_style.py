"""House style that a linter does not check: every module of the project stays small enough to read whole."""

from __future__ import annotations

import os

from harness import REPO

MAX_LINES = 300  # CONTRIBUTING.md, "Size"; the tree is kept in `ruff format`'s layout, so counted in it
CHECKED = ("runai", "uploader", "tests", "harness", "benchmarks")


def _python_files() -> list[str]:
    found = []
    for top in CHECKED:
        for directory, dirs, files in os.walk(os.path.join(REPO, top)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
            found += [os.path.join(directory, name) for name in sorted(files) if name.endswith(".py")]
    return found


def test_the_checked_directories_hold_python_files() -> None:
    files = _python_files()
    # A wrong REPO or a renamed package would make the bound below pass on nothing.
    for top in CHECKED:
        assert any(path.startswith(os.path.join(REPO, top, "")) for path in files), top


def test_every_module_has_at_most_300_lines() -> None:
    too_long = []
    for path in _python_files():
        with open(path, "rb") as f:
            count = f.read().count(b"\n")
        if count > MAX_LINES:
            too_long.append(f"{os.path.relpath(path, REPO)} has {count} lines")
    assert not too_long, (
        f"modules past {MAX_LINES} lines: {'; '.join(too_long)}. Split each by concept into smaller modules "
        "(CONTRIBUTING.md, 'Size'; docs/architecture.md, 'Modules: one home per concept'), not at an "
        "arbitrary line; a mixin or a module of helper functions beside it is the usual cut"
    )
