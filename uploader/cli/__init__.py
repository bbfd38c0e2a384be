"""``runai-uploader``: the uploader's command line; argparse and printing only.

``run`` is what a Reporter starts in the background; ``recover`` is for people:
it uploads what a dead job left in its spool; ``agent`` does that for a whole
spool directory, for ever (one per node); ``status`` and ``history`` read a
spool. One module per command adds its parser and does its printing; the work
is in the layers below (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import sys
from typing import Sequence

from runai.reporter import __version__
from runai.reporter.safefs import UnsafePathError
from runai.reporter.settings import ConfigError

from ._common import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, INTERRUPTED
from ._common import command_settings as _settings  # noqa: F401  # the name tests parse a command line with
from .agent import add_agent
from .history import add_history
from .recover import add_recover
from .run import add_run
from .status import add_status

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    # A drain holds hundreds of thousands of records and samples (tuples, without cycles among them); at
    # the default threshold (700 allocations) the cyclic collector traverses them over and over, a third
    # of a drain's CPU time (docs/performance.md). Cycles are rare here: collect them seldom.
    gc.set_threshold(100_000, 50, 100)
    parser = _parser()
    args = parser.parse_args(argv)
    # A pod directory's name may hold undecodable bytes: print them escaped, never fail on them.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"runai-uploader: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnsafePathError as exc:  # a file or directory another user could control: never used
        print(f"runai-uploader: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): stop quietly, as other Unix tools do, and keep
        # Python's exit-time flush of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runai-uploader",
        description="Deliver runai reporter spools to a Prometheus Pushgateway and/or a remote-write receiver.",
        epilog="Settings default to the same environment variables the reporter reads "
        "(podUUID, reporterGatewayURL, reporterRemoteWriteURL, reporterSpoolDir).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    # The settings' options come from their one definition (runai.reporter.settings); these come first.
    common = ("spool_dir", "pod_uuid", "gateway_url", "remote_write_url", "push_timeout")
    add_run(commands, common)
    add_recover(commands, common)
    add_agent(commands)
    add_status(commands)
    add_history(commands)
    return parser
