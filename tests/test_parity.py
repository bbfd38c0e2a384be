"""Behaviour the issue-11 refactor must keep, pinned where it once changed (reviewer r1)."""
from __future__ import annotations

import sys

from runai.reporter._launch import uploader_command
from runai.reporter.settings import load_settings


def test_the_uploaders_argv_keeps_its_order(tmp_path: object) -> None:
    # ps, /proc/PID/cmdline and scripts matching `uploader run --spool-dir=...` see the options in the order
    # they always had: the spool root first, then the pod, the gateway and the rest.
    settings = load_settings(pod_uuid="pod-1", gateway_url="127.0.0.1:9", spool_dir=str(tmp_path),
                             push_interval=0.1, fsync="interval", fsync_interval=1e-05, history_bytes=5000,
                             environ={})
    argv = uploader_command(settings)
    assert argv[0] == sys.executable and argv[4:6] == ["uploader", "run"]
    assert argv[6:] == [
        f"--spool-dir={tmp_path}", "--pod-uuid=pod-1", "--gateway=http://127.0.0.1:9", "--push-interval=0.1",
        "--retry-timeout=600.0", "--push-timeout=10.0", "--fsync=interval", "--fsync-interval=1e-05",
        "--history-bytes=5000",
    ]


def test_every_decoded_line_still_has_the_fields_of_the_single_record_type() -> None:
    # Before the typed records, every decoded line had .seq .ts .kind .name .value .spool_id; code reading
    # them off any line (a header's spool_id, an end marker's empty one) must keep working.
    from runai.reporter.spool import decode, encode_end, encode_header, encode_metric, encode_parameter

    for line in (encode_header("id", "pod", 1), encode_metric(1, 1, "m", 1.5), encode_parameter(2, 1, "p", "v"),
                 encode_end(3, 1)):
        record = decode(line[:-1])
        fields = (record.seq, record.ts, record.kind, record.name, record.value, record.spool_id)
        assert fields == (fields[0], fields[1], record.kind, *{
            "header": ("", None, "id"), "metric": ("m", 1.5, ""), "parameter": ("p", "v", ""), "end": ("", None, ""),
        }[record.kind])
