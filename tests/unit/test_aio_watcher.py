"""The asyncio watcher SDK's lanes, acknowledgements and heartbeats, against a processor
played by the test: a real ROUTER socket over inproc, speaking the watcher protocol."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator

import pytest
import zmq
import zmq.asyncio

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.aio import AsyncWatcher, CommandError, Message
from meshstream_zmq.config import Config

_ENDPOINTS = itertools.count()


class FakeProcessor:
    """The processor's end of one watcher's connection: what it sent, and what to send it."""

    def __init__(self, ctx: zmq.asyncio.Context) -> None:
        self.endpoint = f"inproc://aio-test-{next(_ENDPOINTS)}"
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind(self.endpoint)
        self.peer = b""
        self.seq = 0
        self.received: list[pb.WatcherIn] = []
        self.arrived = asyncio.Condition()

    async def serve(self) -> None:
        while True:
            peer, _, payload = await self.router.recv_multipart()
            self.peer = peer
            msg = pb.WatcherIn.FromString(payload)
            kind = msg.WhichOneof("kind")
            if kind == "hello":
                await self.send(b"welcome", pb.WatcherOut(welcome=pb.Snapshot(epoch="e1")))
            elif kind == "heartbeat":
                await self.send(b"reply", pb.WatcherOut(reply=pb.Reply(id=0)))
            elif kind == "command":
                await self.answer(msg.command)
            async with self.arrived:
                self.received.append(msg)
                self.arrived.notify_all()

    async def answer(self, cmd: pb.Command) -> None:
        if cmd.WhichOneof("op") == "query":
            await self.send(b"reply", pb.WatcherOut(reply=pb.Reply(
                id=cmd.id, rooms=[pb.RoomState(name=cmd.query.room, members=["c1"])])))
        elif cmd.WhichOneof("op") == "delete_room":
            await self.send(b"reply", pb.WatcherOut(reply=pb.Reply(
                id=cmd.id, error="unknown-room", message="no such room")))
        else:
            await self.send(b"reply", pb.WatcherOut(reply=pb.Reply(id=cmd.id)))

    async def send(self, topic: bytes, out: pb.WatcherOut) -> None:
        await self.router.send_multipart([self.peer, topic, out.SerializeToString()])

    async def frame(self, room: str, action: str, **body: object) -> int:
        self.seq += 1
        await self.send(b"message", pb.WatcherOut(message=pb.ClientFrame(
            client="c1", action=action, target=room, body=json.dumps(body).encode(), seq=self.seq)))
        return self.seq

    async def wait(self, pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: pred(self.received)), timeout)

    def heartbeats(self) -> list[int]:
        return [m.heartbeat.acked for m in self.received if m.WhichOneof("kind") == "heartbeat"]

    def sends(self) -> list[str]:
        return [m.command.send_clients.message.action for m in self.received
                if m.WhichOneof("kind") == "command" and m.command.WhichOneof("op") == "send_clients"]


@pytest.fixture
async def processor() -> AsyncIterator[FakeProcessor]:
    ctx = zmq.asyncio.Context()
    fake = FakeProcessor(ctx)
    task = asyncio.ensure_future(fake.serve())
    yield fake
    task.cancel()
    fake.router.close(linger=0)
    ctx.term()


def watcher(processor: FakeProcessor, **kwargs: object) -> AsyncWatcher:
    config = Config(heartbeat=0.05, peer_timeout=5.0)
    return AsyncWatcher("t", prefixes=["r-"], config=config, endpoint=processor.endpoint,
                        context=processor.router.context, **kwargs)  # type: ignore[arg-type]


async def test_frames_of_a_room_are_handled_in_order_and_rooms_concurrently(
        processor: FakeProcessor) -> None:
    bot = watcher(processor)
    handled: dict[str, list[int]] = {"r-a": [], "r-b": []}
    finished: list[str] = []
    rng = random.Random(7)

    @bot.on("step")
    async def step(msg: Message) -> None:
        # r-a's handlers are slow, r-b's quick: r-b finishes first if rooms run concurrently
        await asyncio.sleep(0.02 if msg.room == "r-a" else rng.random() * 0.002)
        handled[msg.room].append(msg.body["n"])
        if len(handled[msg.room]) == 20:
            finished.append(msg.room)

    await bot.start()
    try:
        await bot.wait_welcomed(5)
        for n in range(20):
            await processor.frame("r-a", "step", n=n)
            await processor.frame("r-b", "step", n=n)
        await processor.wait(lambda _: len(finished) == 2, timeout=10)
        assert handled == {"r-a": list(range(20)), "r-b": list(range(20))}
        assert finished == ["r-b", "r-a"]
        # every frame handled: the heartbeats acknowledge the last one
        await processor.wait(lambda _: processor.heartbeats()[-1:] == [40])
    finally:
        await bot.close()


async def test_a_handler_that_awaits_for_ever_holds_up_only_its_room(processor: FakeProcessor) -> None:
    bot = watcher(processor)
    never = asyncio.Event()

    @bot.on("hang")
    async def hang(msg: Message) -> None:
        await never.wait()

    @bot.on("ask")
    async def ask(msg: Message) -> None:
        room = await bot.query_room(msg.room)  # its reply is not held up by the hung room
        await bot.send_clients([msg.client], "answer", {"members": room.members})

    await bot.start()
    try:
        await bot.wait_welcomed(5)
        hung = await processor.frame("r-a", "hang")
        await processor.frame("r-a", "ask")  # waits behind the hung frame
        for _ in range(3):
            await processor.frame("r-b", "ask")
        await processor.wait(lambda _: processor.sends().count("answer") == 3)
        before = len(processor.heartbeats())
        await processor.wait(lambda _: len(processor.heartbeats()) >= before + 5)
        # acknowledged: everything before the hung frame, nothing from it on
        assert processor.heartbeats()[-1] == hung - 1
        assert bot.welcomed and len(bot.lanes["r-a"].queue) == 1
    finally:
        await bot.close()
    await processor.wait(lambda r: any(m.WhichOneof("kind") == "goodbye" for m in r))
    goodbye = [m for m in processor.received if m.WhichOneof("kind") == "goodbye"]
    assert goodbye[0].goodbye.acked == hung - 1


async def test_a_command_error_raises_and_an_unawaited_one_goes_to_on_command_error(
        processor: FakeProcessor) -> None:
    bot = watcher(processor)
    unwatched: list[str] = []
    bot.on_command_error = lambda command, code, message: unwatched.append(code)  # type: ignore[method-assign]
    await bot.start()
    try:
        await bot.wait_welcomed(5)
        with pytest.raises(CommandError) as failed:
            await bot.delete_room("r-x")
        assert failed.value.code == "unknown-room" and unwatched == []
        bot.delete_room("r-y")  # nobody awaits it
        await processor.wait(lambda _: bool(unwatched))
        assert unwatched == ["unknown-room"]
        assert (await bot.query_room("r-z")).members == ["c1"]
    finally:
        await bot.close()


async def test_a_full_lane_refuses_frames_and_acknowledges_them(processor: FakeProcessor) -> None:
    bot = watcher(processor, room_queue=1)
    go, started = asyncio.Event(), asyncio.Event()

    @bot.on("work")
    async def work(msg: Message) -> None:
        started.set()
        await go.wait()

    await bot.start()
    try:
        await bot.wait_welcomed(5)
        await processor.frame("r-a", "work")
        await started.wait()
        await processor.frame("r-a", "work")  # queued
        refused = await processor.frame("r-a", "work")  # over room_queue: refused
        await processor.wait(lambda _: processor.sends() == ["error"])
        go.set()
        await processor.wait(lambda _: processor.heartbeats()[-1:] == [refused])
    finally:
        await bot.close()


async def test_a_handler_may_name_its_frames_lane(processor: FakeProcessor) -> None:
    """`on(action, lane=fn)`: frames of one lane wait for each other whatever their room; a
    frame whose lane cannot be told (fn raises) stays in its room's lane."""
    bot = watcher(processor)
    release = asyncio.Event()
    handled: list[int] = []

    def lane(msg: Message) -> str:
        return str(msg.body["lane"])  # a KeyError without one

    @bot.on("work", lane=lane)
    async def work(msg: Message) -> None:
        if msg.body["n"] == 1:
            await release.wait()
        handled.append(msg.body["n"])

    await bot.start()
    try:
        await bot.wait_welcomed(5)
        await processor.frame("r-a", "work", lane="x", n=1)  # holds lane x
        await processor.frame("r-b", "work", lane="x", n=2)  # another room, the same lane: waits
        await processor.frame("r-a", "work", n=3)  # no lane: r-a's, not held up by x
        await processor.wait(lambda _: handled == [3])
        assert set(bot.lanes) == {"x"} and len(bot.lanes["x"].queue) == 1
        release.set()
        await processor.wait(lambda _: handled == [3, 1, 2])
        await processor.wait(lambda _: processor.heartbeats()[-1:] == [3])
    finally:
        await bot.close()


async def test_timers_fire_once_and_cancelled_ones_never(processor: FakeProcessor) -> None:
    bot = watcher(processor)
    fired: list[str] = []
    done = asyncio.Event()

    async def later(what: str) -> None:  # a coroutine function runs in a task of its own
        fired.append(what)
        await bot.send_clients(["c1"], what, {})
        done.set()

    await bot.start()
    try:
        await bot.wait_welcomed(5)
        cancelled = bot.call_later(0.01, fired.append, "cancelled")
        bot.call_later(0.02, fired.append, "plain")
        bot.call_later(0.05, later, "awaited")
        cancelled.cancel()
        await asyncio.wait_for(done.wait(), 5)
        assert fired == ["plain", "awaited"]
        assert processor.sends() == ["awaited"]
    finally:
        await bot.close()
