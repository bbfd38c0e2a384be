"""Settings are defined once: the environment, keywords, the uploader's argv and the CLI all come from the fields."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from dataclasses import dataclass
from typing import Any

import pytest

import runai.reporter._reporter as reporter_module
from harness import REPO, uploader_pids, wait_for
from runai.reporter import ConfigError, Reporter
from runai.reporter._launch import uploader_command
from runai.reporter.settings import (
    Settings,
    add_options,
    check_keywords,
    command_line,
    command_line_settings,
    load_settings,
    recover_command,
    setting,
    settings_from_args,
    warn_insecure_auth,
)
from uploader import cli


@dataclass(frozen=True)
class _Fake(Settings):
    """The real settings and one more, added the way a new setting is added."""

    colour: str = setting(env="reporterColour", option="--colour", default="red", help="the colour (default: red)")


def _colour(settings: Settings) -> str:
    assert isinstance(settings, _Fake)
    return settings.colour


class _FakeReporter(Reporter):
    settings_class = _Fake


@pytest.fixture
def base(spool_dir: str, pod: str) -> dict[str, str]:
    """An environment with the required settings; nothing is pushed, so the gateway need not exist."""
    return {"podUUID": pod, "reporterGatewayURL": "gw.invalid:9091", "reporterSpoolDir": spool_dir}


def test_a_fake_setting_is_read_from_the_environment(base: dict[str, str]) -> None:
    assert _colour(load_settings(environ=base, settings_class=_Fake)) == "red"
    settings = load_settings(environ={**base, "reporterColour": "blue"}, settings_class=_Fake)
    assert _colour(settings) == "blue"


def test_a_fake_setting_is_a_keyword_that_wins_over_the_environment(base: dict[str, str]) -> None:
    settings = load_settings(environ={**base, "reporterColour": "blue"}, settings_class=_Fake, colour="green")
    assert _colour(settings) == "green"
    check_keywords(["colour"], "f()", _Fake)
    with pytest.raises(TypeError, match=r"^f\(\) got an unexpected keyword argument 'colour'$"):
        check_keywords(["colour"], "f()")  # the real settings have no colour


def test_a_fake_setting_reaches_the_reporter_and_the_uploaders_argv(
    monkeypatch: pytest.MonkeyPatch, base: dict[str, str]
) -> None:
    for key, value in base.items():
        monkeypatch.setenv(key, value)
    started: list[Settings] = []
    # No uploader process: the real one has no --colour. Record what would be started instead.
    monkeypatch.setattr(reporter_module, "ensure_uploader", started.append)
    reporter = _FakeReporter(colour="green", push_interval=3)
    try:
        assert _colour(reporter.settings) == "green" and reporter.settings.push_interval == 3.0
        assert started and started[0] is reporter.settings
        argv = uploader_command(started[0])
        assert "--colour=green" in argv and "--push-interval=3.0" in argv
    finally:
        reporter.finish(timeout=0)


def test_a_fake_setting_round_trips_through_argv_and_the_cli_options(base: dict[str, str]) -> None:
    settings = load_settings(environ=base, settings_class=_Fake, colour="-green", push_timeout=4)
    argv = command_line(settings)
    assert "--colour=-green" in argv  # --option=VALUE: a value starting with '-' stays a value
    parser = argparse.ArgumentParser()
    add_options(parser, settings_class=_Fake)
    assert "--colour" in parser.format_help() and "the colour (default: red)" in parser.format_help()
    args = parser.parse_args(argv)
    assert settings_from_args(args, environ=base, settings_class=_Fake) == settings
    assert "colour" in command_line_settings(_Fake) and "colour" not in command_line_settings()


def test_the_real_uploader_command_round_trips_through_the_real_cli(
    monkeypatch: pytest.MonkeyPatch, base: dict[str, str], spool_dir: str
) -> None:
    secrets = {"reporterGatewayUsername": "user", "reporterGatewayPassword": "secret"}
    for key, value in {**base, **secrets}.items():
        monkeypatch.setenv(key, value)
    # Every setting that travels on argv differs from its default; a dashed pod UUID must survive too.
    settings = load_settings(
        pod_uuid="-dashed",
        gateway_url="https://gw.invalid:9443/prefix",
        push_interval=2.5,
        retry_timeout=7,
        push_timeout=3,
        fsync="interval",
        fsync_interval=0.25,
        history_bytes=1 << 20,
    )
    assert settings.password == "secret"
    argv = uploader_command(settings)
    assert argv[4:6] == ["uploader", "run"]
    assert not any("secret" in a for a in argv)  # secrets come from the environment only
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    travels = set(command_line_settings())
    assert travels == {
        "pod_uuid",
        "gateway_url",
        "spool_dir",
        "push_interval",
        "retry_timeout",
        "push_timeout",
        "fsync",
        "fsync_interval",
        "history_bytes",  # what travelled before settings were one
        "remote_write_url",
        "own_pod_dir",
    }  # the second sink's URL (issue 12) and the pod's own directory (issue 22): unset here, so not on argv
    assert not any(a.startswith(("--remote-write", "--pod-dir")) for a in argv)
    assert all(
        getattr(settings, name) != defaults[name]
        for name in travels - {"pod_uuid", "gateway_url", "spool_dir", "remote_write_url", "own_pod_dir"}
    )
    args = cli._parser().parse_args(argv[5:])
    assert cli._settings(args) == settings


def test_the_recover_command_parses_back_to_the_same_pod(monkeypatch: pytest.MonkeyPatch, spool_dir: str) -> None:
    for key in ("podUUID", "reporterGatewayURL", "reporterSpoolDir"):
        monkeypatch.delenv(key, raising=False)
    command = shlex.split(recover_command(spool_dir, "-pod", "http://gw.invalid:1"))
    assert command[:3] == ["runai-uploader", "recover", f"--spool-dir={spool_dir}"]
    settings = cli._settings(cli._parser().parse_args(command[1:]), for_writing=False)
    assert (settings.spool_dir, settings.pod_uuid, settings.gateway_url) == (spool_dir, "-pod", "http://gw.invalid:1")


def test_every_setting_has_one_variable_and_each_option_one_help() -> None:
    fields = dataclasses.fields(Settings)
    specs = [f.metadata["runai.reporter.setting"] for f in fields]
    variables = [s.env for s in specs]
    assert None not in variables and len(set(variables)) == len(variables)
    options = [s.option for s in specs if s.option]
    assert len(set(options)) == len(options)
    assert all(s.help for s in specs if s.option)
    secrets = ("username", "password", "ca_file")
    assert not any(s.option or s.keyword for f, s in zip(fields, specs, strict=True) if f.name in secrets)


def test_unknown_keywords_are_refused_as_python_would(base: dict[str, str]) -> None:
    with pytest.raises(TypeError, match=r"^load_settings\(\) got an unexpected keyword argument 'colour'$"):
        load_settings(environ=base, colour="red")
    bad: dict[str, Any]
    for bad in ({"colour": "red"}, {"password": "x"}, {"environ": {}}, {"for_writing": False}):
        with pytest.raises(TypeError, match=r"^Reporter\.__init__\(\) got an unexpected keyword argument"):
            Reporter(**bad)


def test_keyword_errors_name_the_keyword(base: dict[str, str]) -> None:
    # The source is "keyword=", then "=VALUE": today's wording, kept.
    with pytest.raises(ConfigError, match=r"^fsync_interval==0 must be a positive"):
        load_settings(environ=base, fsync_interval=0)
    with pytest.raises(ConfigError, match=r"^reporterFsyncInterval='x' is not a number of seconds"):
        load_settings(environ={**base, "reporterFsyncInterval": "x"})
    assert load_settings(environ={**base, "reporterFsyncInterval": ""}).fsync_interval == 1.0


@pytest.mark.e2e
def test_reporter_accepts_fsync_interval_and_passes_it_to_the_uploader(env: dict[str, str], pod: str) -> None:
    with Reporter(fsync="interval", fsync_interval=0.25) as reporter:
        assert reporter.settings.fsync_interval == 0.25
        reporter.reportMetric("loss", 1.0)
        # Until the spawned process has exec'd, /proc shows the job's own command line: wait for the uploader's.
        (pid,) = wait_for(lambda: uploader_pids(pod), 10, "the uploader to start")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")
        assert "--fsync=interval" in argv and "--fsync-interval=0.25" in argv
    assert reporter.finish() is True


def test_the_readme_lists_every_setting_with_its_variable_and_keyword() -> None:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        rows = [line for line in f if line.startswith("| `")]
    for field in dataclasses.fields(Settings):
        spec = field.metadata["runai.reporter.setting"]
        (row,) = [r for r in rows if r.startswith(f"| `{spec.env}`")]
        assert (f"| `{field.name}=` |" in row) == spec.keyword, row


# -- the remote-write sink's settings (issue 12) ----------------------------------------------------------

RW_URL = "http://tsdb.invalid:9090/api/v1/write"


def test_at_least_one_sink_is_required_and_the_error_names_both(base: dict[str, str]) -> None:
    neither = {k: v for k, v in base.items() if k != "reporterGatewayURL"}
    with pytest.raises(ConfigError, match="reporterGatewayURL is not set.*reporterRemoteWriteURL"):
        load_settings(environ=neither)
    assert load_settings(environ=base).sinks == ("gateway",)
    only = load_settings(environ={**neither, "reporterRemoteWriteURL": RW_URL})
    assert (only.gateway_url, only.remote_write_url, only.sinks) == (None, RW_URL, ("remote_write",))
    both = load_settings(environ=base, remote_write_url=RW_URL)
    assert both.sinks == ("gateway", "remote_write")
    with pytest.raises(ConfigError, match="remote_write_url="):
        load_settings(environ=base, remote_write_url="tsdb:9090")  # a full URL is required


def test_the_remote_write_url_travels_on_argv_and_its_secrets_never_do(
    monkeypatch: pytest.MonkeyPatch, base: dict[str, str], tmp_path: Any
) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    secrets = {
        "reporterRemoteWriteUsername": "user",
        "reporterRemoteWritePassword": "s3cret",
        "reporterRemoteWriteTenant": "team-a",
    }
    environ = {k: v for k, v in base.items() if k != "reporterGatewayURL"}
    for key, value in {**environ, **secrets}.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(remote_write_url=RW_URL)
    assert (settings.rw_username, settings.rw_password, settings.rw_tenant) == ("user", "s3cret", "team-a")
    argv = command_line(settings)
    assert f"--remote-write={RW_URL}" in argv and not any(a.startswith("--gateway") for a in argv)
    assert not any("s3cret" in a or "team-a" in a for a in argv) and "s3cret" not in repr(settings)
    assert cli._settings(cli._parser().parse_args(["run", *argv])) == settings
    command = recover_command(settings.spool_dir, settings.pod_uuid, None, RW_URL)
    assert f"--remote-write={RW_URL}" in command and "--gateway" not in command
    with pytest.raises(ConfigError, match="reporterRemoteWriteUsername or reporterRemoteWriteBearerTokenFile"):
        load_settings(
            environ={**environ, **secrets, "reporterRemoteWriteBearerTokenFile": str(token)}, remote_write_url=RW_URL
        )
    with pytest.raises(ConfigError, match="reporterRemoteWriteCAFile is set but reporterRemoteWriteURL"):
        load_settings(environ={**environ, "reporterRemoteWriteCAFile": str(token)}, remote_write_url=RW_URL)
    password_file = tmp_path / "password"
    password_file.write_text("from-file\n")
    from_file = load_settings(
        environ={**environ, "reporterRemoteWriteUsername": "u", "reporterRemoteWritePasswordFile": str(password_file)},
        remote_write_url=RW_URL,
    )
    assert from_file.rw_password == "from-file"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # named by mistake: refused at once, never waited on
    with pytest.raises(ConfigError, match="reporterRemoteWritePasswordFile=.* is not a file"):
        load_settings(
            environ={**environ, "reporterRemoteWriteUsername": "u", "reporterRemoteWritePasswordFile": str(fifo)},
            remote_write_url=RW_URL,
        )


def test_remote_write_basic_auth_over_plain_http_warns_without_the_password(
    base: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    environ = {**base, "reporterRemoteWriteUsername": "user", "reporterRemoteWritePassword": "s3cret"}
    with caplog.at_level("WARNING", logger="runai.reporter"):
        warn_insecure_auth(load_settings(environ=environ, remote_write_url=RW_URL))
    [warning] = [r.getMessage() for r in caplog.records if "clear text" in r.getMessage()]
    assert "reporterRemoteWriteURL" in warning and "s3cret" not in warning
