"""Words Battle as two watchers: the lobby (claims `mesh-global`) and the games.

`LobbyWatcher` validates `join-room` / `join-random-room`, creates game rooms and
hands each to the games watcher (`create_room(..., watcher="words-battle-games")`),
then joins the client. `GamesWatcher` runs one pure `Game` per room: it turns
processor events and client frames into `Game` calls and carries out the effects
(sends, removals, timers). What they tell each other is the rooms' settings,
`GameRoomSettings`. Either can be SIGKILLed without disturbing the other.

Both are handlers on the asyncio SDK (meshstream_zmq.aio): a handler awaits the
processor's answers while the SDK serves other lanes (other game rooms; for the lobby,
requests about other rooms) and holds the rest of its own lane until it returns.
"""

from __future__ import annotations

import asyncio
import logging

from meshstream_zmq import LOBBY
from meshstream_zmq.aio import AsyncWatcher, CommandError, Event, Message, RoomState
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind, valid_room_name
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.observability import bounded
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

LOBBY_WATCHER = "words-battle-lobby"
GAMES_WATCHER = "words-battle-games"
RANDOM_LANE = "random-match"  # every join-random-room's lane (never a game room's name: a hyphen)


async def _room_or_none(bot: AsyncWatcher, room: str) -> RoomState | None:
    """The processor's state of `room`, or None when there is none (other errors raise)."""
    try:
        return await bot.query_room(room)
    except CommandError as exc:
        if exc.code == ErrorCode.UNKNOWN_ROOM.value:
            return None
        raise


def _started(state: RoomState) -> bool:
    settings = GameRoomSettings.from_settings(state.settings)
    return settings is not None and settings.started


def requested_room(msg: Message) -> str:
    """A lobby `join-room`'s lane: the room it asks for. Two requests for one room are
    served in order (the second finds the room the first made); others concurrently."""
    room = msg.body.get("roomname")
    return room[:64] if isinstance(room, str) else msg.room


class LobbyWatcher:
    """The watcher of `mesh-global`: where `join-room` and `join-random-room` go.

    A `Lobby` decides; this carries the decision out with the processor (is the
    room there, create it, join the client), a few round trips during which other
    requests are served: those for other friend rooms concurrently, those for the
    same room after it (a lane per requested room, `requested_room`), and random
    matches one at a time (they share one pending room: `RANDOM_LANE`). Each `Lobby`
    decision is made and recorded with no await in between: concurrent requests never
    see a half-made one.
    A request that fails (e.g. a query with no answer) is answered `watcher-error`
    by the SDK.
    """

    def __init__(self, config: Config) -> None:
        self.bot = AsyncWatcher(LOBBY_WATCHER, rooms=[LOBBY], config=config)
        self.lobby = Lobby()
        self.bot.on("join-room", lane=requested_room)(self.join_room)
        self.bot.on("join-random-room", lane=lambda msg: RANDOM_LANE)(self.join_random_room)
        self.bot.on("leave-room")(self.leave_room)
        self.bot.on("*")(self.readonly)

    # ------------------------------------------------------------ handlers

    async def join_room(self, msg: Message) -> None:
        if "playerlimit" not in msg.body and "setplayername" not in msg.body:
            await self._plain_join(msg)  # not the Words Battle client: gomeshstream's lobby join
        else:
            await self._friend(msg)

    async def join_random_room(self, msg: Message) -> None:
        if self.lobby.pending_random_room is None:
            await self._reoffer(msg)
        await self._match(msg)

    def leave_room(self, msg: Message) -> None:
        """As the unclaimed lobby (docs/protocol.md): nobody leaves it."""
        self.bot.error(msg, ErrorCode.CANNOT_LEAVE_LOBBY)

    def readonly(self, msg: Message) -> None:
        """Any other action to the lobby: as the unclaimed lobby, `lobby-readonly`."""
        self.bot.error(msg, ErrorCode.LOBBY_READONLY)

    async def _plain_join(self, msg: Message) -> None:
        """`{"action":"join-room","target":"mesh-global","message_body":{"roomname":R}}`
        answered as the unclaimed lobby answers it (docs/protocol.md): `already-member` for
        no room or the lobby itself, `bad-room-name` for a name that is not one, else the
        client joins R with the built-in notices (the processor has already applied the join
        policies: private rooms, rooms per client). A refused join is an `error` with the
        frame's id, never silence: the processor's own code (already-member,
        watcher-unavailable, …), or watcher-error for one clients do not know (timeout)."""
        room = msg.body.get("roomname")
        if room is None or room == LOBBY:
            self.bot.error(msg, ErrorCode.ALREADY_MEMBER)
        elif not valid_room_name(room):
            self.bot.error(msg, ErrorCode.BAD_ROOM_NAME)
        else:
            try:
                await self.bot.join(msg.client, room, msg.request_id)
            except CommandError as exc:
                self.bot.error(msg, exc)

    def _fail(self, msg: Message, room: str, reason: str) -> None:
        self.bot.send_clients([msg.client], "fail-join-room-notify", {"message": reason},
                              sender=BOT, target=room or msg.room)

    def _refuse(self, msg: Message, error: LobbyError) -> None:
        self._fail(msg, str(msg.body.get("roomname", "")), error.message)

    # ------------------------------------------------------------ friend rooms

    async def _friend(self, msg: Message) -> None:
        decision = self.lobby.join_friend(msg.client, msg.body)
        if isinstance(decision, LobbyError):
            return self._refuse(msg, decision)
        state = await _room_or_none(self.bot, decision.room)
        if state is None and not decision.new_room:
            self.lobby.room_closed(decision.room)  # its game ended: the name is free again
            decision = self.lobby.join_friend(msg.client, msg.body)  # a new room: checked again
            if isinstance(decision, LobbyError):
                return self._refuse(msg, decision)
        await self._open(msg, decision, state)

    # ------------------------------------------------------------ random rooms

    async def _reoffer(self, msg: Message) -> None:
        """Nothing pending: a filled random room whose second player left before the game
        started has space again (the games watcher keeps it waiting for a player). Ask
        about each, oldest first, until one is pending again."""
        for room in self.lobby.unconfirmed_random_rooms:
            state = await _room_or_none(self.bot, room)
            if state is None:
                self.lobby.room_closed(room)
            elif _started(state):
                self.lobby.random_room_started(room)
            elif len(state.members) == 1 and msg.client not in state.members:
                self.lobby.random_room_has_space(room, waiting=state.members[0])
                return

    async def _match(self, msg: Message) -> None:
        while True:  # at most twice: a room gone or full meanwhile is closed, then a new one opens
            decision = self.lobby.join_random(msg.client, msg.body)
            if isinstance(decision, LobbyError):
                return self._refuse(msg, decision)
            state = await _room_or_none(self.bot, decision.room)
            if decision.new_room or not (state is None or _started(state) or len(state.members) >= 2):
                return await self._open(msg, decision, state)
            self.lobby.room_closed(decision.room)  # gone or full meanwhile: open a fresh one

    # ------------------------------------------------------------ both

    async def _open(self, msg: Message, decision: JoinDecision, state: RoomState | None) -> None:
        """Make sure the decided room exists as a Words Battle room (`state` is what the
        processor said of it), then join the client to it (or tell it why not, e.g. the
        games watcher is down)."""
        room = decision.room
        if state is None:
            settings = GameRoomSettings(random_room=decision.random_room,
                                        player_limit=decision.player_limit)
            try:
                await self.bot.create_room(room, watcher=GAMES_WATCHER, settings=settings.to_settings())
            except CommandError as exc:
                return self._fail(msg, room, f"cannot open {room}: {exc.message}")
        elif GameRoomSettings.from_settings(state.settings) is None:
            self.lobby.room_closed(room)  # not ours: not a room to match players to
            return self._fail(msg, room, f"{room} is already in use; pick another name")
        try:
            await self.bot.join(msg.client, room)
        except CommandError as exc:
            self._fail(msg, room, f"cannot join {room} now: {exc.message}")


class GamesWatcher:
    """The watcher of the game rooms: one `Game` per room, in `games`.

    A room's `Game` is made when the room is created (`ROOM_CREATED`), from the
    settings the lobby gave it, which takes a query: the room's lane holds what comes
    for it meanwhile, handled in order once the game is there. Everything else is
    synchronous: a `Game` changes only in handlers and timers that do not await.
    """

    def __init__(self, config: Config) -> None:
        self.bot = AsyncWatcher(GAMES_WATCHER, config=config)
        self.words = word_set()
        self.timing = Timing(scale=config.time_scale)
        self.games: dict[str, Game] = {}
        self.timers: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self.started: set[str] = set()  # rooms whose "started" setting is set (the lobby reads it)
        self.bot.on_event(EventKind.ROOM_CREATED)(self.created)
        self.bot.on_event(EventKind.ROOM_DELETED)(self.deleted)
        self.bot.on_event(EventKind.CLIENT_JOINED_ROOM)(self.joined)
        self.bot.on_event(EventKind.CLIENT_LEFT_ROOM)(self.left)
        # A player whose connection dropped keeps its seat (CLIENT_AWAY needs nothing: its
        # turn times out as anyone's; it leaves with CLIENT_LEFT_ROOM if it never comes back).
        self.bot.on_event(EventKind.CLIENT_BACK)(self.back)
        self.bot.on("*")(self.frame)
        self.bot.on_welcome(self.welcome)

    # ------------------------------------------------------------ handlers

    async def created(self, ev: Event) -> None:
        room = ev.room
        if room in self.games:
            return  # the processor restarted and the gateways made the room again: same game
        try:
            state = await _room_or_none(self.bot, room)
        except CommandError:
            log.exception("cannot read a new room's settings", extra={"fields": {"room": bounded(room)}})
            state = None
        settings = GameRoomSettings.from_settings(state.settings) if state is not None else None
        if settings is not None and room in self.bot.rooms:  # (not deleted meanwhile)
            self.games[room] = Game(room, random_room=settings.random_room, words=self.words,
                                    timing=self.timing, player_limit=settings.player_limit)

    def deleted(self, ev: Event) -> None:
        """The room is gone (our `close`, or the end of a game after a restart): so is its game."""
        self._forget(ev.room)

    def joined(self, ev: Event) -> None:
        game = self.games.get(ev.room)
        if game is not None:
            self.apply(ev.room, game.join(ev.client, self.bot.now()))

    def left(self, ev: Event) -> None:
        game = self.games.get(ev.room)
        if game is None:
            return
        if ev.client in game.players:  # it is out of the room already: no Kick to carry out
            effects = game.leave(ev.client, self.bot.now())
            self.apply(ev.room, [e for e in effects
                                 if not (isinstance(e, Kick) and e.client == ev.client)])
        if not game.players:
            self.close(ev.room)

    def back(self, ev: Event) -> None:
        """A player resumed its session: its page gets the game's current state (`Game.rejoin`),
        after the frames it missed (the processor replays those first). The event names the
        room, or none: then every game the client plays in."""
        rooms = [ev.room] if ev.room else [r for r, g in self.games.items() if ev.client in g.players]
        for room in rooms:
            game = self.games.get(room)
            if game is not None:
                self.apply(room, game.rejoin(ev.client, self.bot.now()))

    def frame(self, msg: Message) -> None:
        game = self.games.get(msg.room)
        if game is None:
            self.bot.error(msg, ErrorCode.UNKNOWN_ROOM)
            return
        effects = game.handle(msg.client, msg.action, msg.body, self.bot.now())
        self.apply(msg.room, effects)
        if msg.action == "leave-room" and Kick(msg.client) not in effects:
            self.bot.remove(msg.client, msg.room)  # not a player (e.g. refused): still leaves the room

    def welcome(self, rooms: list[RoomState]) -> None:
        """After a restart the games' state is gone: end those games cleanly."""
        for state in rooms:
            if state.name in self.games:
                continue
            if state.members:
                self.bot.send_room(state.name, "room-bot-end-game",
                                   {"message": "The game server restarted; this game was stopped.",
                                    "client_list": [], "word_list": []}, sender=BOT)
            self.bot.delete_room(state.name)

    # ------------------------------------------------------------ effects

    def apply(self, room: str, effects: list[Effect]) -> None:
        """Carry out a game's effects (sent at once; a failure goes to the SDK's log)."""
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
        """Forget the room's game and delete the room."""
        self._forget(room)
        self.bot.delete_room(room)

    def _forget(self, room: str) -> None:
        self.games.pop(room, None)
        self.started.discard(room)
        for key in [k for k in self.timers if k[0] == room]:
            self.timers.pop(key).cancel()


def build_lobby(config: Config) -> AsyncWatcher:
    """`meshstream watcher words-battle-lobby` (see services/watchers.py)."""
    return LobbyWatcher(config).bot


def build_games(config: Config) -> AsyncWatcher:
    """`meshstream watcher words-battle-games` (see services/watchers.py)."""
    return GamesWatcher(config).bot
