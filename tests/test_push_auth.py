"""Credentials for the gateway: basic auth over TLS with a real Pushgateway's web config, refused or warned
configurations, and a password never logged."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from harness import Pushgateway, metric_name, uploader_pids, wait_for
from runai.reporter import ConfigError, Reporter
from tests._helpers import uploader_cli, wait_for_give_up
from tests._tls import PASSWORD, USER, _certificates

pytestmark = pytest.mark.e2e


@pytest.fixture
def secure_gateway(tmp_path) -> Iterator[Pushgateway]:
    import bcrypt

    ca, cert, key = _certificates(str(tmp_path))
    config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    config.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\nbasic_auth_users:\n  {USER}: '{hashed}'\n"
    )
    gw = Pushgateway(str(tmp_path), web_config=str(config), ca_file=ca, auth=(USER, PASSWORD)).start()
    gw.ca_file = ca  # type: ignore[attr-defined]
    yield gw
    gw.stop()


@pytest.fixture
def secure_env(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], secure_gateway: Pushgateway, tmp_path
) -> dict[str, str]:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    values = {
        "reporterGatewayURL": secure_gateway.url,
        "reporterGatewayUsername": USER,
        "reporterGatewayPasswordFile": str(password_file),
        "reporterGatewayCAFile": secure_gateway.ca_file,
    }  # type: ignore[attr-defined]
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**env, **values}


def test_basic_auth_over_tls_delivers(
    secure_env: dict[str, str], secure_gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("secure", 42)
        reporter.reportParameter("mode", "tls")
        wait_for(lambda: uploader_pids(spool_dir), 10, "the uploader")
        cmdlines = []
        for pid in uploader_pids(spool_dir):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdlines.append(f.read())
    assert reporter.finish() is True
    assert secure_gateway.value(pod, metric_name("secure")) == 42
    # The secret is nowhere another user could read it: not on the command line
    # (world-readable in /proc), not in the spool, checkpoints or the log.
    assert cmdlines and all(PASSWORD.encode() not in c for c in cmdlines)
    for name in os.listdir(reporter.settings.pod_dir):
        with open(os.path.join(reporter.settings.pod_dir, name), "rb") as f:
            assert PASSWORD.encode() not in f.read(), name
    assert "s3cret" not in repr(reporter.settings)


def test_recover_uses_the_same_credentials(
    secure_env: dict[str, str], secure_gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    with Reporter() as reporter:
        reporter.reportMetric("again", 1)
    secure_gateway.delete_group(pod)
    with open(reporter._writer.path[: -len(".jsonl")] + ".ckpt", "wb"):
        pass  # a damaged checkpoint: replay
    done = uploader_cli(secure_env, "recover")
    assert done.returncode == 0, done.stderr
    assert secure_gateway.value(pod, metric_name("again")) == 1


def test_a_wrong_password_is_retried_never_dropped_nor_logged(
    monkeypatch: pytest.MonkeyPatch, secure_env: dict[str, str], secure_gateway: Pushgateway, pod: str, spool_dir: str
) -> None:
    monkeypatch.delenv("reporterGatewayPasswordFile")
    monkeypatch.setenv("reporterGatewayPassword", "not-the-password")
    reporter = Reporter(retry_timeout=0.5)
    reporter.reportMetric("denied", 1)
    assert reporter.finish(timeout=2) is False  # 401: retried like an outage, the data stays
    wait_for_give_up(reporter.settings.pod_dir, spool_dir)
    log = open(os.path.join(reporter.settings.pod_dir, "uploader.log")).read()
    assert "401" in log and "not-the-password" not in log
    assert secure_gateway.value(pod, metric_name("denied")) is None


def test_credentials_in_the_url_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.setenv("reporterGatewayURL", "https://user:pw@gateway:9091")
    with pytest.raises(ConfigError, match="must not contain credentials"):
        Reporter()


def test_half_configured_auth_is_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    monkeypatch.setenv("reporterGatewayUsername", "someone")
    with pytest.raises(ConfigError, match="reporterGatewayPassword"):
        Reporter()


def test_basic_auth_over_plain_http_warns_once_in_the_job_and_in_uploader_log(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    env: dict[str, str],
    gateway: Pushgateway,
    pod: str,
    spool_dir: str,
) -> None:
    # The plain gateway ignores the Authorization header, so delivery works: the risk is the clear text.
    monkeypatch.setenv("reporterGatewayUsername", USER)
    monkeypatch.setenv("reporterGatewayPassword", PASSWORD)
    with caplog.at_level("WARNING", logger="runai.reporter"):
        reporter = Reporter()
    warnings = [r.getMessage() for r in caplog.records if "clear text" in r.getMessage()]
    assert len(warnings) == 1 and "http://" in warnings[0] and "https://" in warnings[0]
    assert PASSWORD not in warnings[0]
    reporter.reportMetric("over_http", 1)
    assert reporter.finish() is True
    with open(os.path.join(spool_dir, pod, "uploader.log")) as f:
        log = f.read()
    assert log.count("clear text") == 1 and PASSWORD not in log
    # No warning without basic auth.
    caplog.clear()
    monkeypatch.delenv("reporterGatewayUsername")
    monkeypatch.delenv("reporterGatewayPassword")
    Reporter(pod_uuid=f"{pod}-2").finish()
    assert not [r for r in caplog.records if "clear text" in r.getMessage()]
