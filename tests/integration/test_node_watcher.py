"""The Node.js example watcher (examples/node-watcher/dice.js) over the real ROUTER/DEALER link."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Client, Cluster, clients_on
from tests.integration.support import Pair, pair_fixture, serving  # noqa: F401 - the fixture `pair`

NODE_DIR = ROOT / "examples" / "node-watcher"
DICE = NODE_DIR / "dice.js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the Node.js watcher "
                                "example (examples/node-watcher) needs Node.js >= 18")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """SIGTERM, then SIGKILL if it does not go; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture
def dice(cluster: Cluster, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    assert NODE is not None
    missing = [m for m in ("zeromq", "protobufjs") if not (NODE_DIR / "node_modules" / m).is_dir()]
    if missing:
        pytest.fail(f"examples/node-watcher/node_modules lacks {missing}: run `make node-deps` "
                    "(`make test` does it)")
    log_path = tmp_path / "dice.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([NODE, str(DICE), "--endpoint", f"ipc://{cluster.run_dir}/watchers"],
                                cwd=NODE_DIR, stdout=log, stderr=log)
    proc.log_path = log_path  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        stop(proc)
        # shown by pytest only when the test failed
        print("---- dice.js log ----\n" + log_path.read_text(errors="replace")[-6000:])


async def join_claimed(c: Client, prefix: str = "dice-") -> dict[str, Any]:
    """Until the watcher's hello lands, rooms are unclaimed (built-in join): try fresh names."""
    deadline = time.monotonic() + 20
    n = 0
    while time.monotonic() < deadline:
        n += 1
        room = f"{prefix}{n}"
        await c.send({"action": "join-room", "target": room})

        def answer(m: dict[str, Any], room: str = room) -> bool:
            return m["action"] in ("dice-joined", "client-joined-room") and m["target"] == room

        msg = await c.next(answer)
        if msg["action"] == "dice-joined":
            return msg
        await asyncio.sleep(0.05)
    raise AssertionError("the node watcher never claimed its rooms")


def rolled_by(room: str, client: str) -> Any:
    return lambda m: m["action"] == "rolled" and m["target"] == room and m["message_body"]["by"] == client


async def test_dice_rolls_reach_the_room_and_errors_only_the_roller(cluster: Cluster, dice) -> None:
    [[a], [b]] = await clients_on(cluster.url, 2)  # one client on each gateway
    try:
        joined = await join_claimed(a)
        room = joined["target"]
        assert joined["sender"] == "dice-bot" and joined["message_body"] == {"client": a.id}

        # a second member: the bot greets the whole room
        await b.send({"action": "join-room", "target": room})
        for c in (a, b):
            greet = await c.expect("dice-joined", target=room)
            assert greet["sender"] == "dice-bot" and greet["message_body"] == {"client": b.id}

        # a roll goes to every member, from the bot, saying who rolled
        await a.send({"action": "roll", "target": room, "message_body": {"sides": 20}, "id": 5})
        for c in (a, b):
            got = await c.next(rolled_by(room, a.id))
            assert got["sender"] == "dice-bot"
            body = got["message_body"]
            assert body["sides"] == 20 and isinstance(body["value"], int) and 1 <= body["value"] <= 20

        # no message_body: six sides
        await b.send({"action": "roll", "target": room})
        for c in (a, b):
            body = (await c.next(rolled_by(room, b.id)))["message_body"]
            assert body["sides"] == 6 and 1 <= body["value"] <= 6

        # bad sides: an error to the roller only, echoing its request id
        for n, sides in enumerate([1, 101, "6", 2.5, True, [6]]):
            rid = f"bad-{n}"
            await a.send({"action": "roll", "target": room, "message_body": {"sides": sides}, "id": rid})
            err = await a.error("bad-sides")
            assert err["id"] == rid and err["target"] == room
            assert err["message_body"]["action"] == "roll" and err["message_body"]["message"]
        # a marker roll: once b has it, any error meant for b would have come before it
        await a.send({"action": "roll", "target": room, "message_body": {"sides": 2}, "id": 6})
        await a.next(rolled_by(room, a.id))
        await b.next(rolled_by(room, a.id))
        assert not [m for m in b.inbox if m["action"] == "error"], b.inbox
        assert not [m for m in a.inbox if m["action"] == "rolled"], a.inbox  # bad rolls rolled nothing

        # any other action: unknown-action, to the sender only
        await b.send({"action": "dance", "target": room, "message_body": {"x": 1}, "id": 9})
        err = await b.error("unknown-action")
        assert err["id"] == 9 and err["target"] == room and err["message_body"]["action"] == "dance"

        # the built-in relay does not run in a claimed room
        assert not [m for m in a.inbox + b.inbox if m["action"] == "dance"]

        # leave-room removes: a second leave (commands are ordered) finds b gone
        await b.send({"action": "leave-room", "target": room})
        await b.send({"action": "leave-room", "target": room, "id": 12})
        err = await b.error("not-member")
        assert err["id"] == 12
        await a.send({"action": "roll", "target": room, "id": 13})
        await a.next(rolled_by(room, a.id))
        await b.send({"action": "dance", "target": room, "id": 14})
        assert (await b.error("unknown-action"))["id"] == 14
        assert not [m for m in b.inbox if m["action"] == "rolled"], "b left, yet got a roll"

        # pipelined: a roll right behind the join-room counts (commands apply in order)
        other = room + "-x"
        await b.send({"action": "join-room", "target": other})
        await b.send({"action": "roll", "target": other, "message_body": {"sides": 3}, "id": 15})
        got = await b.next(rolled_by(other, b.id))
        assert got["message_body"]["sides"] == 3
        await b.expect("dice-joined", target=other)
        # and a roll from a client outside the room is refused
        await a.send({"action": "roll", "target": other, "id": 16})
        assert (await a.error("not-member"))["id"] == 16
    finally:
        for c in (a, b):
            await c.close()


async def test_dice_watcher_logs_json_and_stops_on_sigterm(cluster: Cluster, dice, connect) -> None:
    a = await connect()
    await join_claimed(a)
    assert dice.poll() is None
    started = time.monotonic()
    assert stop(dice) == 0
    assert time.monotonic() - started < 5
    lines = [json.loads(line) for line in dice.log_path.read_text().splitlines() if line.strip()]
    msgs = [line["msg"] for line in lines]
    assert "welcome" in msgs and msgs[-2:] == ["stopping", "stopped"]
    assert lines[-2]["signal"] == "SIGTERM"


async def test_dice_watcher_over_tcp_with_curve_keys(tmp_path: Path) -> None:
    """The example reads its CURVE keys (--keys-dir) and works against a keyed processor."""
    from tests.integration.test_curve import cli, tcp_base

    assert NODE is not None
    keys_dir = tmp_path / "keys"
    assert cli("keys", str(keys_dir), "--watcher", "dice=dice-*").returncode == 0
    base = tcp_base()
    (tmp_path / "c").mkdir()
    cluster = Cluster(tmp_path / "c", gateways=1,
                      args=["--tcp", f"127.0.0.1:{base}", "--keys-dir", str(keys_dir)])
    log_path = tmp_path / "dice.log"
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([NODE, str(DICE), "--endpoint", f"tcp://127.0.0.1:{base + 2}",
                                     "--keys-dir", str(keys_dir)], cwd=NODE_DIR, stdout=log, stderr=log)
        try:
            [[a]] = await clients_on(cluster.url, 1)
            joined = await join_claimed(a)
            room = joined["target"]
            await a.send({"action": "roll", "target": room, "message_body": {"sides": 4}})
            body = (await a.next(rolled_by(room, a.id)))["message_body"]
            assert body["sides"] == 4 and 1 <= body["value"] <= 4
            await a.close()
        finally:
            stop(proc)
            print("---- dice.js log ----\n" + log_path.read_text(errors="replace")[-6000:])
        text = Path(cluster.log.name).read_text(errors="replace")
        assert "refused a CURVE key" not in text and "watcher hello refused" not in text
    finally:
        cluster.stop()


# What a client may be answered while the bot moves to the standby: test_failover.py's list but
# unknown-room (a gateway lists its rooms in its hello before it forwards a frame there).
OUTAGE = ("processor-unavailable", "processor-restarted", "watcher-unavailable",
          "watcher-restarted")


async def test_dice_watcher_survives_a_failover_of_the_processor_pair(pair: Pair, tmp_path: Path) -> None:
    """A loopback primary/backup pair; the bot gets both processors as the bundled watchers do
    (MESHSTREAM_TCP, MESHSTREAM_PEER). The active processor is SIGKILLed: the bot moves to the
    standby and the dice room, rebuilt there from the gateways, keeps answering."""
    assert NODE is not None
    primary = pair.processor("primary")
    backup = pair.processor("backup")
    pair.gateways("--no-watchers")
    await pair.until(lambda: pair.healthz()[0] == 200, "the gateways healthy")
    env = {k: v for k, v in os.environ.items() if k != "MESHSTREAM_WATCHERS_ENDPOINT"}
    env |= {"MESHSTREAM_TCP": f"127.0.0.1:{pair.ports['primary']}",
            "MESHSTREAM_PEER": f"127.0.0.1:{pair.ports['backup']}"}
    log_path = tmp_path / "dice.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([NODE, str(DICE)], cwd=NODE_DIR, env=env, stdout=log, stderr=log)
    try:
        [[a], [b]] = await clients_on(pair.url, 2)  # one player on each gateway
        try:
            joined = await join_claimed(a)
            room = joined["target"]
            await b.send({"action": "join-room", "target": room})
            for c in (a, b):
                await c.expect("dice-joined", target=room)
            await a.send({"action": "roll", "target": room})
            for c in (a, b):
                await c.next(rolled_by(room, a.id))
            assert serving(primary) and not serving(backup)

            primary.kill()
            killed = time.monotonic()
            # roll until the bot answers: every attempt is answered (an outage error, or the
            # built-in echo while the room is not claimed again yet), never silence
            n = 0
            while True:
                n += 1
                rid = f"after-{n}"
                await a.send({"action": "roll", "target": room, "id": rid})
                reply = await a.next(lambda m, rid=rid: rolled_by(room, a.id)(m) or m.get("id") == rid,
                                     timeout=30)
                if reply["action"] == "rolled":
                    break
                assert reply["action"] == "roll" or (
                    reply["action"] == "error" and reply["message_body"]["code"] in OUTAGE), reply
                assert n < 600, f"the bot never answered again\n{pair.logs()}"
                await asyncio.sleep(0.05)  # a client's pace, under the default rate limit
            assert reply["sender"] == "dice-bot"
            print(f"failover: the dice room answered again {time.monotonic() - killed:.2f} s "
                  "after the SIGKILL")  # a report, not an assertion
            await b.next(rolled_by(room, a.id))
            # the bot knows both members again (from the new processor's snapshot or events)
            await b.send({"action": "roll", "target": room, "message_body": {"sides": 3}})
            for c in (a, b):
                assert (await c.next(rolled_by(room, b.id)))["message_body"]["sides"] == 3
            assert serving(backup)
            lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
            backup_router = f"tcp://127.0.0.1:{pair.ports['backup'] + 2}"
            assert any(line["msg"] == "trying the other processor" and line["endpoint"] == backup_router
                       for line in lines)
            assert [line for line in lines if line["msg"] == "welcome"][-1]["endpoint"] == backup_router
            # a newcomer on the new processor is joined and greeted as before
            await b.send({"action": "join-room", "target": room + "-new"})
            await b.expect("dice-joined", target=room + "-new")
        finally:
            for c in (a, b):
                await c.close()
    finally:
        code = stop(proc)
        print("---- dice.js log ----\n" + log_path.read_text(errors="replace")[-6000:])
    assert code == 0  # it stops cleanly on SIGTERM after the failover too
