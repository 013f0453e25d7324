"""The watcher SDK's command futures (meshstream_zmq/aio.py), without a socket: a reply
resolves its own command only, errors (including a reply that never comes, and a command
that cannot be sent) reach whoever awaits, and acknowledgements follow the processor."""

from __future__ import annotations

import asyncio

import pytest
import zmq

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.aio import TIMEOUT, AsyncWatcher, CommandError, Message, RoomState
from meshstream_zmq.config import Config


class FakeSocket:
    """Records what the watcher sends; `full` makes every send fail as with no processor."""

    def __init__(self) -> None:
        self.sent: list[pb.WatcherIn] = []
        self.full = False

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.full:
            done.set_exception(zmq.Again())
        else:
            self.sent.append(pb.WatcherIn.FromString(frames[-1]))
            done.set_result(None)
        return done


def make() -> tuple[AsyncWatcher, FakeSocket]:
    bot = AsyncWatcher("unit", config=Config(run_dir="/nonexistent"), reply_timeout=5.0)
    sock = FakeSocket()
    bot.sock = sock  # type: ignore[assignment]
    return bot, sock


def reply(bot: AsyncWatcher, cmd_id: int, error: str = "", message: str = "",
          rooms: tuple[pb.RoomState, ...] = ()) -> None:
    out = pb.WatcherOut(reply=pb.Reply(id=cmd_id, error=error, message=message, rooms=rooms))
    bot.dispatch([b"reply", out.SerializeToString()])


async def test_a_query_reply_resolves_its_own_command() -> None:
    bot, sock = make()
    future = bot.query_room("g1")
    (sent,) = sock.sent
    assert sent.command.query.what == pb.Query.ROOM and sent.command.query.room == "g1"
    assert sent.command.id == future.id and not future.done()
    reply(bot, future.id + 1)  # another command's reply resolves nothing here
    assert not future.done()
    state = pb.RoomState(name="g1", members=["c1"], maker="c1", settings={"game": "words-battle"})
    reply(bot, future.id, rooms=(state,))
    assert await future == RoomState("g1", ["c1"], "c1", {"game": "words-battle"})
    assert not bot.pending


async def test_a_reply_that_never_comes_times_out() -> None:
    bot, _ = make()
    early = bot.query_rooms()
    late = bot.query_rooms()
    late.deadline = early.deadline + 3
    bot._expire(early.deadline + 0.5)
    with pytest.raises(CommandError) as failed:
        await early
    assert failed.value.code == TIMEOUT and list(bot.pending) == [late.id]
    reply(bot, early.id)  # too late: ignored
    reply(bot, late.id)
    assert await late == []


async def test_a_command_that_cannot_be_sent_fails() -> None:
    bot, sock = make()
    sock.full = True
    future = bot.query_room("r")
    assert not bot.pending
    with pytest.raises(CommandError) as failed:
        await future
    assert failed.value.code == "processor-unavailable"


async def test_an_unawaited_failure_goes_to_on_command_error() -> None:
    bot, _ = make()
    failures: list[tuple[int, str]] = []
    bot.on_command_error = (  # type: ignore[method-assign]
        lambda command, code, message: failures.append((command, code)))
    watched = bot.client_rooms("nobody")
    unwatched = bot.join("nobody", "r")

    async def awaiting() -> list[RoomState]:
        return await watched

    waiting = asyncio.create_task(awaiting())
    await asyncio.sleep(0)  # the task now awaits it
    reply(bot, watched.id, error="unknown-client", message="nobody")
    reply(bot, unwatched.id, error="unknown-client", message="nobody")
    with pytest.raises(CommandError):
        await waiting
    assert failures == [(unwatched.id, "unknown-client")]  # nobody awaited it: logged


async def test_a_new_processor_is_acknowledged_from_its_own_first_frame() -> None:
    """Frames are numbered per processor: after a welcome by another epoch (a restart or a
    failover) the watcher acknowledges the new processor's frames, not the old count."""
    bot, _ = make()
    handled = asyncio.Event()

    def welcome(epoch: str) -> None:
        bot.dispatch([b"welcome", pb.WatcherOut(welcome=pb.Snapshot(epoch=epoch)).SerializeToString()])

    async def frame(seq: int) -> None:
        handled.clear()
        msg = pb.WatcherOut(message=pb.ClientFrame(seq=seq, client="c", action="roll", target="r"))
        bot.dispatch([b"message", msg.SerializeToString()])
        await asyncio.wait_for(handled.wait(), 5)

    def roll(msg: Message) -> None:
        handled.set()

    bot.on("roll")(roll)
    welcome("e1")
    await frame(500)
    assert bot.acks.acked == 500
    welcome("e1")  # welcomed again by the same processor: its numbering goes on
    assert bot.acks.acked == 500
    welcome("e2")
    assert bot.acks.acked == 0
    await frame(1)
    assert bot.acks.acked == 1
