"""The schema of the settings the Words Battle lobby and games watchers share."""

from __future__ import annotations

import pytest

from services.words_battle.room_settings import KIND, GameRoomSettings


@pytest.mark.parametrize("settings", [
    GameRoomSettings(random_room=True, player_limit=2),
    GameRoomSettings(random_room=False, player_limit=10),
    GameRoomSettings(random_room=False, player_limit=3, started=True),
])
def test_round_trip(settings: GameRoomSettings) -> None:
    wire = settings.to_settings()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in wire.items())
    assert GameRoomSettings.from_settings(wire) == settings


def test_the_keys_on_the_wire() -> None:
    assert GameRoomSettings(random_room=True, player_limit=2).to_settings() == {
        "game": KIND, "random": "1", "player_limit": "2"}
    assert GameRoomSettings(random_room=False, player_limit=5, started=True).to_settings() == {
        "game": KIND, "random": "0", "player_limit": "5", "started": "1"}


def test_marking_started_is_a_merge_the_schema_reads_back() -> None:
    created = GameRoomSettings(random_room=True, player_limit=2).to_settings()
    merged = {**created, **GameRoomSettings.mark_started()}  # the processor merges settings
    assert GameRoomSettings.from_settings(merged) == GameRoomSettings(True, 2, started=True)


@pytest.mark.parametrize("foreign", [{}, {"game": "chess"}, {"random": "1", "player_limit": "2"}])
def test_rooms_the_lobby_did_not_make_have_none(foreign: dict[str, str]) -> None:
    assert GameRoomSettings.from_settings(foreign) is None


@pytest.mark.parametrize("limit", ["", "x", "-1", "²"])
def test_an_unreadable_player_limit_is_the_default(limit: str) -> None:
    settings = GameRoomSettings.from_settings({"game": KIND, "player_limit": limit})
    assert settings == GameRoomSettings(random_room=False, player_limit=3)
