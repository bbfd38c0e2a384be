"""The shell commands the docs show, and what each names: collected for tests/test_doc_commands.py.

A command is a line of a ```sh, ```bash or ```shell block, or a `$ ` line of a ```console block or of the text.
A ```text line that starts with `runai-uploader COMMAND` is a usage synopsis: its options are checked, it is
never run.
"""

from __future__ import annotations

import ast
import glob
import os
import re
import shlex
import textwrap
from dataclasses import dataclass
from typing import Iterator

from harness import REPO

SHELL_BLOCKS = {"sh", "bash", "shell"}
FENCE = re.compile(r"^\s*(```|~~~)\s*(\S*)")
SYNOPSIS = re.compile(r"^\s*runai-uploader [a-z]")
OPERATORS = {"&&", "||", "|", ";", "&"}
REDIRECTS = re.compile(r"^\d*[<>]+&?\d*$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# A word the reader replaces before running the command: DIR, POD, HOST:PORT, REV, FILE.png.
PLACEHOLDER = re.compile(r"(^|[=/:])[A-Z][A-Z_]+([:.][A-Za-z_]+)*$")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Shown:
    """One command as a page shows it."""

    page: str  # relative to the repository
    line: int
    text: str  # continuation lines joined
    synopsis: bool = False

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: `{self.text}`"


def pages() -> list[str]:
    found = [os.path.join(REPO, name) for name in ("README.md", "CONTRIBUTING.md")]
    found += glob.glob(os.path.join(REPO, "docs", "**", "*.md"), recursive=True)
    return sorted(path for path in found if os.path.exists(path))


def fences(path: str) -> Iterator[tuple[int, str]]:
    """(line, language) of each block's opening fence; the language is '' where none is named."""
    inside = False
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            match = FENCE.match(line)
            if match:
                if not inside:
                    yield number, match.group(2)
                inside = not inside


def python_blocks(path: str) -> Iterator[tuple[int, str]]:
    """(opening line, source) of each ```python block."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for start, language in fences(path):
        if language == "python":
            end = next(i for i in range(start, len(lines)) if FENCE.match(lines[i]))
            yield start, textwrap.dedent("\n".join(lines[start:end]))  # a block in a list item is indented


def shown(path: str) -> list[Shown]:
    page = os.path.relpath(path, REPO)
    found: list[Shown] = []
    language: str | None = None
    pending: tuple[int, str] | None = None  # a command continued on the next line (a trailing backslash)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, 1):
        match = FENCE.match(line)
        if match:
            language = match.group(2) if language is None else None
            continue
        if pending is not None:
            start, text = pending
            pending = None
            line = text + " " + line.strip()
            number = start
        command = _command(language, line)
        if command is None:
            continue
        if command.endswith("\\"):
            pending = (number, command[:-1].rstrip())
            continue
        synopsis = language == "text"
        if synopsis:  # a synopsis continues on indented lines that open with an option
            for more in lines[number:]:
                if not re.match(r"^\s+\[", more):
                    break
                command += " " + more.strip()
        found.append(Shown(page, number, command, synopsis))
    return found


def _command(language: str | None, line: str) -> str | None:
    stripped = line.strip()
    if language in SHELL_BLOCKS:
        return stripped if stripped and not stripped.startswith("#") else None
    if language == "text":
        return stripped if SYNOPSIS.match(line) else None
    if language in ("console", None) and stripped.startswith("$ "):
        return stripped[2:].strip()
    return None


def every_command() -> list[Shown]:
    return [command for path in pages() for command in shown(path)]


def simple_commands(text: str) -> list[list[str]]:
    """The argv of each simple command in TEXT, its variable assignments and redirections dropped."""
    text = re.sub(r"\$\([^)]*\)", "SUBSTITUTED", text)  # what $(...) prints is one word here
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    skip_next = False
    for token in lexer:
        if token in OPERATORS:
            commands.append([])
        elif REDIRECTS.match(token):
            skip_next = True
        elif skip_next:
            skip_next = False
        elif commands[-1] or not ASSIGNMENT.match(token):
            commands[-1].append(token)
    return [argv for argv in commands if argv]


def options(words: list[str]) -> set[str]:
    """The long options WORDS name (`--gateway=URL` and `[--json]` name `--gateway` and `--json`)."""
    return {match for word in words for match in OPTION.findall(word)}


def has_placeholder(words: list[str]) -> bool:
    return any(PLACEHOLDER.search(word) or word.startswith("[") for word in words)


def extras() -> set[str]:
    """The extras setup.py defines (`pip install '.[keras]'`)."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "extras_require" and isinstance(node.value, ast.Dict):
            keys = [key.value for key in node.value.keys if isinstance(key, ast.Constant)]
            return {key for key in keys if isinstance(key, str)}
    raise AssertionError("setup.py defines no extras_require")
