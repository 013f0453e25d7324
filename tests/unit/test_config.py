"""Start-up validation: every setting is checked before any child starts (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from meshstream_zmq.config import Config, ConfigError
from tests.conftest import ROOT


def test_defaults_have_no_problems() -> None:
    assert Config().problems() == []


@pytest.mark.parametrize(("setting", "value", "flag"), [
    ("direct_messages", "bogus", "--direct-messages"),
    ("port", 0, "--port"),
    ("port", 70000, "--port"),
    ("heartbeat", 0.0, "--heartbeat"),
    ("peer_timeout", 0.2, "--peer-timeout"),  # not longer than the heartbeat
    ("history_size", -1, "--history-size"),
    ("direct_history_bytes", -5, "--direct-history-bytes"),
    ("max_header_bytes", 10, "--max-header-bytes"),
    ("send_queue", 0, "--send-queue"),
    ("log_level", "loud", "--log-level"),
    ("tcp", "no-port", "--tcp"),
    ("tcp", "127.0.0.1:65534", "--tcp"),  # PORT+3 would not fit
    ("peer", "127.0.0.1:7100", "--peer"),  # without --tcp
    ("backup", True, "--backup"),  # without --peer
])
def test_each_bad_setting_is_named(setting: str, value: object, flag: str) -> None:
    problems = Config().with_overrides(**{setting: value}).problems()
    assert len(problems) == 1 and problems[0].startswith(flag + " ("), problems


def test_a_short_admin_token_is_refused_without_echoing_it() -> None:
    problems = Config(admin_token="hunter2").problems()
    assert len(problems) == 1 and "--admin-token" in problems[0]
    assert "hunter2" not in problems[0]
    assert Config(admin_token="x" * 16).problems() == []


def test_an_environment_value_of_the_wrong_type_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="MESHSTREAM_PORT='abc'"):
        Config.from_env({"MESHSTREAM_PORT": "abc"})
    assert Config.from_env({"MESHSTREAM_HISTORY_AGE": "2.5"}).history_age == 2.5


@pytest.mark.parametrize("role", ["run", "processor", "gateway"])
def test_meshstream_exits_2_before_starting_anything(role: str, tmp_path: object) -> None:
    env = {"PATH": "/usr/bin:/bin", "MESHSTREAM_DIRECT_MESSAGES": "bogus",
           "MESHSTREAM_RUN_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "services.cli", role, "--port", "18799"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--direct-messages (MESHSTREAM_DIRECT_MESSAGES): must be one of" in done.stderr
    assert not list(tmp_path.iterdir())  # type: ignore[attr-defined]  # no socket, no pid file


@pytest.mark.parametrize(("log", "ok"), [
    ("off", True), ("embedded", True), ("nats://127.0.0.1:4222", True),
    ("nats://a:1,nats://b:2, tls://c:3", True),
    ("", False), ("bogus", False), ("nats://host", False), ("http://h:1", False), (",", False),
])
def test_the_log_is_off_embedded_or_nats_urls(log: str, ok: bool) -> None:
    problems = Config(log=log).problems()
    assert (problems == []) is ok, problems
    if not ok:
        assert problems[0].startswith("--log (MESHSTREAM_LOG): must be off, embedded, or nats://")


@pytest.mark.parametrize(("argv", "env", "log"), [
    (["run"], "", "embedded"),  # one box: the processor's log is on by default
    (["run", "--log", "off"], "", "off"),
    (["run"], "off", "off"),
    (["run", "--log", "nats://h:1"], "", "nats://h:1"),
    (["run", "--no-processor", "--tcp", "10.0.0.5:7000"], "", "off"),
    (["run", "--tcp", "127.0.0.1:7000", "--peer", "127.0.0.1:7100"], "", "off"),  # not with a pair yet
    (["processor"], "", "off"),
    (["gateway"], "", "off"),
])
def test_meshstream_run_keeps_its_processors_log_in_a_nats_server_of_its_own(
        argv: list[str], env: str, log: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from services import cli

    monkeypatch.delenv("MESHSTREAM_LOG", raising=False)
    if env:
        monkeypatch.setenv("MESHSTREAM_LOG", env)
    args = cli.parser().parse_args(argv)
    assert cli.with_log_default(args, cli.config_from(args)).log == log


@pytest.mark.parametrize("role", ["processor", "gateway"])
def test_only_meshstream_run_starts_an_embedded_log(role: str, tmp_path: object) -> None:
    done = subprocess.run([sys.executable, "-m", "services.cli", role, "--log", "embedded",
                           "--port", "18798", "--run-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--log embedded is started by `meshstream run`" in done.stderr


def test_the_log_with_a_pair_and_bad_log_settings_are_refused() -> None:
    pair = Config(log="embedded", peer="10.0.0.2:7000", tcp="10.0.0.1:7000").problems()
    assert any("cannot be shared by a pair" in p for p in pair)
    assert Config(log="nats://h:1", peer="10.0.0.2:7000", tcp="10.0.0.1:7000").problems() == []
    assert any(p.startswith("--log-replicas") for p in Config(log_replicas=0).problems())
    assert any(p.startswith("--log-stream") for p in Config(log_stream="a.b").problems())
    assert Config(log="nats://h:1").log_urls == ["nats://h:1"] and Config().log_urls == []
