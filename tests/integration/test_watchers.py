"""Watchers over the real ROUTER/DEALER link: the bundled Python echo watcher."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, Client, Cluster


@pytest.fixture
def echo(cluster: Cluster) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "watcher", "echo",
                             "--run-dir", cluster.run_dir, "--port", str(cluster.port),
                             "--metrics-port", "0"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    yield proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


async def join_claimed(c: Client, prefix: str) -> dict:
    """Until the watcher's hello lands, rooms are unclaimed (built-in join): try fresh names."""
    deadline = time.monotonic() + 20
    n = 0
    while time.monotonic() < deadline:
        n += 1
        await c.send({"action": "join-room", "target": f"{prefix}{n}"})
        msg = await c.next(lambda m: m["action"] in ("echo-joined", "client-joined-room"))
        if msg["action"] == "echo-joined":
            return msg
        # a built-in room: leave it (rooms per client are limited, --max-rooms-per-client)
        await c.send({"action": "leave-room", "target": f"{prefix}{n}"})
    raise AssertionError("the watcher never claimed its rooms")


async def test_echo_watcher_answers_its_rooms(cluster: Cluster, echo, connect) -> None:
    a = await connect()
    joined = await join_claimed(a, "echo-")
    room = joined["target"]
    assert joined["sender"] == "echo-bot" and joined["message_body"]["client"] == a.id
    await a.send({"action": "shout", "target": room, "message_body": {"x": 1}})
    got = await a.expect("echo", target=room)
    assert got["message_body"] == {"action": "shout", "from": a.id, "x": 1}
    # the built-in relay does not run in a claimed room
    assert not [m for m in a.inbox if m["action"] == "shout"]


# ------------------------------------------------------------------ a watcher SIGKILLed mid-frame

HANGING_WATCHER = """
import asyncio, sys
from meshstream_zmq.aio import AsyncWatcher
from meshstream_zmq.config import Config

bot = AsyncWatcher("hang-test", prefixes=["hang-"],
                   config=Config(run_dir=sys.argv[1], port=int(sys.argv[2])))

@bot.on("join-room")
async def join(msg):
    await bot.join(msg.client, msg.room)
    print("joined", flush=True)

@bot.on("hang")
async def hang(msg):  # received, never acknowledged: pending in the processor until the kill
    print("hung", flush=True)
    await asyncio.Event().wait()

asyncio.run(bot.run())
"""


@pytest.fixture
def slow_cluster(cluster_factory) -> Cluster:
    """A peer timeout far beyond the test's deadlines: only noticing the SIGKILL itself
    can produce the answers awaited below."""
    return cluster_factory(args=["--peer-timeout", "60"])


async def claimed_room(cluster: Cluster, tmp_path, c: Client) -> tuple[subprocess.Popen[str], str]:
    """Start the hanging watcher and join one of its rooms (the watcher prints "joined")."""
    script = tmp_path / "hanging_watcher.py"
    script.write_text(HANGING_WATCHER)
    proc = subprocess.Popen([sys.executable, str(script), cluster.run_dir, str(cluster.port)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    n = 0
    while time.monotonic() < deadline:
        n += 1
        room = f"hang-{n}"
        await c.send({"action": "join-room", "target": room, "id": room})
        # unclaimed yet: the built-in join answers at once; claimed: the watcher joins silently
        await c.send({"action": "list-rooms", "id": f"sync-{n}"})
        await c.next(lambda m, n=n: m.get("id") == f"sync-{n}")
        if not [m for m in c.inbox if m.get("id") == room]:
            break
        await c.send({"action": "leave-room", "target": room})
    else:
        raise AssertionError("the watcher never claimed its rooms")
    assert proc.stdout is not None
    assert await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20) == "joined\n"
    return proc, room


async def hang(proc: subprocess.Popen[str], c: Client, room: str) -> None:
    await c.send({"action": "hang", "target": room, "id": "pending"})
    assert proc.stdout is not None
    assert await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20) == "hung\n"


def is_error(m: dict) -> bool:
    return bool(m["action"] == "error")


def id_and_code(m: dict) -> tuple[str, str]:
    return m.get("id", ""), m["message_body"]["code"]


async def test_a_sigkilled_watchers_pending_frame_is_answered_before_newer_frames(
        slow_cluster: Cluster, tmp_path) -> None:
    c = await Client.connect(slow_cluster.url)
    proc, room = await claimed_room(slow_cluster, tmp_path, c)
    try:
        await hang(proc, c, room)
        proc.kill()  # SIGKILL, the frame "pending" unacknowledged
        proc.wait(10)
        await c.send({"action": "move", "target": room, "id": "after"})
        # In the order sent: the pending frame's watcher-restarted comes first. The newer
        # frame finds the watcher gone (watcher-unavailable), or reached it just before the
        # processor noticed (then it too may not have been processed: watcher-restarted).
        # (The join-room that the watcher carried out may still be unacknowledged too.)
        answers = []
        while not answers or answers[-1][0] != "after":
            answers.append(id_and_code(await c.next(is_error, timeout=15)))
        *before, last = answers
        assert ("pending", "watcher-restarted") in before
        # before it, only watcher-restarted for frames sent earlier (its join-room, or a
        # leave-room of the search for a claimed room, may not have been acknowledged either)
        assert all(code == "watcher-restarted" for rid, code in before if rid), answers
        assert last[1] in ("watcher-unavailable", "watcher-restarted"), answers
        await c.send({"action": "move", "target": room, "id": "later"})
        got = await c.error("watcher-unavailable", timeout=15)
        assert got["id"] == "later"  # its claims stay reserved: not a chat room
    finally:
        proc.kill()
        proc.wait(10)
        await c.close()


async def test_a_sigkilled_watcher_is_noticed_without_waiting_for_the_peer_timeout(
        slow_cluster: Cluster, tmp_path) -> None:
    """No newer frame needed: the processor probes its watchers every heartbeat."""
    c = await Client.connect(slow_cluster.url)
    proc, room = await claimed_room(slow_cluster, tmp_path, c)
    try:
        await hang(proc, c, room)
        proc.kill()
        proc.wait(10)
        got = await c.next(lambda m: is_error(m) and m.get("id") == "pending", timeout=15)
        assert got["message_body"]["code"] == "watcher-restarted" and got["target"] == room
        assert '"watcher disconnected"' in slow_cluster.read_log()
    finally:
        proc.kill()
        proc.wait(10)
        await c.close()
