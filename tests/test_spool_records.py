"""The spool's line format: what encode writes and decode reads back, on the fast path and the general one."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runai.reporter.spool import (
    SpoolWriter,
    decode,
    encode_end,
    encode_header,
    encode_metric,
    encode_parameter,
    writer_pid,
)
from tests._helpers import read_all


def strict_json(line: bytes) -> object:
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_metric_values_round_trip_as_strict_json(value: float) -> None:
    line = encode_metric(1, 1_500_000, "m", value)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    strict_json(line)
    got = decode(line[:-1]).value
    assert (math.isnan(value) and math.isnan(got)) or got == value  # type: ignore[arg-type]


@given(st.text())
def test_parameter_values_round_trip_as_one_line(value: str) -> None:
    line = encode_parameter(3, 2_000_000, "p", value)
    assert line.count(b"\n") == 1  # newlines in values are escaped, never split a record
    strict_json(line)
    assert decode(line[:-1]) == (3, 2.0, "parameter", "p", value, "")


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"garbage",
        b"[]",
        b"null",
        b'{"seq":1}',
        b'{"seq":"1","ts_us":1,"kind":"metric","name":"a","value":1}',
        b'{"seq":1,"ts_us":1,"kind":"metric","name":"a","value":"1"}',
        b'{"seq":1,"ts_us":1,"kind":"metric","value":1}',
        b'{"seq":1,"ts_us":1,"kind":"parameter","name":"a","value":1}',
        b'{"seq":1,"ts_us":1,"kind":"what"}',
        b'{"seq":0,"ts_us":1,"kind":"header","version":99,"spool_id":"x"}',
        b"\0\0\0",
        b'{"seq":1,"ts_us":1,"kind":"metric",',
        b'{"seq":1,"ts":1.5,"kind":"metric","name":"a","value":1}',
        b'{"seq":1,"ts_us":1.5,"kind":"metric","name":"a","value":1}',
        b"[" * 100_000,
    ],
)
def test_decode_refuses_what_is_not_a_record(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode(line)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["metric", "parameter"]),
            st.sampled_from(["a", "b", "c_1"]),
            st.floats(allow_nan=False, width=32),
        ),
        max_size=30,
    )
)
def test_writer_and_reader_agree(tmp_path_factory, reports) -> None:
    writer = SpoolWriter(str(tmp_path_factory.mktemp("pod")), "pod")
    for kind, name, value in reports:
        if kind == "metric":
            writer.write_metric(name, value)
        else:
            writer.write_parameter(name, str(value))
    writer.close()
    records = read_all(writer.path)
    assert [(r.kind, r.name) for r in records] == [(k, n) for k, n, _ in reports]
    assert [r.seq for r in records] == list(range(1, len(reports) + 1))


@given(
    st.integers(0, 2**64),
    st.integers(0, 2**62),
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True),
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(-(10**20), 10**20),
        st.sampled_from(["1E5", "-0", "1e+300", "2.5e-3", "01", "1.", ".5", "+1", "1e", "--1"]),
    ),
)
def test_decode_fast_path_agrees_with_json(seq: int, ts_us: int, name: str, value: object) -> None:
    text = value if isinstance(value, str) else repr(value)
    line = f'{{"seq":{seq},"ts_us":{ts_us},"kind":"metric","name":"{name}","value":{text}}}'.encode()
    try:
        expected = json.loads(line)
        want = float(expected["value"])
    except ValueError:
        with pytest.raises(ValueError):
            decode(line)
        return
    if seq >= 2**63:  # out of the range a spool line may hold (docs/operations.md, "Limits")
        with pytest.raises(ValueError):
            decode(line)
        return
    record = decode(line)
    assert (record.seq, record.name, record.value) == (seq, name, want)
    assert record.ts == ts_us / 1e6


def test_decode_gives_one_type_per_kind_of_line() -> None:
    from runai.reporter.spool import End, Header, Metric, Parameter

    header = decode(encode_header("id", "pod", 1_000_000)[:-1])
    assert isinstance(header, Header) and header.spool_id == "id" and header.kind == "header"
    assert isinstance(decode(encode_metric(1, 1, "m", 1.5)[:-1]), Metric)
    assert isinstance(decode(b'{"seq":1,"ts_us":1,"kind":"metric","name":"m","value":"NaN"}'), Metric)  # the slow path
    parameter = decode(encode_parameter(2, 1, "p", "v")[:-1])
    assert isinstance(parameter, Parameter)
    assert (parameter.kind, parameter.name, parameter.value) == ("parameter", "p", "v")
    assert isinstance(decode(encode_end(3, 1)[:-1]), End)


def test_a_metric_value_past_the_float_range_decodes_as_infinity_on_both_paths() -> None:
    digits = b"1" + b"0" * 400
    fast = decode(b'{"seq":1,"ts_us":1,"kind":"metric","name":"x","value":-%s}' % digits)
    slow = decode(b'{"seq":1,"ts_us":1,"kind":"metric","name":"x","value": -%s}' % digits)  # not the writer's shape
    assert fast.value == slow.value == -math.inf


def test_writer_pid_is_none_for_digits_that_are_not_ascii() -> None:
    assert writer_pid("w²-abcd.jsonl") is None  # isdigit() but not decimal
    assert writer_pid("w\u0663-abcd.jsonl") is None  # ARABIC-INDIC THREE: decimal, not ASCII
    assert writer_pid("w123-abcd.jsonl") == 123


def test_every_decoded_line_still_has_the_fields_of_the_single_record_type() -> None:
    # Before the typed records, every decoded line had .seq .ts .kind .name .value .spool_id; code reading
    # them off any line (a header's spool_id, an end marker's empty one) must keep working.
    from runai.reporter.spool import decode, encode_end, encode_header, encode_metric, encode_parameter

    for line in (
        encode_header("id", "pod", 1),
        encode_metric(1, 1, "m", 1.5),
        encode_parameter(2, 1, "p", "v"),
        encode_end(3, 1),
    ):
        record = decode(line[:-1])
        fields = (record.seq, record.ts, record.kind, record.name, record.value, record.spool_id)
        assert fields == (
            fields[0],
            fields[1],
            record.kind,
            *{
                "header": ("", None, "id"),
                "metric": ("m", 1.5, ""),
                "parameter": ("p", "v", ""),
                "end": ("", None, ""),
            }[record.kind],
        )
