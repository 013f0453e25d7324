"""The watcher SDK's command futures: replies reach their callbacks from the loop, never
from inside the caller, and errors (including a reply that never comes) do too."""

from __future__ import annotations

from typing import Any

import zmq

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from meshstream_zmq.watcher import TIMEOUT, CommandFuture, RoomState, Watcher


class FakeSocket:
    """Records what the watcher sends; `full` makes every send fail as with no processor."""

    def __init__(self) -> None:
        self.sent: list[pb.WatcherIn] = []
        self.full = False

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        if self.full:
            raise zmq.Again()
        self.sent.append(pb.WatcherIn.FromString(frames[-1]))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def make() -> tuple[Watcher, FakeSocket, Clock]:
    bot = Watcher("unit", config=Config(run_dir="/nonexistent"), reply_timeout=5.0)
    sock = FakeSocket()
    clock = Clock()
    bot.sock = sock  # type: ignore[assignment]
    bot.now = clock  # type: ignore[method-assign]
    return bot, sock, clock


def reply(bot: Watcher, cmd_id: int, error: str = "", message: str = "",
          rooms: tuple[pb.RoomState, ...] = ()) -> None:
    out = pb.WatcherOut(reply=pb.Reply(id=cmd_id, error=error, message=message, rooms=rooms))
    bot.dispatch([b"reply", out.SerializeToString()])


def test_a_query_reply_reaches_its_callback() -> None:
    bot, sock, _ = make()
    got: list[RoomState] = []
    future = bot.query_room("g1")
    future.add_done_callback(lambda f: got.append(f.result()))
    (sent,) = sock.sent
    assert sent.command.query.what == pb.Query.ROOM and sent.command.query.room == "g1"
    assert sent.command.id == future.id and not future.done() and got == []
    reply(bot, future.id + 1)  # another command's reply resolves nothing here
    assert got == []
    state = pb.RoomState(name="g1", members=["c1"], maker="c1", settings={"game": "words-battle"})
    reply(bot, future.id, rooms=(state,))
    assert got == [RoomState("g1", ["c1"], "c1", {"game": "words-battle"})]
    assert future.done() and future.error is None and not bot.pending


def test_an_error_reply_reaches_its_callback_not_on_command_error() -> None:
    bot, _, _ = make()
    failures: list[tuple[int, str]] = []
    bot.on_command_error = (  # type: ignore[method-assign]
        lambda command, code, message: failures.append((command, code)))
    seen: list[CommandFuture[Any]] = []
    watched = bot.client_rooms("nobody")
    watched.add_done_callback(seen.append)
    unwatched = bot.join("nobody", "r")
    reply(bot, watched.id, error="unknown-client", message="nobody")
    reply(bot, unwatched.id, error="unknown-client", message="nobody")
    assert seen == [watched]
    assert watched.error is not None and watched.error.code == "unknown-client"
    try:
        watched.result()
    except Exception as exc:
        assert exc is watched.error
    else:
        raise AssertionError("result() of a failed command must raise")
    assert failures == [(unwatched.id, "unknown-client")]  # nobody watched it: logged


def test_a_callback_added_late_runs_from_the_loop() -> None:
    bot, _, _ = make()
    future = bot.delete_room("r")
    reply(bot, future.id)
    calls: list[str] = []
    future.add_done_callback(lambda f: calls.append("done"))
    assert calls == []  # never from inside the caller
    bot._run_timers()
    assert calls == ["done"] and future.result() is None


def test_a_reply_that_never_comes_times_out() -> None:
    bot, _, clock = make()
    seen: list[str] = []
    early = bot.query_rooms()
    early.add_done_callback(lambda f: seen.append(f.error.code if f.error else "ok"))
    clock.t += 3
    late = bot.query_rooms()
    late.add_done_callback(lambda f: seen.append(f.error.code if f.error else "ok"))
    clock.t += 2.5
    bot._expire()
    assert seen == [TIMEOUT] and list(bot.pending) == [late.id]
    reply(bot, early.id)  # too late: ignored
    reply(bot, late.id)
    assert seen == [TIMEOUT, "ok"] and late.result() == []


def test_a_command_that_cannot_be_sent_fails_from_the_loop() -> None:
    bot, sock, _ = make()
    sock.full = True
    seen: list[str] = []
    future = bot.query_room("r")
    future.add_done_callback(lambda f: seen.append(f.error.code if f.error else "ok"))
    assert seen == [] and not bot.pending
    bot._run_timers()
    assert seen == ["processor-unavailable"]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    bot, _, _ = make()
    calls: list[int] = []

    def boom(f: CommandFuture[Any]) -> None:
        raise RuntimeError("callback bug")

    future = bot.query_rooms()
    future.add_done_callback(boom)
    future.add_done_callback(lambda f: calls.append(len(f.result())))
    reply(bot, future.id, rooms=(pb.RoomState(name="a"), pb.RoomState(name="b")))
    assert calls == [2]


def test_a_new_processor_is_acknowledged_from_its_own_first_frame() -> None:
    """Frames are numbered per processor: after a welcome by another epoch (a restart or a
    failover) the watcher acknowledges the new processor's frames, not the old count."""
    bot, _, _ = make()

    def welcome(epoch: str) -> None:
        bot.dispatch([b"welcome", pb.WatcherOut(welcome=pb.Snapshot(epoch=epoch)).SerializeToString()])

    def frame(seq: int) -> None:
        msg = pb.WatcherOut(message=pb.ClientFrame(seq=seq, client="c", action="roll", target="r"))
        bot.dispatch([b"message", msg.SerializeToString()])

    bot.on("roll")(lambda msg: None)
    welcome("e1")
    frame(500)
    assert bot.handled == 500
    welcome("e1")  # welcomed again by the same processor: its numbering goes on
    assert bot.handled == 500
    welcome("e2")
    assert bot.handled == 0
    frame(1)
    assert bot.handled == 1
