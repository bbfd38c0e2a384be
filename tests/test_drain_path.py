"""The drain's fast paths: a block of spool lines decoded at once, and reads for the remote-write sink that
end between two milliseconds (``SpoolTail.read(whole_ms=True)``), so that a push never splits a series'
millisecond.

The last test runs the real uploader (``runai-uploader recover``) against a real Prometheus 2.42.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from harness import Prometheus, job_env
from runai.reporter.spool import SpoolWriter, decode, encode_end, encode_header, encode_metric
from runai.reporter.spool.records import decode_metrics, encode_parameter
from tests._helpers import uploader_cli

T0 = 1_764_000_000_000_000  # µs, Nov 2025


def _metrics(count: int, per_ms: int = 1, names: int = 1, t0: int = T0) -> list[bytes]:
    return [
        encode_metric(seq, t0 + (seq // per_ms) * 1000 + seq % per_ms, f"m{seq % names}", seq * 0.5)
        for seq in range(1, count + 1)
    ]


def test_a_block_of_writer_metrics_decodes_as_decode_reads_each_line() -> None:
    lines = [
        encode_metric(1, 0, "a", 0.0),
        encode_metric(2, 1, "_b9", -1.5e-300),
        encode_metric(3, 2, "c", 1e308),
        encode_metric(10**17, 10**17, "d", -0.0),
        encode_metric(4, T0, "loss", 123456789.125),
    ]
    block = b"".join(lines)[:-1]
    fast = decode_metrics(block)
    assert fast == [decode(line[:-1]) for line in lines]
    assert [type(r) for r in fast or ()] == [type(decode(lines[0][:-1]))] * len(lines)


@pytest.mark.parametrize(
    "odd",
    [
        encode_parameter(5, T0, "p", "v"),  # another kind
        encode_metric(5, T0, "m", float("nan")),  # a non-finite value, spelt as a string
        encode_metric(10**18, T0, "m", 1.0),  # 19 digits: decode() checks the 2**63 bound itself
        encode_end(5, T0),
        b'{"seq": 5,"ts_us":1,"kind":"metric","name":"m","value":1.0}\n',  # other spacing
        b"\n",  # an empty line
        b"garbage\n",
    ],
)
def test_a_block_with_any_other_line_is_left_to_decode_line_by_line(odd: bytes) -> None:
    assert decode_metrics(b"".join([*_metrics(3), odd, *_metrics(2)])[:-1]) is None


@pytest.mark.e2e
def test_recover_ends_each_push_between_milliseconds_so_each_keeps_its_last_report(
    tmp_path: Any, spool_dir: str, pod: str
) -> None:
    """150,000 reports of 3 series, 15 a millisecond, over 8 MiB: 3 pushes at least (recover reads
    4 MiB a push, about 50,000 of these lines). A push that cut a millisecond in two would give
    Prometheus a second sample of a series at a millisecond it has: refused as a duplicate (a 400,
    split down to the sample), the first one kept."""
    pod_dir = os.path.join(spool_dir, pod)
    SpoolWriter(pod_dir, pod).close()  # the pod directory as the library makes it
    t0 = (time.time_ns() // 1000 // 1000 - 60_000) * 1000  # a minute ago, on a millisecond
    lines = _metrics(150_000, per_ms=15, names=3, t0=t0)
    fd = os.open(os.path.join(pod_dir, "w1-drain.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(encode_header("drain", pod, t0) + b"".join(lines) + encode_end(150_001, t0))
    assert os.path.getsize(os.path.join(pod_dir, "w1-drain.jsonl")) > 2 * (4 << 20)
    want: dict[str, dict[int, float]] = {}
    for line in lines:  # the last of each series and millisecond, by seq
        record = decode(line[:-1])
        want.setdefault(record.name, {})[round(record.ts * 1e6) // 1000] = float(record.value)
    with Prometheus(str(tmp_path), remote_write=True, out_of_order_window="1h") as receiver:
        env = job_env(podUUID=pod, reporterSpoolDir=spool_dir, reporterRemoteWriteURL=receiver.write_url)
        env.pop("reporterGatewayURL", None)
        done = uploader_cli(env, "recover", "--timeout=60", timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "150,000 reports delivered" in done.stdout, done.stdout
        for name, samples in want.items():
            found = receiver.samples(f'reporter_push_gateway_metric_{name}{{podUUID="{pod}"}}[1h]', time.time() + 1)
            assert len(found) == 1 and dict(found[0][1]) == samples, name
