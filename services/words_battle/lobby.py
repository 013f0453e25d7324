"""Where Words Battle lobby requests go: friend rooms and random matchmaking.

The lobby watcher (the one claiming `mesh-global`) asks a `Lobby` what to do with
`join-room` and `join-random-room`, and carries out the answer: put the client in
the named room (creating its `Game` when `new_room`), or reply with an `error`
carrying the `LobbyError` code. Nothing here touches a socket or a clock.

Random matchmaking keeps at most one *pending* random room: the next
`join-random-room` goes there and fills it (random rooms hold two players);
otherwise the requester opens a new pending room under the name its client made up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from services.words_battle.game import MAX_PLAYERS, MIN_PLAYERS, RANDOM_ROOM_LIMIT

DEFAULT_PLAYER_LIMIT: Final = 3
ROOM_NAME: Final = re.compile(r"[A-Za-z0-9]{1,10}")


class LobbyErrorCode:
    """Stable codes of the lobby's `error` replies."""

    BAD_ROOM_NAME: Final = "bad-room-name"  # not 1-10 letters or digits
    BAD_PLAYER_LIMIT: Final = "bad-player-limit"  # not a whole number from 2 to 10
    ROOM_NAME_TAKEN: Final = "room-name-taken"  # the name belongs to a room of the other kind


@dataclass(frozen=True)
class JoinDecision:
    """Put the client in `room`; create its game first when `new_room`.

    `player_limit` is the limit the room was created with (for an existing friend
    room its game may have changed it since; the game's own limit is what counts).
    """

    room: str
    random_room: bool
    new_room: bool
    player_limit: int


@dataclass(frozen=True)
class LobbyError:
    code: str
    message: str


@dataclass
class _Pending:
    room: str
    opener: str | None  # who opened it: asking again must not fill it with oneself


class Lobby:
    """Decides where lobby requests go; pure.

    It only knows the rooms it handed out: the host reports their end with
    `room_closed` (so their names can be reused) and a random room that lost a
    player before its game started with `random_room_has_space`.
    """

    def __init__(self) -> None:
        self._friend_rooms: dict[str, int] = {}  # room -> player limit it was created with
        self._random_rooms: set[str] = set()
        self._pending: _Pending | None = None
        # Random rooms sent their second player but not yet known to have started: one
        # of them may have lost that player, and then has space again (see the host).
        self._filled: dict[str, None] = {}  # insertion-ordered: oldest first

    @property
    def pending_random_room(self) -> str | None:
        return self._pending.room if self._pending else None

    def is_random_room(self, room: str) -> bool:
        return room in self._random_rooms

    @property
    def unconfirmed_random_rooms(self) -> list[str]:
        """Filled random rooms whose game is not known to have started (oldest first): when
        no room is pending, the host asks whether one of these lost a player."""
        return list(self._filled)

    def join_friend(self, client: str, body: dict[str, Any]) -> JoinDecision | LobbyError:
        """`join-room`: join or create the friend room `roomname` (`setplayername` is not used:
        the player's name arrives with `set-client-name` in the room)."""
        body = body if isinstance(body, dict) else {}
        room = _room_name(body.get("roomname"))
        if isinstance(room, LobbyError):
            return room
        if room in self._random_rooms:
            return LobbyError(LobbyErrorCode.ROOM_NAME_TAKEN,
                              f"{room} is a random match room; pick another name")
        if room in self._friend_rooms:
            return JoinDecision(room, random_room=False, new_room=False,
                                player_limit=self._friend_rooms[room])
        limit = _player_limit(body.get("playerlimit", DEFAULT_PLAYER_LIMIT))
        if isinstance(limit, LobbyError):
            return limit
        self._friend_rooms[room] = limit
        return JoinDecision(room, random_room=False, new_room=True, player_limit=limit)

    def join_random(self, client: str, body: dict[str, Any]) -> JoinDecision | LobbyError:
        """`join-random-room`: fill the pending random room, or open one named `roomname`."""
        body = body if isinstance(body, dict) else {}
        room = _room_name(body.get("roomname"))
        if isinstance(room, LobbyError):
            return room
        pending = self._pending
        if pending is not None:
            # The opener asking again stays where it is, still waiting for an opponent.
            if pending.opener != client:
                self._pending = None  # full now: two players
                self._filled[pending.room] = None
            return JoinDecision(pending.room, random_room=True, new_room=False,
                                player_limit=RANDOM_ROOM_LIMIT)
        if room in self._friend_rooms or room in self._random_rooms:
            return LobbyError(LobbyErrorCode.ROOM_NAME_TAKEN, f"{room} is already in use; try again")
        self._random_rooms.add(room)
        self._pending = _Pending(room, client)
        return JoinDecision(room, random_room=True, new_room=True, player_limit=RANDOM_ROOM_LIMIT)

    def random_room_has_space(self, room: str, waiting: str | None = None) -> bool:
        """A random room lost a player before its game started: offer it to the next requester
        if no other room is pending (`waiting`, the player still in it, is not matched with
        itself). Returns whether `room` is now the pending room."""
        if room not in self._random_rooms:
            return False
        if self._pending is None:
            self._pending = _Pending(room, waiting)
            self._filled.pop(room, None)
        return self._pending.room == room

    def random_room_started(self, room: str) -> None:
        """Its game started: it will not have space again (its name stays taken)."""
        self._filled.pop(room, None)

    def room_closed(self, room: str) -> None:
        """Forget the room (its game ended or it emptied); its name is free again."""
        self._friend_rooms.pop(room, None)
        self._random_rooms.discard(room)
        self._filled.pop(room, None)
        if self._pending is not None and self._pending.room == room:
            self._pending = None


def _room_name(value: object) -> str | LobbyError:
    if isinstance(value, str) and ROOM_NAME.fullmatch(value):
        return value
    return LobbyError(LobbyErrorCode.BAD_ROOM_NAME, "room names are 1 to 10 letters or digits")


def _player_limit(value: object) -> int | LobbyError:
    # The client sends the number 3; accept its string form as well, never a bool.
    limit: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        limit = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal() and len(value) <= 6:
        limit = int(value.strip())
    if limit is None or not MIN_PLAYERS <= limit <= MAX_PLAYERS:
        return LobbyError(LobbyErrorCode.BAD_PLAYER_LIMIT,
                          f"player limit must be a whole number from {MIN_PLAYERS} to {MAX_PLAYERS}")
    return limit
