"""The public API: what reportMetric and reportParameter accept, refuse and record, and how settings are read."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import runai.reporter
from harness import (
    REPO,
    Pushgateway,
    job_env,
    parameter_name,
)
from runai.reporter import ConfigError, Reporter
from runai.reporter.spool import decode
from tests._helpers import spool_lines, spool_records


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é", "a.b", "loss\n"])
def test_bad_names_raise_value_error(env: dict[str, str], name: str) -> None:
    with Reporter() as reporter:
        with pytest.raises(ValueError, match="letters, digits and underscores"):
            reporter.reportMetric(name, 1)
        with pytest.raises(ValueError, match="letters, digits and underscores"):
            reporter.reportParameter(name, "x")


@pytest.mark.e2e
def test_a_name_over_the_limit_is_refused_at_once(env: dict[str, str]) -> None:
    from runai.reporter.spool import MAX_NAME_CHARS

    with Reporter() as reporter:
        reporter.reportMetric("n" * MAX_NAME_CHARS, 1)
        for name in ("n" * (MAX_NAME_CHARS + 1), "n" * 30_000_000):
            with pytest.raises(ValueError, match=f"more than the {MAX_NAME_CHARS}"):
                reporter.reportMetric(name, 1)
            with pytest.raises(ValueError, match=f"more than the {MAX_NAME_CHARS}"):
                reporter.reportParameter(name, "x")
        lines = spool_lines(reporter)
    assert max(len(line) for line in lines) < 1000  # nothing of the long names reached the spool


@pytest.mark.e2e
@pytest.mark.parametrize("name", [None, 3, b"loss", ["loss"]])
def test_non_string_names_raise_type_error(env: dict[str, str], name: object) -> None:
    with Reporter() as reporter:
        with pytest.raises(TypeError, match="must be a str"):
            reporter.reportMetric(name, 1)  # type: ignore[arg-type]


@pytest.mark.e2e
@pytest.mark.parametrize("value", [True, False, np.bool_(True), "1.0", None, 1j, [1], {}])
def test_bad_metric_values_raise_type_error(env: dict[str, str], value: object) -> None:
    with Reporter() as reporter:
        with pytest.raises(TypeError, match="real number"):
            reporter.reportMetric("loss", value)  # type: ignore[arg-type]


@pytest.mark.e2e
def test_huge_int_metric_raises_value_error(env: dict[str, str]) -> None:
    with Reporter() as reporter:
        with pytest.raises(ValueError, match="too large"):
            reporter.reportMetric("loss", 10**400)


@pytest.mark.e2e
@pytest.mark.parametrize("value", [True, None, [1], b"x", np.bool_(False)])
def test_bad_parameter_values_raise_type_error(env: dict[str, str], value: object) -> None:
    with Reporter() as reporter:
        with pytest.raises(TypeError, match="str, int or float"):
            reporter.reportParameter("opt", value)  # type: ignore[arg-type]


@pytest.mark.e2e
def test_accepted_values_are_recorded_exactly(env: dict[str, str]) -> None:
    with Reporter() as reporter:
        for value in (3, 2.5, np.float32(0.25), np.int64(7), math.nan, math.inf, -math.inf, -0.0, 1e-300):
            reporter.reportMetric("m", value)  # type: ignore[arg-type]
        reporter.reportParameter("p", 0.001)
        reporter.reportParameter("q", 'quote" back\\ newline\n unicode ✓')
    lines = spool_lines(reporter)  # header, reports, end marker
    assert decode(lines[0]).kind == "header" and decode(lines[-1]).kind == "end"
    for line in lines:  # strict JSON: NaN and Infinity literals are refused
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    records = [decode(line) for line in lines[1:-1]]
    values = [r.value for r in records if r.name == "m"]
    assert values[:6] == [3.0, 2.5, 0.25, 7.0, values[4], math.inf] and math.isnan(values[4])
    assert values[6:] == [-math.inf, -0.0, 1e-300]
    assert [r.value for r in records if r.kind == "parameter"] == ["0.001", 'quote" back\\ newline\n unicode ✓']
    assert [r.seq for r in records] == list(range(1, len(records) + 1))


@pytest.mark.e2e
def test_report_after_finish_raises_for_scoped_reporter(env: dict[str, str]) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("a", 1)
    with pytest.raises(ValueError, match="create a new Reporter"):
        reporter.reportMetric("a", 2)
    assert reporter.finish() is True  # idempotent, same answer


def test_aliases_exist() -> None:
    assert Reporter.report_metric is Reporter.reportMetric
    assert Reporter.report_parameter is Reporter.reportParameter
    assert runai.reporter.report_metric is runai.reporter.reportMetric
    assert set(runai.reporter.__all__) >= {"Reporter", "reportMetric", "reportParameter", "finish", "ConfigError"}


@pytest.mark.e2e
@pytest.mark.parametrize("receiver", ["reporterGatewayURL", "reporterRemoteWriteURL"])
def test_a_missing_pod_uuid_is_named_where_a_receiver_is_set(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], receiver: str
) -> None:
    # A cluster job without its podUUID is misconfigured: guessing one would misfile its data (local mode
    # names its own pod only when no receiver is set either: tests/test_local_mode.py).
    monkeypatch.delenv("podUUID")
    if receiver == "reporterRemoteWriteURL":
        monkeypatch.delenv("reporterGatewayURL")
        monkeypatch.setenv(receiver, "http://127.0.0.1:1/api/v1/write")
    with pytest.raises(ConfigError, match="podUUID"):
        Reporter()
    # non-scoped: raised at the first report
    with pytest.raises(ConfigError, match="podUUID"):
        runai.reporter.reportMetric("a", 1)


@pytest.mark.e2e
@pytest.mark.parametrize("url", ["ftp://host:1", "host:port", "http://", "http://host:99999", "host:1?x=1"])
def test_invalid_gateway_url_is_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], url: str) -> None:
    monkeypatch.setenv("reporterGatewayURL", url)
    with pytest.raises(ConfigError, match="reporterGatewayURL"):
        Reporter()


@pytest.mark.parametrize(
    "url,expected",
    [
        ("gw:9091", "http://gw:9091"),
        ("http://gw:9091/", "http://gw:9091"),
        ("https://gw.example:443/prefix", "https://gw.example:443/prefix"),
    ],
)
def test_gateway_url_forms(url: str, expected: str) -> None:
    from runai.reporter.settings import normalize_gateway_url

    assert normalize_gateway_url(url) == expected


@pytest.mark.e2e
def test_keyword_arguments_override_environment(env: dict[str, str], tmp_path: os.PathLike[str]) -> None:
    other = os.path.join(str(tmp_path), "other-spool")
    with Reporter(pod_uuid="kw-pod", spool_dir=other, push_interval=0.5, finish_timeout=7) as reporter:
        assert reporter.settings.pod_uuid == "kw-pod"
        assert reporter.settings.push_interval == 0.5
        assert reporter.settings.finish_timeout == 7
        assert reporter._writer.path.startswith(os.path.join(other, "kw-pod") + os.sep)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "var,value",
    [
        ("reporterPushInterval", "soon"),
        ("reporterPushInterval", "0"),
        ("reporterFinishTimeout", "-1"),
        ("reporterPushInterval", "nan"),
    ],
)
def test_invalid_numbers_are_named(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        Reporter()


@pytest.mark.e2e
def test_spool_is_private(env: dict[str, str], spool_dir: str, pod: str) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("a", 1)
        path = reporter._writer.path
    assert stat.S_IMODE(os.stat(os.path.join(spool_dir, pod)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for name in os.listdir(os.path.join(spool_dir, pod)):
        mode = stat.S_IMODE(os.stat(os.path.join(spool_dir, pod, name)).st_mode)
        assert mode & 0o077 == 0, f"{name} is {oct(mode)}"


@pytest.mark.e2e
def test_import_is_light_and_starts_nothing() -> None:
    code = (
        "import sys, threading, runai.reporter, runai.reporter.spool\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('prometheus_client', 'watchdog')]\n"
        "print(heavy, threading.active_count())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=job_env(), capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[] 1"


# The documented limit on one parameter value (docs/api.md), in UTF-8 bytes.
VALUE_LIMIT = 64 << 10


@pytest.mark.e2e
def test_a_parameter_value_that_is_not_utf8_is_refused(
    env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    """Issue 10, point 4: a lone surrogate went into the spool and crashed every push of the pod."""
    reporter = Reporter()
    with pytest.raises(ValueError, match="cannot be encoded as UTF-8.*errors='replace'"):
        reporter.reportParameter("path", os.fsdecode(b"caf\xe9"))
    reporter.reportParameter("path", "café")
    assert reporter.finish(timeout=20) is True
    assert gateway.series(pod)[parameter_name("path")][0]["param_value"] == "café"
    params = [r.value for r in spool_records(os.path.join(spool_dir, pod)) if r.kind == "parameter"]
    assert params == ["café"]


@pytest.mark.e2e
def test_a_parameter_value_over_the_limit_is_refused_at_once(
    env: dict[str, str], gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    """Issue 10, point 5: a 30-million-character value made a 189 MB spool line."""
    from runai.reporter import spool

    assert spool.MAX_VALUE_BYTES == VALUE_LIMIT  # the documented figure
    reporter = Reporter()
    reporter.reportParameter("fits", "x" * VALUE_LIMIT)
    with pytest.raises(ValueError, match=f"{VALUE_LIMIT + 2} bytes as UTF-8, more than the {VALUE_LIMIT}"):
        reporter.reportParameter("two_bytes_each", "é" * (VALUE_LIMIT // 2 + 1))
    started = time.monotonic()
    with pytest.raises(ValueError, match="30000000 characters"):
        reporter.reportParameter("huge", "x" * 30_000_000)
    assert time.monotonic() - started < 0.1  # refused without encoding it
    assert reporter.finish(timeout=20) is True
    params = [r.name for r in spool_records(os.path.join(spool_dir, pod)) if r.kind == "parameter"]
    assert params == ["fits"]
    assert (
        max(
            os.path.getsize(os.path.join(spool_dir, pod, n))
            for n in os.listdir(os.path.join(spool_dir, pod))
            if n.endswith(".jsonl")
        )
        < 2 * VALUE_LIMIT
    )


def test_a_tensor_or_array_value_is_refused_with_the_fix_named(spool_dir: str) -> None:
    import numpy

    with Reporter(pod_uuid="p", spool_dir=spool_dir, quiet=True) as reporter:
        with pytest.raises(TypeError, match=r"not ndarray: report float\(value\) \(a tensor's or array's \.item\(\)\)"):
            reporter.reportMetric("loss", numpy.array(0.5))
