"""The asyncio watcher SDK (meshstream_zmq/aio.py) against a real processor, in the test's loop."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from meshstream_zmq.aio import AsyncWatcher, CommandError, Event, Message
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from meshstream_zmq.errors import ErrorCode
from tests.conftest import Client, Cluster
from tests.integration.support import wait_for, welcomed


async def test_awaited_commands_handlers_and_a_room_that_stalls(cluster: Cluster, connect) -> None:
    """Queries are awaited inside handlers; a handler that awaits for ever holds up its own
    room only: another room is served, and the watcher stays alive (heartbeats) well past
    the peer timeout."""
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = AsyncWatcher("aio-test", prefixes=["aio-"], config=config)
    stall = asyncio.Event()
    joined: list[Event] = []

    @bot.on("join-room")
    async def join(msg: Message) -> None:
        await bot.join(msg.client, msg.room)
        rooms = await bot.client_rooms(msg.client)
        await bot.send_clients([msg.client], "in", {"rooms": sorted(r.name for r in rooms)},
                               target=msg.room)

    @bot.on_event(EventKind.CLIENT_JOINED_ROOM)
    async def seen(ev: Event) -> None:
        joined.append(ev)

    @bot.on("ask")
    async def ask(msg: Message) -> None:
        try:
            await bot.query_room("aio-no-such-room")
        except CommandError as exc:
            await bot.send_clients([msg.client], "answer", {"code": exc.code})

    @bot.on("stall")
    async def stalls(msg: Message) -> None:
        await stall.wait()  # never set: this room's lane is held up
        await bot.send_clients([msg.client], "unstalled", {})

    @bot.on("boom")
    async def boom(msg: Message) -> None:
        raise RuntimeError("handler bug")

    async with welcomed(bot):
        a: Client = await connect()
        await a.send({"action": "join-room", "target": "aio-1"})
        got = await a.expect("in", target="aio-1")
        assert got["message_body"]["rooms"] == ["aio-1", "mesh-global"]
        await a.send({"action": "join-room", "target": "aio-2"})
        await a.expect("in", target="aio-2")
        await wait_for(lambda: len(joined) == 2, what="the join events")
        assert bot.rooms == {"aio-1", "aio-2"}

        await a.send({"action": "ask", "target": "aio-1"})
        assert (await a.expect("answer"))["message_body"]["code"] == ErrorCode.UNKNOWN_ROOM.value
        await a.send({"action": "boom", "target": "aio-2", "id": "b"})
        assert (await a.error(ErrorCode.WATCHER_ERROR.value))["id"] == "b"
        await a.send({"action": "nope", "target": "aio-2", "id": 7})
        assert (await a.error(ErrorCode.UNKNOWN_ACTION.value))["id"] == 7

        await a.send({"action": "stall", "target": "aio-1"})
        await a.send({"action": "ask", "target": "aio-1"})  # behind the stalled frame
        await asyncio.sleep(config.peer_timeout + 1)  # a dead watcher would be noticed by now
        await a.send({"action": "ask", "target": "aio-2", "id": "alive"})
        answer = await a.next(lambda m: m["action"] in ("answer", "error"))
        assert answer["action"] == "answer", answer  # not watcher-unavailable: still alive
        assert bot.welcomed and not [m for m in a.inbox if m["action"] == "unstalled"]
        assert len(bot.lanes["aio-1"].queue) == 1  # the ask waits, in order, behind the stall


async def test_a_full_room_lane_refuses_frames_and_counts_them(cluster: Cluster, connect) -> None:
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = AsyncWatcher("aio-full", prefixes=["full-"], config=config, room_queue=2)
    release, started = asyncio.Event(), asyncio.Event()

    @bot.on("join-room")
    async def join(msg: Message) -> None:
        await bot.join(msg.client, msg.room)
        await bot.send_clients([msg.client], "in", {}, target=msg.room)

    @bot.on("work")
    async def work(msg: Message) -> None:
        started.set()
        await release.wait()
        await bot.send_clients([msg.client], "worked", {"n": msg.body["n"]}, target=msg.room)

    async with welcomed(bot):
        a: Client = await connect()
        await a.send({"action": "join-room", "target": "full-1"})
        await a.expect("in")
        await a.send({"action": "work", "target": "full-1", "message_body": {"n": 0}, "id": 0})
        await started.wait()  # handled (waiting) and out of the lane: two more fit, not three
        for n in range(1, 4):
            await a.send({"action": "work", "target": "full-1", "message_body": {"n": n}, "id": n})
        refused = await a.error(ErrorCode.RATE_LIMITED.value)
        assert refused["id"] == 3
        release.set()
        done = [(await a.expect("worked"))["message_body"]["n"] for _ in range(3)]
        assert done == [0, 1, 2]  # in order


async def test_silence_fails_commands_at_once_and_the_welcome_comes_back(cluster: Cluster) -> None:
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = AsyncWatcher("aio-silence", prefixes=["quiet-"], config=config)
    welcomes: list[int] = []
    bot.on_welcome(lambda rooms: welcomes.append(len(rooms)))
    async with welcomed(bot):
        processor = cluster.kill("processor", signal.SIGSTOP)
        try:
            await wait_for(lambda: bot.silent, what="the processor found silent")
            with pytest.raises(CommandError) as failed:
                await bot.query_rooms()
            assert failed.value.code == ErrorCode.PROCESSOR_UNAVAILABLE.value
        finally:
            os.kill(processor, signal.SIGCONT)
        await bot.wait_welcomed(15)
        rooms = await bot.query_rooms()
        assert any(r.name == "mesh-global" for r in rooms)
        assert len(welcomes) >= 2 and not bot.silent
