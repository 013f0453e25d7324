"""The Words Battle watchers never wait for the processor: answers come to callbacks,
and what arrives meanwhile waits its turn (no socket: the replies are fed by hand)."""

from __future__ import annotations

import json
from collections import deque

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.watcher import Watcher
from services.words_battle.room_settings import GameRoomSettings
from services.words_battle.watchers import GAMES_WATCHER, GamesWatcher, LobbyWatcher


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[pb.Command] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        msg = pb.WatcherIn.FromString(frames[-1])
        if msg.WhichOneof("kind") == "command":
            self.sent.append(msg.command)

    def take(self) -> list[pb.Command]:
        sent, self.sent = self.sent, []
        return sent


def wire(bot: Watcher) -> FakeSocket:
    sock = FakeSocket()
    bot.sock = sock  # type: ignore[assignment]
    return sock


def deliver(bot: Watcher, out: pb.WatcherOut) -> None:
    bot.dispatch([out.WhichOneof("kind").encode(), out.SerializeToString()])


def reply(bot: Watcher, cmd: pb.Command, error: str = "", rooms: tuple[pb.RoomState, ...] = ()) -> None:
    deliver(bot, pb.WatcherOut(reply=pb.Reply(id=cmd.id, error=error, rooms=rooms)))


def frame(bot: Watcher, client: str, action: str, room: str, body: dict[str, object]) -> None:
    deliver(bot, pb.WatcherOut(message=pb.ClientFrame(client=client, action=action, target=room,
                                                      body=json.dumps(body).encode(), seq=1)))


def event(bot: Watcher, kind: EventKind, room: str, client: str = "") -> None:
    ev = pb.Event(kind=pb.Event.Kind.Value(kind.name), room=room, client=client, seq=1)
    deliver(bot, pb.WatcherOut(event=ev))


def op(cmd: pb.Command) -> str:
    return str(cmd.WhichOneof("op"))


def test_the_lobby_serves_one_join_at_a_time_without_waiting() -> None:
    lobby = LobbyWatcher(Config(run_dir="/nonexistent"))
    sock = wire(lobby.bot)
    join = {"roomname": "fr1", "playerlimit": 3, "setplayername": "Ann"}
    frame(lobby.bot, "c1", "join-room", "mesh-global", join)
    frame(lobby.bot, "c2", "join-room", "mesh-global", join)  # queued behind c1's request
    (query,) = sock.take()
    assert op(query) == "query" and query.query.room == "fr1"
    reply(lobby.bot, query, error=ErrorCode.UNKNOWN_ROOM.value)
    (create,) = sock.take()
    assert op(create) == "create_room" and create.create_room.watcher == GAMES_WATCHER
    settings = GameRoomSettings.from_settings(dict(create.create_room.settings))
    assert settings == GameRoomSettings(random_room=False, player_limit=3)
    reply(lobby.bot, create)
    (enter,) = sock.take()
    assert (op(enter), enter.join.client, enter.join.room) == ("join", "c1", "fr1")
    reply(lobby.bot, enter)
    # c1 is in: now c2's request is served, and finds the room made
    (query,) = sock.take()
    assert op(query) == "query" and query.query.room == "fr1"
    room = pb.RoomState(name="fr1", members=["c1"], settings=create.create_room.settings)
    reply(lobby.bot, query, rooms=(room,))
    (enter,) = sock.take()
    assert (op(enter), enter.join.client) == ("join", "c2")
    reply(lobby.bot, enter, error=ErrorCode.WATCHER_UNAVAILABLE.value)
    (fail,) = sock.take()
    assert fail.send_clients.clients == ["c2"]
    assert fail.send_clients.message.action == "fail-join-room-notify"
    assert lobby.current is None and not lobby.queue


def test_a_query_that_fails_tells_the_client_and_frees_the_lobby() -> None:
    lobby = LobbyWatcher(Config(run_dir="/nonexistent"))
    sock = wire(lobby.bot)
    frame(lobby.bot, "c1", "join-random-room", "mesh-global", {"roomname": "r1"})
    frame(lobby.bot, "c2", "join-random-room", "mesh-global", {"roomname": "r2"})
    (query,) = sock.take()
    reply(lobby.bot, query, error="timeout")
    error, query = sock.take()
    assert error.send_clients.clients == ["c1"] and error.send_clients.message.action == "error"
    assert json.loads(error.send_clients.message.body)["code"] == ErrorCode.WATCHER_ERROR.value
    assert op(query) == "query"  # c2's turn


def test_the_games_watcher_holds_a_new_rooms_traffic_until_its_settings_are_read() -> None:
    games = GamesWatcher(Config(run_dir="/nonexistent", time_scale=0.01))
    sock = wire(games.bot)
    event(games.bot, EventKind.ROOM_CREATED, "fr1")
    (query,) = sock.take()
    assert op(query) == "query" and query.query.room == "fr1"
    event(games.bot, EventKind.CLIENT_JOINED_ROOM, "fr1", "c1")
    frame(games.bot, "c1", "send-message", "fr1", {"message": "hi"})
    assert sock.take() == [] and "fr1" not in games.games  # nothing before the answer
    settings = GameRoomSettings(random_room=False, player_limit=4).to_settings()
    reply(games.bot, query, rooms=(pb.RoomState(name="fr1", members=["c1"], settings=settings),))
    game = games.games["fr1"]
    assert game.players == ["c1"] and game.player_limit == 4
    actions = [c.send_room.message.action or c.send_clients.message.action for c in sock.take()]
    assert actions == ["join-room-notify", "know-yourself", "is-room-maker", "send-message"]


def test_a_room_the_lobby_did_not_make_gets_no_game() -> None:
    games = GamesWatcher(Config(run_dir="/nonexistent"))
    sock = wire(games.bot)
    event(games.bot, EventKind.ROOM_CREATED, "other")
    (query,) = sock.take()
    frame(games.bot, "c1", "send-message", "other", {"message": "hi"})
    reply(games.bot, query, rooms=(pb.RoomState(name="other", members=[]),))
    (error,) = sock.take()
    assert json.loads(error.send_clients.message.body)["code"] == ErrorCode.UNKNOWN_ROOM.value
    assert games.games == {}


def games_with_two_players() -> tuple[GamesWatcher, FakeSocket]:
    games = GamesWatcher(Config(run_dir="/nonexistent", time_scale=0.01))
    sock = wire(games.bot)
    event(games.bot, EventKind.ROOM_CREATED, "fr1")
    (query,) = sock.take()
    settings = GameRoomSettings(random_room=False, player_limit=3).to_settings()
    reply(games.bot, query, rooms=(pb.RoomState(name="fr1", members=[], settings=settings),))
    for c in ("c1", "c2"):
        event(games.bot, EventKind.CLIENT_JOINED_ROOM, "fr1", c)
        frame(games.bot, c, "set-client-name", "fr1", {"setname": c.upper() + "name"})
    sock.take()
    return games, sock


def test_away_keeps_the_seat_and_back_gets_the_current_state_alone() -> None:
    games, sock = games_with_two_players()
    event(games.bot, EventKind.CLIENT_AWAY, "fr1", "c2")
    event(games.bot, EventKind.CLIENT_AWAY, "", "c2")  # as the lobby's watcher would get it
    assert sock.take() == [] and games.games["fr1"].players == ["c1", "c2"]
    for room in ("fr1", ""):  # the event names the room, or none: every game the client is in
        event(games.bot, EventKind.CLIENT_BACK, room, "c2")
        (sent,) = sock.take()
        assert op(sent) == "send_clients" and list(sent.send_clients.clients) == ["c2"]
        m = sent.send_clients.message
        assert (m.action, m.target, m.sender) == ("client-list-notify", "fr1", "bot-of-the-room")
        assert [p["slug"] for p in json.loads(m.body)["clientsinroomessage"]] == ["c1", "c2"]
    event(games.bot, EventKind.CLIENT_BACK, "", "c9")  # in no game
    event(games.bot, EventKind.CLIENT_BACK, "other", "c1")  # not a game room
    assert sock.take() == []


def test_back_mid_game_gets_the_turn_and_the_lobby_ignores_away_and_back() -> None:
    games, sock = games_with_two_players()
    frame(games.bot, "c1", "start-the-game", "fr1", {})
    sock.take()
    game = games.games["fr1"]
    for _ in range(10):  # fire the game's timers, the one due first each time, to the first turn
        if game.current_player:
            break
        games.fire(*min(games.timers, key=lambda k: games.timers[k].when))
    assert game.current_player == "c1"
    sock.take()
    event(games.bot, EventKind.CLIENT_BACK, "fr1", "c1")
    lst, turn = sock.take()
    body = json.loads(turn.send_clients.message.body)
    assert turn.send_clients.message.action == "message-by-bot" and body["message"] == ""
    assert body["whichclientturn"]["slug"] == "c1" and body["letter"] == "w"

    lobby = LobbyWatcher(Config(run_dir="/nonexistent"))
    lsock = wire(lobby.bot)
    event(lobby.bot, EventKind.CLIENT_AWAY, "", "c1")
    event(lobby.bot, EventKind.CLIENT_BACK, "", "c1")
    assert lsock.take() == [] and lobby.queue == deque() and lobby.current is None


# ------------------------------------------------------------------ the lobby, as the unclaimed one


def request(bot: Watcher, action: str, body: dict[str, object], rid: bytes = b'"r1"') -> None:
    """A client frame to the lobby, with a request id (JSON text, as the processor sends it)."""
    deliver(bot, pb.WatcherOut(message=pb.ClientFrame(
        client="c1", action=action, target="mesh-global", body=json.dumps(body).encode(),
        request_id=rid, seq=1)))


def error_of(cmd: pb.Command) -> tuple[list[str], str, str, bytes, str]:
    """(clients, action, target, request_id, code) of an error frame sent to clients."""
    m = cmd.send_clients.message
    return list(cmd.send_clients.clients), m.action, m.target, m.request_id, json.loads(m.body)["code"]


def test_a_plain_lobby_join_with_a_long_room_name_gets_bad_room_name_with_its_id() -> None:
    lobby = LobbyWatcher(Config(run_dir="/nonexistent"))
    sock = wire(lobby.bot)
    request(lobby.bot, "join-room", {"roomname": "x" * 65})
    (error,) = sock.take()  # no join command: the answer itself
    assert error_of(error) == (["c1"], "error", "mesh-global", b'"r1"', ErrorCode.BAD_ROOM_NAME.value)
    for bad in ("", 7, ["a"], "a\u202eb"):  # empty, not a string, a bidi override
        request(lobby.bot, "join-room", {"roomname": bad})
        (error,) = sock.take()
        assert error_of(error)[4] == ErrorCode.BAD_ROOM_NAME.value, bad
    assert lobby.current is None and not lobby.queue  # nothing held up the Words Battle joins


def test_the_lobby_answers_join_and_leave_of_itself_as_the_unclaimed_lobby() -> None:
    lobby = LobbyWatcher(Config(run_dir="/nonexistent"))
    sock = wire(lobby.bot)
    expected = [("join-room", {}, ErrorCode.ALREADY_MEMBER),
                ("join-room", {"roomname": "mesh-global"}, ErrorCode.ALREADY_MEMBER),
                ("leave-room", {}, ErrorCode.CANNOT_LEAVE_LOBBY),
                ("send-message", {"message": "hi"}, ErrorCode.LOBBY_READONLY)]
    for action, body, code in expected:
        request(lobby.bot, action, body, rid=b"5")
        (error,) = sock.take()
        assert error_of(error) == (["c1"], "error", "mesh-global", b"5", code.value), action
        assert json.loads(error.send_clients.message.body)["action"] == action
        assert error.send_clients.message.sender == ""  # the processor stamps "meshstream"


def test_a_plain_lobby_join_is_a_join_whose_refusal_reaches_the_client() -> None:
    lobby = LobbyWatcher(Config(run_dir="/nonexistent"))
    sock = wire(lobby.bot)
    request(lobby.bot, "join-room", {"roomname": "plain1"})
    (join,) = sock.take()
    assert (op(join), join.join.client, join.join.room) == ("join", "c1", "plain1")
    assert join.join.request_id == b'"r1"'  # the joiner's client-joined-room carries it
    reply(lobby.bot, join, error=ErrorCode.ALREADY_MEMBER.value)
    (error,) = sock.take()
    assert error_of(error) == (["c1"], "error", "mesh-global", b'"r1"', ErrorCode.ALREADY_MEMBER.value)
    request(lobby.bot, "join-room", {"roomname": "plain2"})
    (join,) = sock.take()
    reply(lobby.bot, join, error="timeout")  # no answer from the processor
    (error,) = sock.take()
    assert error_of(error)[4] == ErrorCode.WATCHER_ERROR.value
    request(lobby.bot, "join-room", {"roomname": "plain3"})
    (join,) = sock.take()
    reply(lobby.bot, join)  # joined: the processor's client-joined-room is the answer
    assert sock.take() == []
