"""Across hosts: one network namespace per host, joined by veth links, CURVE on every TCP socket.

The layout of docs/deploy.md, with the same commands as deploy/'s unit files:

    processor host   meshstream processor --tcp 0.0.0.0:7000 --keys-dir K
    gateway host 1   meshstream run --no-processor --no-watchers --gateways 1 --first-index 1
    gateway host 2   meshstream run --no-processor --no-watchers --gateways 1 --first-index 2
    watcher host     meshstream watcher words-battle-lobby | words-battle-games

each in its own namespace, its veth plugged into a bridge in a hub namespace. The root
namespace (the tests, as the players' machine) has one more veth into the bridge and
reaches each gateway host at the address this test assigned it. Each host gets only the
key files `meshstream keys` says to copy there. One player per gateway host plays a Words
Battle game; a gateway with a key the processor does not know is refused; then the
processor host is replaced (its address moved to another namespace, a new processor
started there) and the gateway hosts and watchers find it by themselves.

A second test runs a primary/backup processor pair on two hosts: a cut between the two
processors alone leaves the primary serving and the backup passive while a game is played;
then the primary host's link is cut, the backup takes over and the game goes on; when the
link comes back the old primary finds a later takeover and becomes the standby.

Needs root (`ip netns`); skipped with the reason otherwise. Every namespace, link and
process made here is removed afterwards, also when the test fails (tests/integration/netns.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Client
from tests.integration.netns import (
    UP,
    Deployment,
    Host,
    Net,
    deployed,
    healthz,
    ip,
    network,
    until,
)
from tests.integration.support import gateway_index
from tests.integration.test_words_battle import (
    BOT,
    chat_phase_msg,
    chat_until_the_game_answers,
    check_ranking,
    each,
    enter_friend_room,
    first_word,
    is_,
    roster,
    start_long_game,
    to_room,
    wait_for_watchers,
)

PROC_PORT = 7000  # inside the processor host's own namespace: nothing else there
WS_PORT = 8765  # inside each gateway host's own namespace
WRONG_PORT = 8766  # the wrong-key gateway, on gateway host 1
TIME_SCALE = ["--time-scale", "0.1"]  # turns of 1 s, a game of 6 s
HOSTS = ("proc", "gw1", "gw2", "wat", "stby")
WATCHERS = ("words-battle-lobby", "words-battle-games")


def host_keys(keys: Path, dest: Path, files: list[str]) -> str:
    """A host's keys directory holding only `files` of `keys` (modes as `meshstream keys`)."""
    for f in files:
        target = dest / f
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(keys / f, target)
    for d in (dest, *(p for p in dest.rglob("*") if p.is_dir())):
        d.chmod(0o700)
    return str(dest)


async def play_a_game(a: Client, b: Client, room: str) -> tuple[Client, list[dict[str, Any]]]:
    """alice (a) makes a friend room, bobby (b) joins, the game starts, the first player
    plays "water", the game ends: (who played it, both end-of-game frames)."""
    await enter_friend_room(a, room, "alice", [], maker=True)
    await enter_friend_room(b, room, "bobby", [a])
    listed = await roster([a, b], room, 2)
    await a.send(to_room("start-the-game", room, {"message": room}))
    await each([a, b], chat_phase_msg(room))
    first, _ = await first_word(a, b, room, listed)  # "water", played across hosts
    return first, await each([a, b], is_("room-bot-end-game", room, BOT), timeout=30)


async def start_watchers_and_gateways(deployment: Deployment, keys: Path, tmp_path: Path,
                                      args: list[str]) -> dict[str, str]:
    """The Words Battle watchers on the watcher host (the processor's public key and each
    watcher's pair), one gateway on each gateway host (the processor's public key and the
    gateway pair; slots 1 and 2), all with `args` (where the processor is, …); returns the
    gateway hosts' WebSocket URLs once both are healthy."""
    net = deployment.net
    wkeys = host_keys(keys, tmp_path / "wat-keys",
                      ["processor.key", *(f"watchers/{w}.key_secret" for w in WATCHERS)])
    for w in WATCHERS:
        deployment.start("wat", w, ["watcher", w, "--keys-dir", wkeys, *args])
    urls = {}
    for n, host in enumerate(("gw1", "gw2"), start=1):
        gkeys = host_keys(keys, tmp_path / f"{host}-keys",
                          ["processor.key", "gateways/gateway.key_secret"])
        deployment.start(host, host, [
            "run", "--no-processor", "--no-watchers", "--gateways", "1", "--first-index", str(n),
            "--port", str(WS_PORT), "--run-dir", str(tmp_path / f"{host}-run"),
            "--keys-dir", gkeys, *args])
        urls[host] = f"ws://{net.addr(host)}:{WS_PORT}/wsmesh"
    for host in ("gw1", "gw2"):
        addr = net.addr(host)
        await until(lambda addr=addr: healthz(addr, WS_PORT) == 200, f"{host} healthy", deployment)
    return urls


@pytest.fixture
def net() -> Iterator[Net]:
    with network(HOSTS) as made:
        yield made


@pytest.fixture
def deployment(net: Net, tmp_path: Path) -> Iterator[Deployment]:
    with deployed(net, tmp_path) as d:
        yield d


async def test_three_hosts_play_words_battle_over_curve(net: Net, deployment: Deployment,
                                                        tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    made = subprocess.run([sys.executable, "-m", "services.cli", "keys", str(keys)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert made.returncode == 0, made.stderr
    proc_addr = net.addr("proc")
    tcp = ["--tcp", f"{proc_addr}:{PROC_PORT}"]
    common = [*TIME_SCALE, "--metrics-port", "0"]

    # the processor host: the whole keys directory, bound on every address of its host
    processor = deployment.start("proc", "processor", [
        "processor", "--tcp", f"0.0.0.0:{PROC_PORT}", "--keys-dir", str(keys), *common])
    # the watcher host: the processor's public key and each watcher's pair, nothing else
    # the watcher host and two gateway hosts, each with only its key files
    urls = await start_watchers_and_gateways(deployment, keys, tmp_path, [*tcp, *common])

    # one player on each gateway host, from the players' side of the network
    a = await Client.connect(urls["gw1"])
    b = await Client.connect(urls["gw2"])
    try:
        assert (gateway_index(a), gateway_index(b)) == (1, 2)
        await wait_for_watchers(urls["gw1"])
        first, ends = await play_a_game(a, b, f"hosts{os.getpid() % 10000}")
        assert ends[0]["message_body"] == ends[1]["message_body"]
        ranking = check_ranking(ends[0])
        assert (ranking[0]["slug"], ranking[0]["score"]) == (first.id, 1)
        assert "water" in ends[0]["message_body"]["word_list"]
    finally:
        await a.close()
        await b.close()

    # a gateway whose key the processor does not know: refused at the handshake, never healthy
    wrong = tmp_path / "wrong-keys"
    made = subprocess.run([sys.executable, "-m", "services.cli", "keys", str(wrong)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert made.returncode == 0, made.stderr
    shutil.copy2(keys / "processor.key", wrong / "processor.key")  # it trusts the real processor
    impostor = deployment.start("gw1", "impostor", [
        "gateway", "--index", "9", "--port", str(WRONG_PORT), "--run-dir",
        str(tmp_path / "impostor-run"), *tcp, "--keys-dir", str(wrong), *common])

    def refused() -> bool:
        return any(line for line in processor.text().splitlines()
                   if "refused a CURVE key" in line and "inbound" in line)

    await until(refused, "the processor refusing the impostor's key", deployment)
    assert impostor.proc.poll() is None, impostor.text()
    assert healthz(net.addr("gw1"), WRONG_PORT) != 200
    # and the real gateways are untouched
    assert healthz(net.addr("gw1"), WS_PORT) == 200 and healthz(net.addr("gw2"), WS_PORT) == 200
    assert not [line for line in processor.text().splitlines() if _refused_gateway(line, keys)]
    impostor.stop()

    # replacing the processor host (docs/deploy.md): its address moves to the watcher
    # host, a new processor starts there with the same keys; nobody else is touched
    processor.stop()
    ip("-n", net.ns("proc"), "addr", "del", f"{proc_addr}/24", "dev", "eth0")
    ip("-n", net.ns("wat"), "addr", "add", f"{proc_addr}/24", "dev", "eth0")
    # the gateway hosts must learn the address's new MAC (what the gratuitous ARP of
    # keepalived or a cloud's floating IP does), else they keep sending to the old host
    # until their ARP entries expire
    for host in ("gw1", "gw2"):
        ip("-n", net.ns(host), "neigh", "flush", "all")
    second = deployment.start("wat", "processor-2", [
        "processor", "--tcp", f"0.0.0.0:{PROC_PORT}", "--keys-dir", str(keys), *common])

    def hellos() -> int:
        return sum('"gateway hello"' in line for line in second.text().splitlines())

    await until(lambda: hellos() >= 2, "both gateway hosts welcomed by the new processor",
                deployment)
    for host in ("gw1", "gw2"):
        addr = net.addr(host)
        await until(lambda addr=addr: healthz(addr, WS_PORT) == 200, f"{host} healthy again",
                    deployment)
    a = await Client.connect(urls["gw1"])
    b = await Client.connect(urls["gw2"])
    try:
        await wait_for_watchers(urls["gw2"])  # the watchers found the new processor too
        room = f"again{os.getpid()}"
        await enter_friend_room(a, room, "alice", [], maker=True)
        await enter_friend_room(b, room, "bobby", [a])
        await roster([a, b], room, 2)
    finally:
        await a.close()
        await b.close()


def _refused_gateway(line: str, keys: Path) -> bool:
    """A refusal of the real gateway key (its fingerprint in the processor's log)."""
    from meshstream_zmq import keys as keyfiles

    fp = keyfiles.fingerprint(keyfiles.load_public(keys / "gateways" / "gateway.key"))
    if "refused a CURVE key" not in line:
        return False
    try:
        return fp in json.dumps(json.loads(line))
    except ValueError:
        return fp in line


# ------------------------------------------------------------------ a processor pair


def make_keys(path: Path) -> Path:
    made = subprocess.run([sys.executable, "-m", "services.cli", "keys", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert made.returncode == 0, made.stderr
    return path


def states(host: Host) -> list[str]:
    """The pair states a processor logged, in order ("active" / "passive")."""
    return [("active" if '"processor active"' in line else "passive")
            for line in host.text().splitlines()
            if '"processor active"' in line or '"processor passive' in line]


def health_text(addr: str) -> str:
    try:
        with urllib.request.urlopen(f"http://{addr}:{WS_PORT}/healthz", timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return ""


async def test_a_standby_processor_takes_over_and_a_cut_between_the_two_splits_nothing(
        net: Net, deployment: Deployment, tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "keys")
    primary_addr, standby_addr = net.addr("proc"), net.addr("stby")
    both = ["--tcp", f"{primary_addr}:{PROC_PORT}", "--peer", f"{standby_addr}:{PROC_PORT}"]
    common = [*TIME_SCALE, "--metrics-port", "0"]
    # both processor hosts hold the whole keys directory (one processor key for the pair)
    primary = deployment.start("proc", "primary", [
        "processor", "--tcp", f"0.0.0.0:{PROC_PORT}", "--peer", f"{standby_addr}:{PROC_PORT}",
        "--keys-dir", str(keys), *common])
    standby = deployment.start("stby", "standby", [
        "processor", "--tcp", f"0.0.0.0:{PROC_PORT}", "--peer", f"{primary_addr}:{PROC_PORT}",
        "--backup", "--keys-dir", str(keys), *common])
    urls = await start_watchers_and_gateways(deployment, keys, tmp_path, [*both, *common])
    gateways = [net.addr("gw1"), net.addr("gw2")]
    assert all("processor: primary" in health_text(addr) for addr in gateways)
    await wait_for_watchers(urls["gw1"])  # everyone settled on the primary
    assert (states(primary), states(standby)) == (["active"], ["passive"])

    # 1. only the link between the two processors is cut: each finds the other silent,
    # but the gateways and watchers still reach the primary, so nobody says hello to the
    # standby and it stays passive while a whole game is played
    for host, other in (("proc", standby_addr), ("stby", primary_addr)):
        ip("-n", net.ns(host), "route", "add", "blackhole", f"{other}/32")
    for h in (primary, standby):
        await until(lambda h=h: "the other processor is silent" in h.text(),
                    f"{h.name} noticing the cut", deployment)
    await wait_for_watchers(urls["gw1"])
    a = await Client.connect(urls["gw1"])
    b = await Client.connect(urls["gw2"])
    try:
        await play_a_game(a, b, f"split{os.getpid() % 100000}")
    finally:
        await a.close()
        await b.close()
    assert (states(primary), states(standby)) == (["active"], ["passive"]), deployment.logs()
    assert all("processor: primary" in health_text(addr) for addr in gateways)
    for host, other in (("proc", standby_addr), ("stby", primary_addr)):
        ip("-n", net.ns(host), "route", "del", "blackhole", f"{other}/32")
    await until(lambda: "the other processor is back" in standby.text(), "the cut healed",
                deployment)

    # 2. the primary host's link is cut (the host gone, as far as anyone can tell) in the
    # middle of a game: the standby takes over, the players stay connected, the game goes on
    a = await Client.connect(urls["gw1"])
    b = await Client.connect(urls["gw2"])
    try:
        room = f"fo{os.getpid() % 100000}"  # room names: 1 to 10 letters or digits
        start_long_game_at = type("At", (), {"url": urls["gw1"]})()
        await start_long_game(start_long_game_at, a, b, room)  # type: ignore[arg-type]
        ip("-n", net.ns("proc"), "link", "set", "eth0", "down")
        cut = time.monotonic()
        reply = await chat_until_the_game_answers(a, room, UP, deployment.logs)
        print(f"failover across hosts: the game answered {time.monotonic() - cut:.2f} s after the cut")
        assert reply["message_body"]["useravatar"] == "al"
        # b's gateway may take the standby a moment after a's: what the game relayed before
        # it did never reached b (a new epoch, nothing replayed; failed ~1 run in 8). So b
        # plays on through the standby itself.
        await chat_until_the_game_answers(b, room, UP, deployment.logs)
        assert states(standby)[-1] == "active"
        assert all("processor: backup" in health_text(addr) for addr in gateways)

        # 3. the link comes back: two actives hear each other, the later takeover stays
        ip("-n", net.ns("proc"), "link", "set", "eth0", "up")
        await until(lambda: states(primary)[-1] == "passive", "the old primary stepping down",
                    deployment)
        assert states(standby)[-1] == "active"
        await a.send(to_room("send-message", room, {"message": "after"}))
        await b.next(is_("send-message", room, a.id, message="after"))
        assert all("processor: backup" in health_text(addr) for addr in gateways)
    finally:
        await a.close()
        await b.close()
