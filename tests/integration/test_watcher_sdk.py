"""The Python watcher SDK (meshstream_zmq/aio.py) against a real processor, in the test's
loop: handlers, commands and errors, timers, claims, the goodbye, away and back. (Lanes,
a stalled room, a full lane and a silent processor: test_aio_watcher.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import websockets

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.aio import AsyncWatcher, CommandError, Event, Message, RoomState
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from meshstream_zmq.errors import ErrorCode
from tests.conftest import Client, Cluster
from tests.integration.support import wait_for, welcomed


async def test_handlers_commands_and_errors(cluster: Cluster, connect) -> None:
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = AsyncWatcher("sdk-test", prefixes=["sdk-"], config=config)
    seen: list[Event] = []

    @bot.on("join-room")
    async def join(msg: Message) -> None:
        await bot.join(msg.client, msg.room)

    @bot.on_event(EventKind.CLIENT_JOINED_ROOM)
    async def joined(ev: Event) -> None:
        seen.append(ev)
        rooms: list[RoomState] = await bot.client_rooms(ev.client)
        await bot.send_room(ev.room, "welcome", {"rooms": [r.name for r in rooms]}, sender="sdk-bot")

    @bot.on("boom")
    def boom(msg: Message) -> None:  # a plain function is a handler too
        raise RuntimeError("handler bug")

    @bot.on("later")
    def later(msg: Message) -> None:
        fired = bot.call_later(0.05, bot.send_clients, [msg.client], "fired", {"n": 1})
        cancelled = bot.call_later(0.01, bot.send_clients, [msg.client], "cancelled", {})
        cancelled.cancel()
        assert fired is not cancelled

    @bot.on("ask")
    async def ask(msg: Message) -> None:
        try:
            await bot.query_room("no-such-room")
        except CommandError as exc:  # an error reply raises where it is awaited
            await bot.send_clients([msg.client], "answer", {"code": exc.code})

    async with welcomed(bot):
        a: Client = await connect()
        await a.send({"action": "join-room", "target": "sdk-1"})
        welcome = await a.expect("welcome", target="sdk-1")
        assert welcome["sender"] == "sdk-bot"
        assert sorted(welcome["message_body"]["rooms"]) == ["mesh-global", "sdk-1"]
        # a handler that raises: the client is told, the watcher keeps serving
        await a.send({"action": "boom", "target": "sdk-1", "id": "b1"})
        err = await a.error(ErrorCode.WATCHER_ERROR.value)
        assert err["id"] == "b1" and err["message_body"]["action"] == "boom"
        # no handler for the action: unknown-action, with the id echoed
        await a.send({"action": "nope", "target": "sdk-1", "id": 9})
        err = await a.error(ErrorCode.UNKNOWN_ACTION.value)
        assert err["id"] == 9
        # timers fire once; cancelled ones never
        await a.send({"action": "later", "target": "sdk-1"})
        await a.expect("fired")
        await a.send({"action": "join-room", "target": "sdk-2"})
        await a.expect("welcome", target="sdk-2")
        assert not [m for m in a.inbox if m["action"] == "cancelled"]
        assert [e.room for e in seen] == ["sdk-1", "sdk-2"]
        await a.send({"action": "ask", "target": "sdk-1"})
        answer = await a.expect("answer")
        assert answer["message_body"]["code"] == ErrorCode.UNKNOWN_ROOM.value


async def test_claim_conflict_is_refused(cluster: Cluster) -> None:
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    refused: list[str] = []
    async with welcomed(AsyncWatcher("first", prefixes=["x-"], config=config)):
        second = AsyncWatcher("second", prefixes=["x-"], config=config)
        dispatch = second.dispatch

        def spy(frames: list[bytes]) -> None:  # what the processor answers the hello
            out = pb.WatcherOut.FromString(frames[-1])
            if out.WhichOneof("kind") == "reply" and out.reply.id == 0 and out.reply.error:
                refused.append(out.reply.error)
            dispatch(frames)

        second.dispatch = spy  # type: ignore[method-assign]
        await second.start()
        try:
            await wait_for(lambda: refused, what="the hello refused")
            assert refused[0] == ErrorCode.CLAIM_CONFLICT.value
            assert not second.welcomed
        finally:
            await second.close()


async def test_a_clean_goodbye_does_not_disown_the_frames_it_handled(cluster: Cluster, connect) -> None:
    """The goodbye carries the last frame handled: frames handled just before a clean stop
    (not yet acknowledged by a heartbeat) do not get watcher-restarted."""
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = AsyncWatcher("sdk-bye", prefixes=["bye-"], config=config)

    @bot.on("join-room")
    async def join(msg: Message) -> None:
        await bot.join(msg.client, msg.room)
        await bot.send_clients([msg.client], "in", {}, target=msg.room)

    @bot.on("last")
    async def last(msg: Message) -> None:  # handled, answered, and the watcher stops at once
        await bot.send_clients([msg.client], "done", {}, target=msg.room)
        bot.stop()

    running = asyncio.ensure_future(bot.run())  # until stop(), then close(): the goodbye
    await bot.wait_welcomed(15)
    a: Client = await connect()
    await a.send({"action": "join-room", "target": "bye-1"})
    await a.expect("in", target="bye-1")
    await a.send({"action": "last", "target": "bye-1", "id": "last"})
    await a.expect("done", target="bye-1")
    await asyncio.wait_for(running, 5)
    # Its rooms now answer watcher-unavailable (claims reserved until it says hello again).
    deadline = time.monotonic() + 10
    while True:
        await a.send({"action": "probe", "target": "bye-1", "id": "probe"})
        got = await a.next(lambda m: m.get("id") == "probe")
        if got["message_body"]["code"] == ErrorCode.WATCHER_UNAVAILABLE.value:
            break
        assert time.monotonic() < deadline, got
    assert not [m for m in a.inbox if m["action"] == "error" and m.get("id") == "last"], a.inbox


async def test_away_and_back_reach_the_handlers_and_the_leave_waits_for_the_window(
        cluster_factory: Callable[..., Cluster]) -> None:
    """A client that loses its connection: CLIENT_AWAY (with its user) and no leave; it
    resumes: CLIENT_BACK; it loses it again and stays away: CLIENT_LEFT_ROOM once the
    resume window (2 s here) has passed, not before."""
    cluster = cluster_factory(args=["--resume-window", "2"])
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = AsyncWatcher("sdk-away", prefixes=["away-"], config=config)
    seen: list[Event] = []
    for kind in (EventKind.CLIENT_JOINED_ROOM, EventKind.CLIENT_AWAY, EventKind.CLIENT_BACK,
                 EventKind.CLIENT_LEFT_ROOM):
        bot.on_event(kind)(seen.append)

    @bot.on("join-room")
    async def join(msg: Message) -> None:
        await bot.join(msg.client, msg.room)

    def events(kind: EventKind, client: str) -> list[Event]:
        return [e for e in seen if e.kind is kind and e.client == client]

    opened: list[Client] = []
    async with welcomed(bot):
        try:
            c = Client(await websockets.connect(cluster.url))
            opened.append(c)
            hello = (await c.expect("client-connected"))["message_body"]
            c.id, session = hello["client"], hello["session"]
            assert isinstance(session, str) and session and c.id not in session
            await c.send({"action": "join-room", "target": "away-1"})
            await wait_for(lambda: events(EventKind.CLIENT_JOINED_ROOM, c.id), what="joined")

            c.ws.transport.abort()  # the connection is lost: no closing handshake
            away = await wait_for(lambda: events(EventKind.CLIENT_AWAY, c.id), what="away")
            assert away[0].room in ("away-1", "") and away[0].user == ""  # anonymous

            back = Client(await websockets.connect(f"{cluster.url}?resume={session}"))
            opened.append(back)
            hello = (await back.expect("client-connected"))["message_body"]
            assert hello["resumed"] is True and hello["client"] == c.id
            await wait_for(lambda: events(EventKind.CLIENT_BACK, c.id), what="back")
            assert not events(EventKind.CLIENT_LEFT_ROOM, c.id), "away is not a leave"

            lost_at = time.monotonic()
            back.ws.transport.abort()
            await wait_for(lambda: len(events(EventKind.CLIENT_AWAY, c.id)) >= 2, what="away again")
            await wait_for(lambda: events(EventKind.CLIENT_LEFT_ROOM, c.id), what="left")
            assert time.monotonic() - lost_at >= 1.5, "the leave waits for the window"
        finally:
            for client in opened:
                with contextlib.suppress(Exception):
                    await client.close()
