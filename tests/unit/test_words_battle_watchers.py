"""The Words Battle watchers on the asyncio SDK, without a socket: the test plays the
processor, feeding frames and replies by hand and holding replies back at will."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.aio import AsyncWatcher
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from meshstream_zmq.errors import ErrorCode
from services.words_battle.room_settings import GameRoomSettings
from services.words_battle.watchers import GAMES_WATCHER, RANDOM_LANE, GamesWatcher, LobbyWatcher


class FakeSocket:
    """What the watcher sends, as the processor would get it (a send is done at once)."""

    def __init__(self) -> None:
        self.sent: list[pb.Command] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> asyncio.Future[None]:
        msg = pb.WatcherIn.FromString(frames[-1])
        if msg.WhichOneof("kind") == "command":
            self.sent.append(msg.command)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def take(self) -> list[pb.Command]:
        sent, self.sent = self.sent, []
        return sent


def wire(bot: AsyncWatcher) -> FakeSocket:
    sock = FakeSocket()
    bot.sock = sock  # type: ignore[assignment]
    return sock


async def settle() -> None:
    """Let every task that can go on run (handlers waiting for a reply stay waiting): a
    number of loop turns with nothing else on the loop, no clock involved."""
    for _ in range(50):
        await asyncio.sleep(0)


async def deliver(bot: AsyncWatcher, out: pb.WatcherOut) -> None:
    bot.dispatch([out.WhichOneof("kind").encode(), out.SerializeToString()])
    await settle()


async def reply(bot: AsyncWatcher, cmd: pb.Command, error: str = "",
                rooms: tuple[pb.RoomState, ...] = ()) -> None:
    await deliver(bot, pb.WatcherOut(reply=pb.Reply(id=cmd.id, error=error, rooms=rooms)))


_seq = iter(range(1, 1_000_000))


async def frame(bot: AsyncWatcher, client: str, action: str, room: str, body: dict[str, Any],
                rid: bytes = b"") -> None:
    await deliver(bot, pb.WatcherOut(message=pb.ClientFrame(
        client=client, action=action, target=room, body=json.dumps(body).encode(),
        request_id=rid, seq=next(_seq))))


async def event(bot: AsyncWatcher, kind: EventKind, room: str, client: str = "") -> None:
    ev = pb.Event(kind=pb.Event.Kind.Value(kind.name), room=room, client=client, seq=1)
    await deliver(bot, pb.WatcherOut(event=ev))


def op(cmd: pb.Command) -> str:
    return str(cmd.WhichOneof("op"))


def friend(room: str) -> dict[str, Any]:
    return {"roomname": room, "playerlimit": 3, "setplayername": "Ann"}


def made(create: pb.Command, members: list[str]) -> tuple[pb.RoomState, ...]:
    """The answer to a query of the room `create` made."""
    return (pb.RoomState(name=create.create_room.room, members=members,
                         settings=create.create_room.settings),)


def lobby_watcher() -> tuple[LobbyWatcher, FakeSocket]:
    lobby = LobbyWatcher(Config(run_dir="/nonexistent"))
    return lobby, wire(lobby.bot)


# ------------------------------------------------------------------ the lobby's lanes


async def test_two_joins_of_one_room_are_served_in_order() -> None:
    lobby, sock = lobby_watcher()
    await frame(lobby.bot, "c1", "join-room", "mesh-global", friend("fr1"))
    await frame(lobby.bot, "c2", "join-room", "mesh-global", friend("fr1"))  # waits behind c1's
    (query,) = sock.take()
    assert op(query) == "query" and query.query.room == "fr1"
    await reply(lobby.bot, query, error=ErrorCode.UNKNOWN_ROOM.value)
    (create,) = sock.take()
    assert op(create) == "create_room" and create.create_room.watcher == GAMES_WATCHER
    settings = GameRoomSettings.from_settings(dict(create.create_room.settings))
    assert settings == GameRoomSettings(random_room=False, player_limit=3)
    await reply(lobby.bot, create)
    (enter,) = sock.take()
    assert (op(enter), enter.join.client, enter.join.room) == ("join", "c1", "fr1")
    await reply(lobby.bot, enter)
    # c1 is in: now c2's request is served, and finds the room made
    (query,) = sock.take()
    assert op(query) == "query" and query.query.room == "fr1"
    await reply(lobby.bot, query, rooms=made(create, ["c1"]))
    (enter,) = sock.take()
    assert (op(enter), enter.join.client) == ("join", "c2")
    await reply(lobby.bot, enter, error=ErrorCode.WATCHER_UNAVAILABLE.value)
    (fail,) = sock.take()
    assert fail.send_clients.clients == ["c2"]
    assert fail.send_clients.message.action == "fail-join-room-notify"
    assert not lobby.bot.lanes  # nothing left waiting


async def test_a_join_whose_reply_is_held_back_does_not_hold_up_another_rooms() -> None:
    """While c1's join waits for the processor, c2 (another room) is admitted first."""
    lobby, sock = lobby_watcher()
    await frame(lobby.bot, "c1", "join-room", "mesh-global", friend("slow"))
    await frame(lobby.bot, "c2", "join-room", "mesh-global", friend("fast"))
    held, query = sock.take()  # both asked at once
    assert (held.query.room, query.query.room) == ("slow", "fast")
    await reply(lobby.bot, query, error=ErrorCode.UNKNOWN_ROOM.value)
    (create,) = sock.take()
    await reply(lobby.bot, create)
    (enter,) = sock.take()
    assert (op(enter), enter.join.client, enter.join.room) == ("join", "c2", "fast")
    await reply(lobby.bot, enter)
    assert sock.take() == [] and list(lobby.bot.lanes) == ["slow"]  # c1 still waits
    await reply(lobby.bot, held, error=ErrorCode.UNKNOWN_ROOM.value)
    (create,) = sock.take()
    assert create.create_room.room == "slow"


async def test_random_matches_share_one_lane_and_friend_joins_pass_them() -> None:
    lobby, sock = lobby_watcher()
    await frame(lobby.bot, "c1", "join-random-room", "mesh-global", {"roomname": "r1"})
    await frame(lobby.bot, "c2", "join-random-room", "mesh-global", {"roomname": "r2"})
    await frame(lobby.bot, "c3", "join-room", "mesh-global", friend("fr3"))
    first, other = sock.take()  # c1's query, and c3's (c2's waits behind c1's)
    assert (first.query.room, other.query.room) == ("r1", "fr3")
    assert set(lobby.bot.lanes) == {RANDOM_LANE, "fr3"}
    await reply(lobby.bot, first, error=ErrorCode.UNKNOWN_ROOM.value)
    (create,) = sock.take()
    await reply(lobby.bot, create)
    (enter,) = sock.take()
    await reply(lobby.bot, enter)
    # c2 is matched with c1 in r1 (the room c1 opened), not in a room of its own
    (query,) = sock.take()
    assert query.query.room == "r1"
    await reply(lobby.bot, query, rooms=made(create, ["c1"]))
    (enter,) = sock.take()
    assert (enter.join.client, enter.join.room) == ("c2", "r1")


async def test_a_random_room_named_like_a_foreign_room_is_not_matched_to_again() -> None:
    """c1 asks for random room r1, but a room of that name exists that the lobby did not
    make: c1 is told, and c2's random join is not sent to that foreign room."""
    lobby, sock = lobby_watcher()
    await frame(lobby.bot, "c1", "join-random-room", "mesh-global", {"roomname": "r1"})
    (query,) = sock.take()
    await reply(lobby.bot, query, rooms=(pb.RoomState(name="r1", members=["x"]),))  # no settings
    (fail,) = sock.take()
    assert fail.send_clients.clients == ["c1"] and "already in use" in fail.send_clients.message.body.decode()
    await frame(lobby.bot, "c2", "join-random-room", "mesh-global", {"roomname": "r2"})
    (query,) = sock.take()
    assert query.query.room == "r2"  # a room of its own, not the foreign r1


async def test_a_query_that_fails_tells_the_client_and_frees_the_lane() -> None:
    lobby, sock = lobby_watcher()
    await frame(lobby.bot, "c1", "join-random-room", "mesh-global", {"roomname": "r1"}, rid=b"1")
    await frame(lobby.bot, "c2", "join-random-room", "mesh-global", {"roomname": "r2"})
    (query,) = sock.take()
    await reply(lobby.bot, query, error="timeout")
    error, query = sock.take()
    assert error.send_clients.clients == ["c1"] and error.send_clients.message.action == "error"
    assert json.loads(error.send_clients.message.body)["code"] == ErrorCode.WATCHER_ERROR.value
    assert error.send_clients.message.request_id == b"1"
    assert op(query) == "query"  # c2's turn


# ------------------------------------------------------------------ the games


def games_watcher(scale: float = 0.01) -> tuple[GamesWatcher, FakeSocket]:
    games = GamesWatcher(Config(run_dir="/nonexistent", time_scale=scale))
    return games, wire(games.bot)


async def test_the_games_watcher_holds_a_new_rooms_traffic_until_its_settings_are_read() -> None:
    games, sock = games_watcher()
    await event(games.bot, EventKind.ROOM_CREATED, "fr1")
    (query,) = sock.take()
    assert op(query) == "query" and query.query.room == "fr1"
    await event(games.bot, EventKind.CLIENT_JOINED_ROOM, "fr1", "c1")
    await frame(games.bot, "c1", "send-message", "fr1", {"message": "hi"})
    assert sock.take() == [] and "fr1" not in games.games  # nothing before the answer
    settings = GameRoomSettings(random_room=False, player_limit=4).to_settings()
    await reply(games.bot, query, rooms=(pb.RoomState(name="fr1", members=["c1"], settings=settings),))
    game = games.games["fr1"]
    assert game.players == ["c1"] and game.player_limit == 4
    actions = [c.send_room.message.action or c.send_clients.message.action for c in sock.take()]
    assert actions == ["join-room-notify", "know-yourself", "is-room-maker", "send-message"]


async def test_a_room_the_lobby_did_not_make_gets_no_game() -> None:
    games, sock = games_watcher()
    await event(games.bot, EventKind.ROOM_CREATED, "other")
    (query,) = sock.take()
    await frame(games.bot, "c1", "send-message", "other", {"message": "hi"})
    await reply(games.bot, query, rooms=(pb.RoomState(name="other", members=[]),))
    (error,) = sock.take()
    assert json.loads(error.send_clients.message.body)["code"] == ErrorCode.UNKNOWN_ROOM.value
    assert games.games == {}


async def games_with_two_players() -> tuple[GamesWatcher, FakeSocket]:
    games, sock = games_watcher()
    await event(games.bot, EventKind.ROOM_CREATED, "fr1")
    (query,) = sock.take()
    settings = GameRoomSettings(random_room=False, player_limit=3).to_settings()
    await reply(games.bot, query, rooms=(pb.RoomState(name="fr1", members=[], settings=settings),))
    for c in ("c1", "c2"):
        await event(games.bot, EventKind.CLIENT_JOINED_ROOM, "fr1", c)
        await frame(games.bot, c, "set-client-name", "fr1", {"setname": c.upper() + "name"})
    sock.take()
    return games, sock


async def test_away_keeps_the_seat_and_back_gets_the_current_state_alone() -> None:
    games, sock = await games_with_two_players()
    await event(games.bot, EventKind.CLIENT_AWAY, "fr1", "c2")
    await event(games.bot, EventKind.CLIENT_AWAY, "", "c2")  # as the lobby's watcher would get it
    assert sock.take() == [] and games.games["fr1"].players == ["c1", "c2"]
    for room in ("fr1", ""):  # the event names the room, or none: every game the client is in
        await event(games.bot, EventKind.CLIENT_BACK, room, "c2")
        (sent,) = sock.take()
        assert op(sent) == "send_clients" and list(sent.send_clients.clients) == ["c2"]
        m = sent.send_clients.message
        assert (m.action, m.target, m.sender) == ("client-list-notify", "fr1", "bot-of-the-room")
        assert [p["slug"] for p in json.loads(m.body)["clientsinroomessage"]] == ["c1", "c2"]
    await event(games.bot, EventKind.CLIENT_BACK, "", "c9")  # in no game
    await event(games.bot, EventKind.CLIENT_BACK, "other", "c1")  # not a game room
    assert sock.take() == []


async def test_back_mid_game_gets_the_turn_and_the_lobby_ignores_away_and_back() -> None:
    games, sock = await games_with_two_players()
    await frame(games.bot, "c1", "start-the-game", "fr1", {})
    sock.take()
    game = games.games["fr1"]
    for _ in range(10):  # fire the game's timers, the one due first each time, to the first turn
        if game.current_player:
            break
        due = min(games.timers, key=lambda k: games.timers[k].when())
        games.timers[due].cancel()
        games.fire(*due)
    assert game.current_player == "c1"
    sock.take()
    await event(games.bot, EventKind.CLIENT_BACK, "fr1", "c1")
    lst, turn = sock.take()
    body = json.loads(turn.send_clients.message.body)
    assert turn.send_clients.message.action == "message-by-bot" and body["message"] == ""
    assert body["whichclientturn"]["slug"] == "c1" and body["letter"] == "w"

    lobby, lsock = lobby_watcher()
    await event(lobby.bot, EventKind.CLIENT_AWAY, "", "c1")
    await event(lobby.bot, EventKind.CLIENT_BACK, "", "c1")
    assert lsock.take() == [] and not lobby.bot.lanes


async def test_a_deleted_room_takes_its_game_and_timers_with_it() -> None:
    games, sock = await games_with_two_players()
    await frame(games.bot, "c1", "start-the-game", "fr1", {})
    assert games.timers
    timers = list(games.timers.values())
    await event(games.bot, EventKind.ROOM_DELETED, "fr1")  # e.g. the welcome after a restart
    assert "fr1" not in games.games and not games.timers
    assert all(t.cancelled() for t in timers)


# ------------------------------------------------------------------ the lobby, as the unclaimed one


async def request(bot: AsyncWatcher, action: str, body: dict[str, object], rid: bytes = b'"r1"') -> None:
    """A client frame to the lobby, with a request id (JSON text, as the processor sends it)."""
    await frame(bot, "c1", action, "mesh-global", dict(body), rid=rid)


def error_of(cmd: pb.Command) -> tuple[list[str], str, str, bytes, str]:
    """(clients, action, target, request_id, code) of an error frame sent to clients."""
    m = cmd.send_clients.message
    return list(cmd.send_clients.clients), m.action, m.target, m.request_id, json.loads(m.body)["code"]


async def test_a_plain_lobby_join_with_a_long_room_name_gets_bad_room_name_with_its_id() -> None:
    lobby, sock = lobby_watcher()
    await request(lobby.bot, "join-room", {"roomname": "x" * 65})
    (error,) = sock.take()  # no join command: the answer itself
    assert error_of(error) == (["c1"], "error", "mesh-global", b'"r1"', ErrorCode.BAD_ROOM_NAME.value)
    for bad in ("", 7, ["a"], "a\u202eb"):  # empty, not a string, a bidi override
        await request(lobby.bot, "join-room", {"roomname": bad})
        (error,) = sock.take()
        assert error_of(error)[4] == ErrorCode.BAD_ROOM_NAME.value, bad
    assert not lobby.bot.lanes  # nothing held up the Words Battle joins


async def test_the_lobby_answers_join_and_leave_of_itself_as_the_unclaimed_lobby() -> None:
    lobby, sock = lobby_watcher()
    expected = [("join-room", {}, ErrorCode.ALREADY_MEMBER),
                ("join-room", {"roomname": "mesh-global"}, ErrorCode.ALREADY_MEMBER),
                ("leave-room", {}, ErrorCode.CANNOT_LEAVE_LOBBY),
                ("send-message", {"message": "hi"}, ErrorCode.LOBBY_READONLY)]
    for action, body, code in expected:
        await request(lobby.bot, action, body, rid=b"5")
        (error,) = sock.take()
        assert error_of(error) == (["c1"], "error", "mesh-global", b"5", code.value), action
        assert json.loads(error.send_clients.message.body)["action"] == action
        assert error.send_clients.message.sender == ""  # the processor stamps "meshstream"


async def test_a_plain_lobby_join_is_a_join_whose_refusal_reaches_the_client() -> None:
    lobby, sock = lobby_watcher()
    await request(lobby.bot, "join-room", {"roomname": "plain1"})
    (join,) = sock.take()
    assert (op(join), join.join.client, join.join.room) == ("join", "c1", "plain1")
    assert join.join.request_id == b'"r1"'  # the joiner's client-joined-room carries it
    await reply(lobby.bot, join, error=ErrorCode.ALREADY_MEMBER.value)
    (error,) = sock.take()
    assert error_of(error) == (["c1"], "error", "mesh-global", b'"r1"', ErrorCode.ALREADY_MEMBER.value)
    await request(lobby.bot, "join-room", {"roomname": "plain2"})
    (join,) = sock.take()
    await reply(lobby.bot, join, error="timeout")  # no answer from the processor
    (error,) = sock.take()
    assert error_of(error)[4] == ErrorCode.WATCHER_ERROR.value
    await request(lobby.bot, "join-room", {"roomname": "plain3"})
    (join,) = sock.take()
    await reply(lobby.bot, join)  # joined: the processor's client-joined-room is the answer
    assert sock.take() == []
