"""What the lobby and games watchers tell each other about a game room.

They share nothing but the processor: the lobby creates each game room with
settings (the processor keeps a room's settings as string pairs and returns them
in snapshots and queries), the games watcher reads them to set up the room's
`Game` and marks the room started, which the lobby reads back for random
matchmaking. `GameRoomSettings` is that schema, in this one place; the table in
docs/words-battle.md ("Room settings") describes each key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from services.words_battle.lobby import DEFAULT_PLAYER_LIMIT

KIND: Final = "words-battle"  # the value of "game" in every room the lobby made

GAME: Final = "game"
RANDOM: Final = "random"
PLAYER_LIMIT: Final = "player_limit"
STARTED: Final = "started"


@dataclass(frozen=True)
class GameRoomSettings:
    """A Words Battle room's settings, typed.

    `random_room` and `player_limit` are written by the lobby when it creates the
    room; `started` by the games watcher once the room's game has begun.
    """

    random_room: bool
    player_limit: int = DEFAULT_PLAYER_LIMIT
    started: bool = False

    def to_settings(self) -> dict[str, str]:
        """The processor's form: string keys and values."""
        settings = {GAME: KIND, RANDOM: _flag(self.random_room), PLAYER_LIMIT: str(self.player_limit)}
        if self.started:
            settings[STARTED] = _flag(True)
        return settings

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> GameRoomSettings | None:
        """The settings of a room the lobby made; None for any other room."""
        if settings.get(GAME) != KIND:
            return None
        limit = settings.get(PLAYER_LIMIT, "")
        return cls(random_room=settings.get(RANDOM) == _flag(True),
                   player_limit=int(limit) if limit.isascii() and limit.isdecimal() else DEFAULT_PLAYER_LIMIT,
                   started=settings.get(STARTED) == _flag(True))

    @staticmethod
    def mark_started() -> dict[str, str]:
        """The settings update the games watcher sends once a room's game began."""
        return {STARTED: _flag(True)}


def _flag(value: bool) -> str:
    return "1" if value else "0"
