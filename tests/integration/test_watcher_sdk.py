"""The Python watcher SDK against a real processor (watcher in a thread of the test)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

import websockets

from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.watcher import CommandFuture, Event, Message, RoomState, Watcher
from tests.conftest import Client, Cluster
from tests.integration.support import wait_for


def start(bot: Watcher) -> threading.Thread:
    ready = threading.Event()
    bot.on_welcome(lambda rooms: ready.set())
    thread = threading.Thread(target=bot.run, daemon=True)
    thread.start()
    assert ready.wait(15), "watcher never welcomed"
    return thread


async def test_handlers_commands_and_errors(cluster: Cluster, connect) -> None:
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = Watcher("sdk-test", prefixes=["sdk-"], config=config)
    seen: list[Event] = []

    @bot.on("join-room")
    def join(msg: Message) -> None:
        bot.join(msg.client, msg.room)

    @bot.on_event(EventKind.CLIENT_JOINED_ROOM)
    def joined(ev: Event) -> None:
        seen.append(ev)

        def welcome(rooms: CommandFuture[list[RoomState]]) -> None:
            bot.send_room(ev.room, "welcome", {"rooms": [r.name for r in rooms.result()]},
                          sender="sdk-bot")
        bot.client_rooms(ev.client).add_done_callback(welcome)

    @bot.on("boom")
    def boom(msg: Message) -> None:
        raise RuntimeError("handler bug")

    @bot.on("later")
    def later(msg: Message) -> None:
        fired = bot.call_later(0.05, bot.send_clients, [msg.client], "fired", {"n": 1})
        cancelled = bot.call_later(0.01, bot.send_clients, [msg.client], "cancelled", {})
        cancelled.cancel()
        assert fired is not cancelled

    @bot.on("ask")
    def ask(msg: Message) -> None:
        def answer(room: CommandFuture[RoomState]) -> None:  # an error reply comes here too
            assert room.error is not None
            bot.send_clients([msg.client], "answer", {"code": room.error.code})
        bot.query_room("no-such-room").add_done_callback(answer)

    thread = start(bot)
    try:
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
    finally:
        bot.stop()
        thread.join(5)


def test_claim_conflict_is_refused(cluster: Cluster) -> None:
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    first = Watcher("first", prefixes=["x-"], config=config)
    thread = start(first)
    second = Watcher("second", prefixes=["x-"], config=config)
    second.connect()
    try:
        deadline = time.monotonic() + 10
        assert second.sock is not None
        while time.monotonic() < deadline and second.sock.poll(100) == 0:
            pass
        reply = second.sock.recv_multipart()
        from meshstream_zmq import meshstream_pb2 as pb

        out = pb.WatcherOut.FromString(reply[-1])
        assert out.reply.error == ErrorCode.CLAIM_CONFLICT.value
        assert not second.welcomed
    finally:
        second.close()
        first.stop()
        thread.join(5)


async def test_a_clean_goodbye_does_not_disown_the_frames_it_handled(cluster: Cluster, connect) -> None:
    """The goodbye carries the last frame handled: frames handled just before a clean stop
    (not yet acknowledged by a heartbeat) do not get watcher-restarted."""
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = Watcher("sdk-bye", prefixes=["bye-"], config=config)

    @bot.on("join-room")
    def join(msg: Message) -> None:
        bot.join(msg.client, msg.room)
        bot.send_clients([msg.client], "in", {}, target=msg.room)

    @bot.on("last")
    def last(msg: Message) -> None:  # handled, answered, and the watcher stops at once
        bot.send_clients([msg.client], "done", {}, target=msg.room)
        bot.stop()

    thread = start(bot)
    a: Client = await connect()
    await a.send({"action": "join-room", "target": "bye-1"})
    await a.expect("in", target="bye-1")
    await a.send({"action": "last", "target": "bye-1", "id": "last"})
    await a.expect("done", target="bye-1")
    thread.join(5)
    assert not thread.is_alive()
    # Its rooms now answer watcher-unavailable (claims reserved until it says hello again).
    deadline = time.monotonic() + 10
    while True:
        await a.send({"action": "probe", "target": "bye-1", "id": "probe"})
        got = await a.next(lambda m: m.get("id") == "probe")
        if got["message_body"]["code"] == ErrorCode.WATCHER_UNAVAILABLE.value:
            break
        assert time.monotonic() < deadline, got
    assert not [m for m in a.inbox if m["action"] == "error" and m.get("id") == "last"], a.inbox


async def test_a_silent_processor_is_said_hello_to_again_and_commands_fail_meanwhile(
        cluster: Cluster) -> None:
    """The processor stops answering (SIGSTOP): after the peer timeout the SDK fails new
    commands at once (processor-unavailable) and says hello again; once the processor is
    back it is welcomed again and commands work."""
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = Watcher("sdk-silence", prefixes=["quiet-"], config=config)
    welcomes: list[int] = []
    outcomes: list[str] = []
    bot.on_welcome(lambda rooms: welcomes.append(len(rooms)))

    def tick() -> None:  # on the watcher's own thread: one command while silent, one after
        if bot.silent and not outcomes:
            bot.query_rooms().add_done_callback(
                lambda f: outcomes.append(f.error.code if f.error else "ok"))
        elif outcomes == [ErrorCode.PROCESSOR_UNAVAILABLE.value] and bot.welcomed:
            outcomes.append("again")
            bot.query_rooms().add_done_callback(
                lambda f: outcomes.append(f.error.code if f.error else "ok"))
        bot.call_later(0.05, tick)

    bot.call_later(0, tick)
    thread = start(bot)
    processor = cluster.kill("processor", signal.SIGSTOP)
    try:
        await wait_for(lambda: outcomes, what="a command while the processor is silent")
        assert outcomes == [ErrorCode.PROCESSOR_UNAVAILABLE.value] and not bot.welcomed
    finally:
        os.kill(processor, signal.SIGCONT)
    try:
        await wait_for(lambda: len(outcomes) == 3, what="a command once welcomed again")
        assert outcomes[1:] == ["again", "ok"] and len(welcomes) >= 2
        assert not bot.silent
    finally:
        bot.stop()
        thread.join(5)


async def test_away_and_back_reach_the_handlers_and_the_leave_waits_for_the_window(
        cluster_factory: Callable[..., Cluster]) -> None:
    """A client that loses its connection: CLIENT_AWAY (with its user) and no leave; it
    resumes: CLIENT_BACK; it loses it again and stays away: CLIENT_LEFT_ROOM once the
    resume window (2 s here) has passed, not before."""
    cluster = cluster_factory(args=["--resume-window", "2"])
    config = Config(run_dir=cluster.run_dir, port=cluster.port)
    bot = Watcher("sdk-away", prefixes=["away-"], config=config)
    seen: list[Event] = []  # appended from the watcher's thread
    for kind in (EventKind.CLIENT_JOINED_ROOM, EventKind.CLIENT_AWAY, EventKind.CLIENT_BACK,
                 EventKind.CLIENT_LEFT_ROOM):
        bot.on_event(kind)(seen.append)

    @bot.on("join-room")
    def join(msg: Message) -> None:
        bot.join(msg.client, msg.room)

    def events(kind: EventKind, client: str) -> list[Event]:
        return [e for e in list(seen) if e.kind is kind and e.client == client]

    thread = start(bot)
    opened: list[Client] = []
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
        bot.stop()
        thread.join(5)
