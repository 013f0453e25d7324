"""Words Battle as two watchers: the lobby (claims `mesh-global`) and the games.

The lobby validates `join-room` / `join-random-room`, creates game rooms and hands
each to the games watcher (`create_room(..., watcher="words-battle-games")`), then
joins the client. The games watcher runs one pure `Game` per room: it turns
processor events and client frames into `Game` calls and carries out the effects
(sends, removals, timers). Either can be SIGKILLed without disturbing the other.
"""

from __future__ import annotations

import logging

from meshstream_zmq import LOBBY
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.watcher import CommandError, Event, Message, RoomState, Timer, Watcher
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

log = logging.getLogger("meshstream.words_battle")

LOBBY_WATCHER = "words-battle-lobby"
GAMES_WATCHER = "words-battle-games"
KIND = "words-battle"  # room setting "game" marks rooms the lobby made


def _room_or_none(bot: Watcher, room: str) -> RoomState | None:
    try:
        return bot.query_room(room)
    except CommandError as exc:
        if exc.code == ErrorCode.UNKNOWN_ROOM.value:
            return None
        raise


def build_lobby(config: Config) -> Watcher:
    bot = Watcher(LOBBY_WATCHER, rooms=[LOBBY], config=config)
    lobby = Lobby()

    def fail(msg: Message, room: str, reason: str) -> None:
        bot.send_clients([msg.client], "fail-join-room-notify", {"message": reason}, sender=BOT,
                         target=room or msg.room)

    def open_room(msg: Message, decision: JoinDecision) -> bool:
        """Make sure the decided room exists as a Words Battle room; False if it cannot."""
        state = _room_or_none(bot, decision.room)
        if state is not None:
            if state.settings.get("game") != KIND:
                fail(msg, decision.room, f"{decision.room} is already in use; pick another name")
                return False
            return True
        settings = {"game": KIND, "random": "1" if decision.random_room else "0",
                    "player_limit": str(decision.player_limit)}
        try:
            bot.request(create_room=_create(decision.room, settings))
        except CommandError as exc:
            fail(msg, decision.room, f"cannot open {decision.room}: {exc.message}")
            return False
        return True

    @bot.on("join-room")
    def join_room(msg: Message) -> None:
        if "playerlimit" not in msg.body and "setplayername" not in msg.body:
            # Not the Words Battle client: gomeshstream's plain lobby join, done the built-in way.
            room = msg.body.get("roomname")
            if not isinstance(room, str) or not room:
                bot.error(msg, ErrorCode.BAD_ROOM_NAME)
            else:
                bot.join(msg.client, room)
            return
        decision = lobby.join_friend(msg.client, msg.body)
        if isinstance(decision, LobbyError):
            fail(msg, str(msg.body.get("roomname", "")), decision.message)
            return
        if not decision.new_room and _room_or_none(bot, decision.room) is None:
            lobby.room_closed(decision.room)  # its game ended: the name is free again
            decision = lobby.join_friend(msg.client, msg.body)
            assert isinstance(decision, JoinDecision)
        if open_room(msg, decision):
            enter(msg, decision.room)

    def enter(msg: Message, room: str) -> None:
        """Join the client to its game room, or tell it why not (e.g. the games watcher is down)."""
        try:
            bot.request(join=pb.Membership(client=msg.client, room=room))
        except CommandError as exc:
            fail(msg, room, f"cannot join {room} now: {exc.message}")

    def reoffer_random_room(requester: str) -> None:
        """Nothing pending: a filled random room whose second player left before the game
        started has space again (the games watcher keeps it waiting for a player)."""
        for room in lobby.unconfirmed_random_rooms:
            state = _room_or_none(bot, room)
            if state is None:
                lobby.room_closed(room)
            elif state.settings.get("started") == "1":
                lobby.random_room_started(room)
            elif len(state.members) == 1 and requester not in state.members:
                lobby.random_room_has_space(room, waiting=state.members[0])
                return

    @bot.on("join-random-room")
    def join_random(msg: Message) -> None:
        if lobby.pending_random_room is None:
            reoffer_random_room(msg.client)
        decision = lobby.join_random(msg.client, msg.body)
        if isinstance(decision, LobbyError):
            fail(msg, str(msg.body.get("roomname", "")), decision.message)
            return
        if not decision.new_room:
            state = _room_or_none(bot, decision.room)
            if state is None or state.settings.get("started") == "1" or len(state.members) >= 2:
                lobby.room_closed(decision.room)  # gone or full meanwhile: open a fresh one
                decision = lobby.join_random(msg.client, msg.body)
                if isinstance(decision, LobbyError):
                    fail(msg, str(msg.body.get("roomname", "")), decision.message)
                    return
        if open_room(msg, decision):
            enter(msg, decision.room)

    return bot


def _create(room: str, settings: dict[str, str]) -> pb.CreateRoom:
    return pb.CreateRoom(room=room, watcher=GAMES_WATCHER, settings=settings)


def build_games(config: Config) -> Watcher:
    bot = Watcher(GAMES_WATCHER, config=config)
    words = word_set()
    timing = Timing(scale=config.time_scale)
    games: dict[str, Game] = {}
    timers: dict[tuple[str, int], Timer] = {}
    started: set[str] = set()  # rooms whose "started" setting is set (the lobby reads it)

    def game_for(room: str) -> Game | None:
        game = games.get(room)
        if game is None:
            state = _room_or_none(bot, room)
            if state is None or state.settings.get("game") != KIND:
                return None
            s = state.settings
            game = games[room] = Game(room, random_room=s.get("random") == "1", words=words,
                                      timing=timing, player_limit=int(s.get("player_limit", "3")))
            bot.rooms = sorted(games)  # claimed by name in any later hello (processor restart)
        return game

    def apply(room: str, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                target = effect.target or room
                if effect.to_room:
                    bot.send_room(room, effect.action, effect.body, sender=effect.sender,
                                  target=target)
                else:
                    bot.send_clients(effect.clients, effect.action, effect.body,
                                     sender=effect.sender, target=target,
                                     is_target_client=effect.is_target_client)
            elif isinstance(effect, Kick):
                bot.remove(effect.client, room)
            elif isinstance(effect, StartTimer):
                timers[(room, effect.token)] = bot.call_later(effect.delay, fire, room, effect.token)
            elif isinstance(effect, CancelTimer):
                timer = timers.pop((room, effect.token), None)
                if timer is not None:
                    timer.cancel()
            elif isinstance(effect, GameOver):
                bot.settings(room, started="1", over="1")
        game = games.get(room)
        if game is not None and game.started and room not in started:
            started.add(room)
            bot.settings(room, started="1")

    def fire(room: str, token: int) -> None:
        timers.pop((room, token), None)
        game = games.get(room)
        if game is not None:
            apply(room, game.on_timer(token, bot.now()))

    def close(room: str) -> None:
        """Forget the room's game (cancelling its timers) and delete the room."""
        games.pop(room, None)
        bot.rooms = sorted(games)
        started.discard(room)
        for key in [k for k in timers if k[0] == room]:
            timers.pop(key).cancel()
        bot.delete_room(room)

    @bot.on_event(EventKind.CLIENT_JOINED_ROOM)
    def joined(ev: Event) -> None:
        game = game_for(ev.room)
        if game is not None:
            apply(ev.room, game.join(ev.client, bot.now()))

    @bot.on_event(EventKind.CLIENT_LEFT_ROOM)
    def left(ev: Event) -> None:
        game = games.get(ev.room)
        if game is None:
            return
        if ev.client in game.players:  # it is out of the room already: no Kick to carry out
            effects = game.leave(ev.client, bot.now())
            apply(ev.room, [e for e in effects if not (isinstance(e, Kick) and e.client == ev.client)])
        if not game.players:
            close(ev.room)

    @bot.on("*")
    def frame(msg: Message) -> None:
        game = game_for(msg.room)
        if game is None:
            bot.error(msg, ErrorCode.UNKNOWN_ROOM)
            return
        effects = game.handle(msg.client, msg.action, msg.body, bot.now())
        apply(msg.room, effects)
        if msg.action == "leave-room" and Kick(msg.client) not in effects:
            bot.remove(msg.client, msg.room)  # not a player (e.g. refused): still leaves the room

    @bot.on_welcome
    def welcome(rooms: list[RoomState]) -> None:
        """After a restart the games' state is gone: end those games cleanly."""
        for state in rooms:
            if state.name in games:
                continue
            if state.members:
                bot.send_room(state.name, "room-bot-end-game",
                              {"message": "The game server restarted; this game was stopped.",
                               "client_list": [], "word_list": []}, sender=BOT)
            bot.delete_room(state.name)

    return bot
