"""A host that runs only gateways (`meshstream run --no-processor --first-index K`), and the
deploy/ unit files that start each role (docs/deploy.md)."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from meshstream_zmq import keys
from meshstream_zmq.config import Config
from services import cli, supervisor

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def test_a_gateway_host_runs_gateways_in_its_own_slots_and_no_processor() -> None:
    config = Config(gateways=2, metrics_port=9000, watchers=False)
    kids = supervisor.children(config, [], processor=False, first_index=101)
    assert [(k.role, k.arg, k.config.metrics_port) for k in kids] == [
        ("gateway", 101, 9001), ("gateway", 102, 9002)]
    default = supervisor.children(config, ["echo"])
    assert [k.name for k in default] == ["processor", "gateway 1", "gateway 2", "watcher echo"]


def test_no_processor_and_first_index_come_from_flags_or_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    args = cli.parser().parse_args(["run"])
    assert (args.processor, args.first_index) == (True, 1)
    args = cli.parser().parse_args(["run", "--no-processor", "--first-index", "5"])
    assert (args.processor, args.first_index) == (False, 5)
    assert "processor" not in vars(cli.config_from(args).with_overrides())  # not a Config field
    monkeypatch.setenv("MESHSTREAM_PROCESSOR", "off")
    monkeypatch.setenv("MESHSTREAM_FIRST_INDEX", "7")
    args = cli.parser().parse_args(["run"])
    assert (args.processor, args.first_index) == (False, 7)


def test_a_gateway_host_needs_the_processors_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--no-processor", "--gateways", "1", "--port", "1"]) == 2
    assert "--no-processor needs the processor's address" in capsys.readouterr().err


def test_a_gateway_host_needs_only_the_files_copied_to_it(tmp_path: Path) -> None:
    full = tmp_path / "all"
    keys.write_keys(full)
    host = tmp_path / "gw"
    for f in ("processor.key", "gateways/gateway.key_secret"):
        (host / f).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        (host / f).write_bytes((full / f).read_bytes())
        (host / f).chmod(0o600)
    gateway_host = Config(tcp="10.0.0.5:7000", keys_dir=str(host), gateways=1,
                          run_dir=str(tmp_path / "run"))
    cli.preflight(gateway_host, [], processor=False)  # no processor secret, no key ring: fine
    from meshstream_zmq.links import LinkError

    with pytest.raises(LinkError):
        cli.preflight(gateway_host, [], processor=True)  # a processor would need them


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / name)
    return parser


@pytest.mark.parametrize("name", ["meshstream-processor.service", "meshstream-gateway.service",
                                  "meshstream-watcher@.service"])
def test_every_unit_starts_a_command_the_cli_accepts(name: str) -> None:
    service = unit(name)["Service"]
    assert service["EnvironmentFile"] == "/etc/meshstream/meshstream.env"
    argv = shlex.split(service["ExecStart"].replace("%i", "words-battle-lobby"))
    assert argv[0].endswith("/meshstream")
    args = cli.parser().parse_args(argv[1:])
    if args.role == "run":
        assert (args.processor, args.watchers) == (False, False)
    for line in ("ExecReload",):
        if line in service:
            cli.parser().parse_args(shlex.split(service[line])[1:])


def test_the_env_example_names_only_real_settings() -> None:
    known = {"MESHSTREAM_" + f.upper() for f in vars(Config())} | {
        "MESHSTREAM_PROCESSOR", "MESHSTREAM_FIRST_INDEX"}
    names = [line.lstrip("#").partition("=")[0]
             for line in (DEPLOY / "meshstream.env.example").read_text().splitlines()
             if line.lstrip("#").startswith("MESHSTREAM_") and "=" in line]
    assert names and not set(names) - known, set(names) - known
