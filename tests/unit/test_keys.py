"""CURVE key files, claims, the run-directory checks and the bind refusal (no processes)."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import pytest
import zmq.auth

from meshstream_zmq import keys, links
from meshstream_zmq.config import Config, Endpoints
from services import cli


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_command_writes_private_pairs_and_claims(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "keys"
    assert cli.main(["keys", str(d), "--watcher", "dice=dice-*,dice-lobby"]) == 0
    out = capsys.readouterr().out
    assert mode(d) == 0o700 and mode(d / "gateways") == 0o700 and mode(d / "watchers") == 0o700
    secrets = sorted(d.rglob("*.key_secret"))
    assert sorted(p.stem for p in secrets) == ["api", "dice", "echo", "gateway", "processor", "webhooks",
                                               "words-battle-games", "words-battle-lobby"]
    for secret in secrets:
        assert mode(secret) == 0o600, secret
        public, private = zmq.auth.load_certificate(secret)
        assert private is not None and len(public) == 40 and len(private) == 40
        assert zmq.auth.load_certificate(secret.with_suffix(".key")) == (public, None)
        assert keys.fingerprint(public) in out  # what was written is printed, by fingerprint
    assert "processor host:" in out and "gateways/gateway.key_secret" in out
    assert json.loads((d / "claims.json").read_text()) == {
        "api": [], "dice": ["dice-lobby", "dice-*"], "echo": ["echo-*"], "webhooks": [],
        "words-battle-games": [], "words-battle-lobby": ["mesh-global"]}


def test_keys_are_kept_unless_forced(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    keys.write_keys(d)
    before = keys.processor_pair(str(d))
    written, kept = keys.write_keys(d)
    assert not written and d / "processor.key" in kept
    assert keys.processor_pair(str(d)) == before
    keys.write_keys(d, force=True)
    assert keys.processor_pair(str(d)) != before


def test_bad_watcher_specs_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for spec in ["dice", "=dice-*", "../x=a", "dice=a*b", "dice=*"]:
        assert cli.main(["keys", str(tmp_path / "k"), "--watcher", spec]) == 2
        assert "meshstream keys:" in capsys.readouterr().err
    assert keys.parse_watcher_spec("monitor=") == ("monitor", keys.Claims())


def test_a_secret_file_others_can_read_is_refused(tmp_path: Path) -> None:
    keys.write_keys(tmp_path)
    (tmp_path / "processor.key_secret").chmod(0o644)
    with pytest.raises(keys.KeyFileError, match="must be 0600"):
        keys.processor_pair(str(tmp_path))
    with pytest.raises(keys.KeyFileError, match="--watcher nobody=CLAIMS"):
        keys.watcher_pair(str(tmp_path), "nobody")


def test_claims_bound_what_a_watcher_key_may_say_in_its_hello(tmp_path: Path) -> None:
    keys.write_keys(tmp_path, {"dice": keys.Claims.parse(["dice-*"])})
    ring = keys.KeyRing.load(str(tmp_path))
    assert {p.name for p in ring.watchers.values()} == {"api", "dice", "echo", "webhooks",
                                                          "words-battle-games", "words-battle-lobby"}
    assert [p.name for p in ring.gateways.values()] == ["gateway"]
    ok = ring.check_hello
    assert ok("watcher:dice", "dice", [], ["dice-"]) == ""
    assert ok("watcher:dice", "dice", ["dice-7"], ["dice-big-"]) == ""  # within dice-*
    assert "mesh-global" in ok("watcher:dice", "dice", ["mesh-global"], [])
    assert "di*" in ok("watcher:dice", "dice", [], ["di"])  # wider than its prefix
    assert "another watcher" in ok("watcher:dice", "words-battle-lobby", [], [])
    # one key for several processes: NAME.<instance> (the gateways' api.<gateway ID>)
    assert ok("watcher:api", "api.gw1-abc", [], []) == ""
    assert "another watcher" in ok("watcher:api", "apix.gw1", [], [])
    assert "mesh-global" in ok("watcher:api", "api.gw1", ["mesh-global"], [])
    assert ok("watcher:words-battle-lobby", "words-battle-lobby", ["mesh-global"], []) == ""
    assert ok("watcher:words-battle-games", "words-battle-games", [], []) == ""
    assert "mesh-global" in ok("watcher:words-battle-games", "words-battle-games", ["mesh-global"], [])
    assert "no watcher key" in ok("gateway:gateway", "dice", [], [])
    # a long claim is cut in the reason (it is logged and sent back)
    assert len(ok("watcher:dice", "dice", ["x" * 5000], [])) < 300


def test_fingerprint_is_short_and_not_the_key() -> None:
    public, secret = zmq.curve_keypair()
    fp = keys.fingerprint(public)
    assert len(fp) == 12 and fp not in public.decode() and fp == keys.fingerprint(public.decode())


# ------------------------------------------------------------------ binding and the run directory


@pytest.mark.parametrize("tcp", ["0.0.0.0:7000", "*:7000", "10.1.2.3:7000", "example.org:7000"])
def test_tcp_beyond_loopback_without_keys_is_refused(tcp: str) -> None:
    with pytest.raises(links.LinkError, match="without keys.*meshstream keys DIR"):
        links.check_bind(Config(tcp=tcp))
    assert links.check_bind(Config(tcp=tcp, keys_dir="/k")) == []


def test_an_explicit_endpoint_beyond_loopback_is_refused_too() -> None:
    with pytest.raises(links.LinkError, match="10.0.0.5"):
        links.check_bind(Config(run_dir="/x", watchers_endpoint="tcp://10.0.0.5:7002"))


@pytest.mark.parametrize("tcp", ["127.0.0.1:7000", "localhost:7000", "[::1]:7000", "127.0.0.9:7000"])
def test_loopback_tcp_without_keys_is_allowed_with_a_warning(tcp: str) -> None:
    (warning,) = links.check_bind(Config(tcp=tcp))
    assert "any local user" in warning
    assert links.check_bind(Config(run_dir="/x")) == []  # IPC: no warning


def test_run_dir_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        d = links.prepare_run_dir(tmp_path / "a" / "run")
    finally:
        os.umask(old)
    assert mode(d) == 0o700


def test_run_dir_of_another_mode_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    d.chmod(0o755)
    with pytest.raises(links.LinkError, match="mode 0755, not 0700"):
        links.prepare_run_dir(d)
    assert mode(d) == 0o755  # not silently "fixed"


def test_run_dir_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "run").symlink_to(real)
    with pytest.raises(links.LinkError, match="not a directory"):
        links.prepare_run_dir(tmp_path / "run")


def test_run_dir_not_ours_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = links.prepare_run_dir(tmp_path / "run")
    monkeypatch.setattr(os, "getuid", lambda: d.stat().st_uid + 1)  # as if another user made it
    with pytest.raises(links.LinkError, match="belongs to uid"):
        links.prepare_run_dir(d)


def test_a_stale_socket_is_removed_and_a_live_one_refused(tmp_path: Path) -> None:
    run = links.prepare_run_dir(tmp_path / "run")
    ep = Endpoints.ipc(str(run))
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(run / "inbound"))
    stale.close()  # the file stays, nothing listens: what a SIGKILLed processor leaves
    links.claim_ipc(ep)
    assert not (run / "inbound").exists()
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(run / "watchers"))
        live.listen()
        with pytest.raises(links.LinkError, match="already running on .*watchers"):
            links.claim_ipc(ep, 8765)
        assert (run / "watchers").exists()  # the live one's socket is left alone
