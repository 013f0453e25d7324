"""Words Battle as two watchers: the lobby (claims `mesh-global`) and the games.

`LobbyWatcher` validates `join-room` / `join-random-room`, creates game rooms and
hands each to the games watcher (`create_room(..., watcher="words-battle-games")`),
then joins the client. `GamesWatcher` runs one pure `Game` per room: it turns
processor events and client frames into `Game` calls and carries out the effects
(sends, removals, timers). What they tell each other is the rooms' settings,
`GameRoomSettings`. Either can be SIGKILLed without disturbing the other.

Neither ever waits for the processor: a query's answer comes to a callback (see
meshstream_zmq.watcher), and whatever must happen after it is done there.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from meshstream_zmq import LOBBY
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind, valid_room_name
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.observability import bounded
from meshstream_zmq.watcher import CommandFuture, Event, Message, RoomState, Timer, Watcher
from services.words_battle.dictionary import word_set
from services.words_battle.game import (
    BOT,
    CancelTimer,
    Effect,
    Game,
    GameOver,
    Kick,
    Send,
    StartTimer,
    Timing,
)
from services.words_battle.lobby import JoinDecision, Lobby, LobbyError
from services.words_battle.room_settings import GameRoomSettings

log = logging.getLogger("meshstream.words_battle")

_CLIENT_CODES = {code.value: code for code in ErrorCode}

LOBBY_WATCHER = "words-battle-lobby"
GAMES_WATCHER = "words-battle-games"


def _room_or_none(answer: CommandFuture[RoomState]) -> RoomState | None:
    """A `query_room` answer: the room, or None when there is none (other errors raise)."""
    if answer.error is not None and answer.error.code == ErrorCode.UNKNOWN_ROOM.value:
        return None
    return answer.result()


def _started(state: RoomState) -> bool:
    settings = GameRoomSettings.from_settings(state.settings)
    return settings is not None and settings.started


class LobbyWatcher:
    """The watcher of `mesh-global`: where `join-room` and `join-random-room` go.

    A `Lobby` decides; this carries the decision out with the processor (is the
    room there, create it, join the client). Each request takes a few round trips
    and the `Lobby`'s view must not change in between, so requests are served one
    at a time, in order: the others wait in `queue` (the loop keeps running).
    """

    def __init__(self, config: Config) -> None:
        self.bot = Watcher(LOBBY_WATCHER, rooms=[LOBBY], config=config)
        self.lobby = Lobby()
        self.queue: deque[Message] = deque()
        self.current: Message | None = None  # the request being served
        self._serving = False
        self.bot.on("join-room")(self.join_room)
        self.bot.on("join-random-room")(self.join_random_room)
        self.bot.on("leave-room")(self.leave_room)
        self.bot.on("*")(self.readonly)

    # ------------------------------------------------------------ handlers

    def join_room(self, msg: Message) -> None:
        if "playerlimit" not in msg.body and "setplayername" not in msg.body:
            self._plain_join(msg)  # not the Words Battle client: gomeshstream's lobby join
            return
        self._enqueue(msg)

    def leave_room(self, msg: Message) -> None:
        """As the unclaimed lobby (docs/protocol.md): nobody leaves it."""
        self.bot.error(msg, ErrorCode.CANNOT_LEAVE_LOBBY)

    def readonly(self, msg: Message) -> None:
        """Any other action to the lobby: as the unclaimed lobby, `lobby-readonly`."""
        self.bot.error(msg, ErrorCode.LOBBY_READONLY)

    def _plain_join(self, msg: Message) -> None:
        """`{"action":"join-room","target":"mesh-global","message_body":{"roomname":R}}`
        answered as the unclaimed lobby answers it (docs/protocol.md): `already-member` for
        no room or the lobby itself, `bad-room-name` for a name that is not one, else the
        client joins R with the built-in notices (the processor has already applied the join
        policies: private rooms, rooms per client). A refused join is an `error` with the
        frame's id, never silence."""
        room = msg.body.get("roomname")
        if room is None or room == LOBBY:
            self.bot.error(msg, ErrorCode.ALREADY_MEMBER)
        elif not valid_room_name(room):
            self.bot.error(msg, ErrorCode.BAD_ROOM_NAME)
        else:
            self.bot.join(msg.client, room, msg.request_id).add_done_callback(
                lambda joined: self._plain_joined(joined, msg))

    def _plain_joined(self, joined: CommandFuture[None], msg: Message) -> None:
        error = joined.error
        if error is None:
            return
        # The processor's own code (already-member, watcher-unavailable, …), or watcher-error
        # for one that is not a client code (e.g. `timeout`: the processor did not answer).
        self.bot.error(msg, _CLIENT_CODES.get(error.code, ErrorCode.WATCHER_ERROR))

    def join_random_room(self, msg: Message) -> None:
        self._enqueue(msg)

    # ------------------------------------------------------------ one request at a time

    def _enqueue(self, msg: Message) -> None:
        self.queue.append(msg)
        self._serve()

    def _serve(self) -> None:
        if self._serving:
            return  # the loop below, further up the stack, takes the next one
        self._serving = True
        try:
            while self.current is None and self.queue:
                msg = self.current = self.queue.popleft()
                self._step(msg, self._friend if msg.action == "join-room" else self._random, msg)
        finally:
            self._serving = False

    def _done(self, msg: Message) -> None:
        """`msg` is served: on to the next request."""
        if self.current is msg:
            self.current = None
            self._serve()

    def _step(self, msg: Message, fn: Callable[..., None], *args: Any) -> None:
        """Run one step of serving `msg`; if it fails, the client is told and `msg` is done."""
        try:
            fn(*args)
        except Exception:
            log.exception("lobby request failed", extra={"fields": {
                "action": bounded(msg.action), "client": bounded(msg.client)}})
            if self.current is msg:
                self.bot.error(msg, ErrorCode.WATCHER_ERROR)
                self._done(msg)

    def _then(self, answer: CommandFuture[Any], msg: Message, fn: Callable[..., None],
              *args: Any) -> None:
        """Go on with `fn(answer, msg, *args)` once the processor has answered."""
        answer.add_done_callback(lambda done: self._step(msg, fn, done, msg, *args))

    def _fail(self, msg: Message, room: str, reason: str) -> None:
        self.bot.send_clients([msg.client], "fail-join-room-notify", {"message": reason},
                              sender=BOT, target=room or msg.room)

    # ------------------------------------------------------------ friend rooms

    def _friend(self, msg: Message) -> None:
        decision = self.lobby.join_friend(msg.client, msg.body)
        if isinstance(decision, LobbyError):
            self._fail(msg, str(msg.body.get("roomname", "")), decision.message)
            return self._done(msg)
        self._then(self.bot.query_room(decision.room), msg, self._friend_room, decision)

    def _friend_room(self, answer: CommandFuture[RoomState], msg: Message,
                     decision: JoinDecision) -> None:
        state = _room_or_none(answer)
        if state is None and not decision.new_room:
            self.lobby.room_closed(decision.room)  # its game ended: the name is free again
            again = self.lobby.join_friend(msg.client, msg.body)
            assert isinstance(again, JoinDecision)  # the body was valid a moment ago
            decision = again
        self._open(msg, decision, state)

    # ------------------------------------------------------------ random rooms

    def _random(self, msg: Message) -> None:
        if self.lobby.pending_random_room is None:
            self._reoffer(msg, self.lobby.unconfirmed_random_rooms)
        else:
            self._match(msg)

    def _reoffer(self, msg: Message, rooms: list[str]) -> None:
        """Nothing pending: a filled random room whose second player left before the game
        started has space again (the games watcher keeps it waiting for a player). Ask
        about each, oldest first, then match."""
        if not rooms:
            return self._match(msg)
        self._then(self.bot.query_room(rooms[0]), msg, self._reoffer_answer, rooms)

    def _reoffer_answer(self, answer: CommandFuture[RoomState], msg: Message,
                        rooms: list[str]) -> None:
        room, state = rooms[0], _room_or_none(answer)
        if state is None:
            self.lobby.room_closed(room)
        elif _started(state):
            self.lobby.random_room_started(room)
        elif len(state.members) == 1 and msg.client not in state.members:
            self.lobby.random_room_has_space(room, waiting=state.members[0])
            return self._match(msg)
        self._reoffer(msg, rooms[1:])

    def _match(self, msg: Message) -> None:
        decision = self.lobby.join_random(msg.client, msg.body)
        if isinstance(decision, LobbyError):
            self._fail(msg, str(msg.body.get("roomname", "")), decision.message)
            return self._done(msg)
        self._then(self.bot.query_room(decision.room), msg, self._random_room, decision)

    def _random_room(self, answer: CommandFuture[RoomState], msg: Message,
                     decision: JoinDecision) -> None:
        state = _room_or_none(answer)
        if not decision.new_room and (state is None or _started(state) or len(state.members) >= 2):
            self.lobby.room_closed(decision.room)  # gone or full meanwhile: open a fresh one
            self._match(msg)
            return
        self._open(msg, decision, state)

    # ------------------------------------------------------------ both

    def _open(self, msg: Message, decision: JoinDecision, state: RoomState | None) -> None:
        """Make sure the decided room exists as a Words Battle room (`state` is what the
        processor said of it), then join the client to it."""
        room = decision.room
        if state is None:
            settings = GameRoomSettings(random_room=decision.random_room,
                                        player_limit=decision.player_limit)
            created = self.bot.create_room(room, watcher=GAMES_WATCHER,
                                           settings=settings.to_settings())
            return self._then(created, msg, self._created, room)
        if GameRoomSettings.from_settings(state.settings) is None:
            self._fail(msg, room, f"{room} is already in use; pick another name")
            return self._done(msg)
        self._enter(msg, room)

    def _created(self, answer: CommandFuture[None], msg: Message, room: str) -> None:
        if answer.error is not None:
            self._fail(msg, room, f"cannot open {room}: {answer.error.message}")
            return self._done(msg)
        self._enter(msg, room)

    def _enter(self, msg: Message, room: str) -> None:
        self._then(self.bot.join(msg.client, room), msg, self._entered, room)

    def _entered(self, answer: CommandFuture[None], msg: Message, room: str) -> None:
        """Joined, or the client is told why not (e.g. the games watcher is down)."""
        if answer.error is not None:
            self._fail(msg, room, f"cannot join {room} now: {answer.error.message}")
        self._done(msg)


class GamesWatcher:
    """The watcher of the game rooms: one `Game` per room, in `games`.

    A room's `Game` is made when the room is created (`ROOM_CREATED`), from the
    settings the lobby gave it, which takes a query: what comes for the room
    meanwhile waits in `loading` and is handled, in order, once the answer is in.
    """

    def __init__(self, config: Config) -> None:
        self.bot = Watcher(GAMES_WATCHER, config=config)
        self.words = word_set()
        self.timing = Timing(scale=config.time_scale)
        self.games: dict[str, Game] = {}
        self.loading: dict[str, list[Message | Event]] = {}
        self.timers: dict[tuple[str, int], Timer] = {}
        self.started: set[str] = set()  # rooms whose "started" setting is set (the lobby reads it)
        self.bot.on_event(EventKind.ROOM_CREATED)(self.created)
        self.bot.on_event(EventKind.CLIENT_JOINED_ROOM)(self.joined)
        self.bot.on_event(EventKind.CLIENT_LEFT_ROOM)(self.left)
        # A player whose connection dropped keeps its seat (CLIENT_AWAY needs nothing: its
        # turn times out as anyone's; it leaves with CLIENT_LEFT_ROOM if it never comes back).
        self.bot.on_event(EventKind.CLIENT_BACK)(self.back)
        self.bot.on("*")(self.frame)
        self.bot.on_welcome(self.welcome)

    # ------------------------------------------------------------ handlers

    def created(self, ev: Event) -> None:
        room = ev.room
        if room in self.games or room in self.loading:
            return  # the processor restarted and the gateways made the room again: same game
        self.loading[room] = []
        self.bot.query_room(room).add_done_callback(lambda answer: self._loaded(room, answer))

    def joined(self, ev: Event) -> None:
        self._handle(ev.room, ev)

    def left(self, ev: Event) -> None:
        self._handle(ev.room, ev)

    def back(self, ev: Event) -> None:
        """A player resumed its session: its page gets the game's current state (`Game.rejoin`),
        after the frames it missed (the processor replays those first). The event names the
        room, or none: then every game the client plays in."""
        rooms = [ev.room] if ev.room else [r for r, g in self.games.items() if ev.client in g.players]
        for room in rooms:
            self._handle(room, ev)

    def frame(self, msg: Message) -> None:
        self._handle(msg.room, msg)

    def welcome(self, rooms: list[RoomState]) -> None:
        """After a restart the games' state is gone: end those games cleanly."""
        for state in rooms:
            if state.name in self.games:
                continue
            self.loading.pop(state.name, None)
            if state.members:
                self.bot.send_room(state.name, "room-bot-end-game",
                                   {"message": "The game server restarted; this game was stopped.",
                                    "client_list": [], "word_list": []}, sender=BOT)
            self.bot.delete_room(state.name)

    # ------------------------------------------------------------ rooms

    def _loaded(self, room: str, answer: CommandFuture[RoomState]) -> None:
        waiting = self.loading.pop(room, None)
        if waiting is None:
            return  # given up meanwhile (see welcome)
        try:
            state = _room_or_none(answer)
        except Exception:
            log.exception("cannot read a new room's settings", extra={"fields": {"room": bounded(room)}})
            state = None
        settings = GameRoomSettings.from_settings(state.settings) if state is not None else None
        if settings is not None:
            self.games[room] = Game(room, random_room=settings.random_room, words=self.words,
                                    timing=self.timing, player_limit=settings.player_limit)
            self.bot.assigned = sorted(self.games)  # taken again in any later hello
        for item in waiting:
            try:
                self._handle(room, item)
            except Exception:  # as the SDK does for a handler that raises
                log.exception("handler failed", extra={"fields": {"room": bounded(room)}})
                if isinstance(item, Message):
                    self.bot.error(item, ErrorCode.WATCHER_ERROR)

    def _handle(self, room: str, item: Message | Event) -> None:
        if room in self.loading:
            self.loading[room].append(item)
            return
        game = self.games.get(room)
        if isinstance(item, Message):
            self._frame(item, game)
        elif game is None:
            return
        elif item.kind is EventKind.CLIENT_JOINED_ROOM:
            self.apply(room, game.join(item.client, self.bot.now()))
        elif item.kind is EventKind.CLIENT_BACK:
            self.apply(room, game.rejoin(item.client, self.bot.now()))
        elif item.kind is EventKind.CLIENT_LEFT_ROOM:
            self._left(item, game)

    def _frame(self, msg: Message, game: Game | None) -> None:
        if game is None:
            self.bot.error(msg, ErrorCode.UNKNOWN_ROOM)
            return
        effects = game.handle(msg.client, msg.action, msg.body, self.bot.now())
        self.apply(msg.room, effects)
        if msg.action == "leave-room" and Kick(msg.client) not in effects:
            self.bot.remove(msg.client, msg.room)  # not a player (e.g. refused): still leaves the room

    def _left(self, ev: Event, game: Game) -> None:
        if ev.client in game.players:  # it is out of the room already: no Kick to carry out
            effects = game.leave(ev.client, self.bot.now())
            self.apply(ev.room, [e for e in effects
                                 if not (isinstance(e, Kick) and e.client == ev.client)])
        if not game.players:
            self.close(ev.room)

    def apply(self, room: str, effects: list[Effect]) -> None:
        """Carry out a game's effects."""
        for effect in effects:
            if isinstance(effect, Send):
                target = effect.target or room
                if effect.to_room:
                    self.bot.send_room(room, effect.action, effect.body, sender=effect.sender,
                                       target=target)
                else:
                    self.bot.send_clients(effect.clients, effect.action, effect.body,
                                          sender=effect.sender, target=target,
                                          is_target_client=effect.is_target_client)
            elif isinstance(effect, Kick):
                self.bot.remove(effect.client, room)
            elif isinstance(effect, StartTimer):
                self.timers[(room, effect.token)] = self.bot.call_later(effect.delay, self.fire,
                                                                        room, effect.token)
            elif isinstance(effect, CancelTimer):
                timer = self.timers.pop((room, effect.token), None)
                if timer is not None:
                    timer.cancel()
            elif isinstance(effect, GameOver):
                pass  # the room closes when its last player leaves
        game = self.games.get(room)
        if game is not None and (game.started or game.finished) and room not in self.started:
            # Begun or over: the room takes no more players (the lobby reads this).
            self.started.add(room)
            self.bot.settings(room, **GameRoomSettings.mark_started())

    def fire(self, room: str, token: int) -> None:
        self.timers.pop((room, token), None)
        game = self.games.get(room)
        if game is not None:
            self.apply(room, game.on_timer(token, self.bot.now()))

    def close(self, room: str) -> None:
        """Forget the room's game (cancelling its timers) and delete the room."""
        self.games.pop(room, None)
        self.bot.assigned = sorted(self.games)
        self.started.discard(room)
        for key in [k for k in self.timers if k[0] == room]:
            self.timers.pop(key).cancel()
        self.bot.delete_room(room)


def build_lobby(config: Config) -> Watcher:
    """`meshstream watcher words-battle-lobby` (see services/watchers.py)."""
    return LobbyWatcher(config).bot


def build_games(config: Config) -> Watcher:
    """`meshstream watcher words-battle-games` (see services/watchers.py)."""
    return GamesWatcher(config).bot
