"""URLs are shown without what must stay secret: no user, password or query (tokens travel there), in the start
line, messages, logs and printed commands (the end-to-end cases are in test_local_mode.py)."""

from __future__ import annotations

import pytest

from runai.reporter import ConfigError, Reporter
from runai.reporter.settings import recover_command, redact_url


def test_urls_are_redacted_for_printing() -> None:
    assert redact_url("https://user:pw@host:8443/api/v1/write?token=t#frag") == "https://host:8443/api/v1/write"
    assert redact_url("http://[::1]:9091") == "http://[::1]:9091"
    assert redact_url("http://gw:9091/prefix") == "http://gw:9091/prefix"


def test_a_malformed_url_with_credentials_is_refused_without_showing_them() -> None:
    for keyword, url in (
        ("remote_write_url", "http://user:s3cret@host:99999/api/v1/write"),
        ("remote_write_url", "http://host:99999/api/v1/write?token=s3cret"),
        ("gateway_url", "http://user:s3cret@host:99999"),
    ):
        with pytest.raises(ConfigError) as raised:
            Reporter(pod_uuid="p", **{keyword: url})
        assert "s3cret" not in str(raised.value) and "host" in str(raised.value)


def test_a_printed_recover_command_leaves_the_token_out() -> None:
    command = recover_command("/spool", "pod", None, "http://host:9090/api/v1/write?api_key=s3cret")
    assert "s3cret" not in command and "--remote-write=http://host:9090/api/v1/write" in command
