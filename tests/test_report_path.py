"""The one-frame reportMetric (a Reporter binds its writer's write_metric) keeps the Reporter's contract:
class-level patches, the finished error whatever the arguments, no fast path reopened by a finish() that lands
mid-recheck, and help() on an instance's reportMetric. Each test passed before the change and failed with it
until fixed (an adversarial review's findings)."""

from __future__ import annotations

import dis
import sys
from typing import Any
from unittest import mock

import pytest

from runai.reporter import Reporter
from runai.reporter.spool.writer import SpoolWriter

pytestmark = pytest.mark.e2e


def test_a_class_level_patch_of_reportMetric_sees_the_reports(env: dict[str, str]) -> None:
    """mock.patch.object(Reporter, 'reportMetric') / a class wrapper no longer intercepts anything."""
    with mock.patch.object(Reporter, "reportMetric", autospec=True) as patched:
        reporter = Reporter()
        reporter.reportMetric("loss", 1.0)
    reporter.finish(timeout=10)
    assert patched.call_count == 1


def test_a_report_after_finish_raises_the_finished_error_whatever_its_arguments(env: dict[str, str]) -> None:
    """docs/api.md: 'After finish() they raise ValueError (create a new Reporter)'; reportParameter still does."""
    reporter = Reporter()
    assert reporter.finish(timeout=10) is True
    for name, value in (("loss", None), ("loss", True), (1, 1.0), ("bad name", 1.0)):
        with pytest.raises(ValueError, match="create a new Reporter"):
            reporter.reportMetric(name, value)


def test_finish_inside_recheck_does_not_reopen_the_fast_path(env: dict[str, str]) -> None:
    """finish() (another thread, or a SIGTERM handler in this one) between _recheck's read of `closed` and its
    store of `_slow` leaves closed=True, _slow=False: reports after finish() stop raising and count as lost."""
    reporter = Reporter()
    writer = reporter._writer
    reporter.reportMetric("loss", 1.0)
    writer._torn = writer._slow = True  # as SpoolWriter._short_write leaves it
    recheck = getattr(SpoolWriter, "_recheck", None)
    if recheck is None:  # bb6439f: no flag to clobber; finish() then a report
        reporter.finish(timeout=10)
        with pytest.raises(ValueError, match="create a new Reporter"):
            reporter.reportMetric("loss", 3.0)
        return
    code = recheck.__code__
    store = next(i.offset for i in dis.get_instructions(code) if i.opname == "STORE_ATTR" and i.argval == "_slow")
    fired: list[bool] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None
        frame.f_trace_opcodes = True

        def opcode(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode" and frame.f_lasti == store and not fired:
                fired.append(True)
                reporter.finish(timeout=10)
            return opcode

        return opcode

    sys.settrace(tracer)
    try:
        reporter.reportMetric("loss", 2.0)  # recovers the torn line: _recheck() runs, finish() lands in it
    finally:
        sys.settrace(None)
    assert fired and writer.closed
    with pytest.raises(ValueError, match="create a new Reporter"):
        reporter.reportMetric("loss", 3.0)


def test_help_on_a_reporters_reportMetric_documents_reportMetric(env: dict[str, str]) -> None:
    reporter = Reporter()
    try:
        assert (reporter.reportMetric.__doc__ or "").startswith("Report a numeric metric; raises TypeError/ValueError")
        assert (Reporter.reportMetric.__doc__ or "").startswith("Report a numeric metric; raises TypeError/ValueError")
    finally:
        reporter.finish(timeout=10)
