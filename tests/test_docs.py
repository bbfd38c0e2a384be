"""The docs: every page renders as Markdown, the docs index links to each, no link is dead, and every test a
page names (``tests/test_x.py``, ``test_x.py::test_name``) exists."""

from __future__ import annotations

import ast
import glob
import os
import re

import pytest
from markdown_it import MarkdownIt

from harness import REPO

INDEX = os.path.join(REPO, "docs", "README.md")
PAGES = sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True))
MARKDOWN = [os.path.join(REPO, "README.md"), os.path.join(REPO, "CONTRIBUTING.md"), *PAGES]
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Every Markdown file of the repository that may name a test, wherever a page moves.
NAMING_TESTS = sorted(
    {
        *MARKDOWN,
        *glob.glob(os.path.join(REPO, "*.md")),
        *glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True),
        *glob.glob(os.path.join(REPO, "deploy", "**", "*.md"), recursive=True),
    }
)
# A test module (tests/ optional), with or without one of its tests; or a test named without its module.
TEST_REFERENCE = re.compile(r"(?<![\w/.])(?:tests/)?(test_\w+\.py)(?:::(test_\w+))?|(?<![\w.])::(test_\w+)")


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: str) -> set[str]:
    tokens = MarkdownIt("commonmark").parse(read(path))
    return {slug(tokens[i + 1].content) for i, t in enumerate(tokens) if t.type == "heading_open"}


def test_the_readme_links_the_docs_index_and_the_index_every_page() -> None:
    readme = read(os.path.join(REPO, "README.md"))
    assert "](docs/README.md)" in readme and "](CONTRIBUTING.md)" in readme
    index = read(INDEX)
    assert len(PAGES) >= 8
    for page in PAGES:
        if page != INDEX:
            assert f"]({os.path.relpath(page, os.path.dirname(INDEX))}" in index, f"docs/README.md does not link {page}"
    assert "](grafana/runai-reporter-dashboard.json)" in index


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda path: os.path.relpath(path, REPO))
def test_every_page_renders(path: str) -> None:
    text = read(path)
    fences = [line for line in text.splitlines() if line.lstrip().startswith("```")]
    assert len(fences) % 2 == 0, "a code block is never closed"
    html = MarkdownIt("commonmark").enable("table").render(text)
    # A table row that is not part of a rendered table (a broken header, a missing separator) shows as text.
    stray = [line for line in html.splitlines() if line.startswith("<p>|")]
    assert not stray, stray
    assert html.count("<table>") == len(re.findall(r"^\|[ :-]*-[ :|-]*\|$", text, re.M))


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda path: os.path.relpath(path, REPO))
def test_no_link_is_dead(path: str) -> None:
    in_code = re.sub(r"```.*?```", "", read(path), flags=re.S)
    for target in LINK.findall(in_code):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        assert os.path.exists(resolved), f"{target}: no such file"
        if anchor:
            assert anchor in anchors(resolved), f"{target}: no such heading"


def defined_tests(module: str) -> set[str] | None:
    """The top-level test functions and classes of tests/*module*, or None if there is no such module."""
    path = os.path.join(REPO, "tests", module)
    if not os.path.exists(path):
        return None
    return {
        node.name
        for node in ast.parse(read(path)).body
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name.startswith(("test", "Test"))
    }


def test_every_test_a_page_names_exists() -> None:
    broken = []
    for path in NAMING_TESTS:
        for number, line in enumerate(read(path).splitlines(), 1):
            for module, name, bare in TEST_REFERENCE.findall(line):
                where = f"{os.path.relpath(path, REPO)}:{number}"
                if bare:
                    broken.append(f"{where}: ::{bare} does not name its module (write test_x.py::{bare})")
                    continue
                defined = defined_tests(module)
                if defined is None:
                    broken.append(f"{where}: tests/{module} does not exist")
                elif name and name not in defined:
                    broken.append(f"{where}: tests/{module} has no {name}")
    assert not broken, "\n".join(broken)
