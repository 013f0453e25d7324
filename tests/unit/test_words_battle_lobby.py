"""Words Battle lobby: friend rooms and random matchmaking, without any socket."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.words_battle.lobby import JoinDecision, Lobby, LobbyError, LobbyErrorCode


def friend(lobby: Lobby, client: str, room: Any, **extra: Any) -> JoinDecision | LobbyError:
    return lobby.join_friend(client, {"roomname": room, "setplayername": "Alice", **extra})


def test_first_friend_join_creates_the_room_with_the_default_limit() -> None:
    lobby = Lobby()
    assert lobby.join_friend("c1", {"roomname": "fun1"}) == JoinDecision("fun1", random_room=False,
                                                                         new_room=True, player_limit=3)
    assert friend(lobby, "c2", "fun1", playerlimit=5) == JoinDecision("fun1", random_room=False,
                                                                      new_room=False, player_limit=3)


@pytest.mark.parametrize("limit", [2, 3, 10, "4", " 7 "])
def test_friend_room_takes_the_requested_limit(limit: Any) -> None:
    decision = friend(Lobby(), "c1", "Room42", playerlimit=limit)
    assert isinstance(decision, JoinDecision) and decision.player_limit == int(limit)


@pytest.mark.parametrize("limit", [1, 11, 0, -3, "three", "", None, True, 3.5, [3], {"n": 3}, "9" * 50])
def test_friend_room_refuses_a_bad_limit(limit: Any) -> None:
    lobby = Lobby()
    assert friend(lobby, "c1", "fun1", playerlimit=limit) == LobbyError(
        LobbyErrorCode.BAD_PLAYER_LIMIT, "player limit must be a whole number from 2 to 10")
    # Nothing was created: a good request still creates the room.
    assert isinstance(d := friend(lobby, "c1", "fun1"), JoinDecision) and d.new_room


@pytest.mark.parametrize("room", ["", "a" * 11, "mesh-global", "two words", "émile", "a_b", None, 7,
                                  ["fun"], "fun\n"])
def test_room_names_are_1_to_10_letters_or_digits(room: Any) -> None:
    lobby = Lobby()
    for decision in (friend(lobby, "c1", room), lobby.join_random("c1", {"roomname": room})):
        assert isinstance(decision, LobbyError) and decision.code == LobbyErrorCode.BAD_ROOM_NAME
    assert lobby.pending_random_room is None


@pytest.mark.parametrize("body", [None, [], "fun1", 3, {}])
def test_malformed_bodies_are_errors_not_crashes(body: Any) -> None:
    lobby = Lobby()
    assert isinstance(lobby.join_friend("c1", body), LobbyError)
    assert isinstance(lobby.join_random("c1", body), LobbyError)


def test_random_matchmaking_pairs_two_clients() -> None:
    lobby = Lobby()
    first = lobby.join_random("c1", {"roomname": "abcDEF1234"})
    assert first == JoinDecision("abcDEF1234", random_room=True, new_room=True, player_limit=2)
    assert lobby.pending_random_room == "abcDEF1234"
    second = lobby.join_random("c2", {"roomname": "zzzzzzzzzz"})
    assert second == JoinDecision("abcDEF1234", random_room=True, new_room=False, player_limit=2)
    assert lobby.pending_random_room is None  # full now
    third = lobby.join_random("c3", {"roomname": "zzzzzzzzzz"})
    assert third == JoinDecision("zzzzzzzzzz", random_room=True, new_room=True, player_limit=2)
    assert lobby.is_random_room("abcDEF1234") and lobby.is_random_room("zzzzzzzzzz")


def test_opener_asking_again_keeps_waiting_in_its_room() -> None:
    lobby = Lobby()
    lobby.join_random("c1", {"roomname": "room1"})
    again = lobby.join_random("c1", {"roomname": "room2"})
    assert again == JoinDecision("room1", random_room=True, new_room=False, player_limit=2)
    assert lobby.pending_random_room == "room1"  # still waiting for a real opponent
    assert isinstance(d := lobby.join_random("c2", {"roomname": "room3"}), JoinDecision) and d.room == "room1"


def test_friend_name_of_a_random_room_is_taken() -> None:
    lobby = Lobby()
    lobby.join_random("c1", {"roomname": "shared"})
    decision = friend(lobby, "c2", "shared")
    assert isinstance(decision, LobbyError) and decision.code == LobbyErrorCode.ROOM_NAME_TAKEN
    lobby.join_random("c3", {"roomname": "other"})  # fills "shared": still a random room
    assert isinstance(friend(lobby, "c2", "shared"), LobbyError)


def test_random_name_colliding_with_a_room_is_an_error_when_nothing_is_pending() -> None:
    lobby = Lobby()
    friend(lobby, "c1", "party")
    decision = lobby.join_random("c2", {"roomname": "party"})
    assert isinstance(decision, LobbyError) and decision.code == LobbyErrorCode.ROOM_NAME_TAKEN
    assert lobby.pending_random_room is None
    lobby.join_random("c3", {"roomname": "r1"})
    lobby.join_random("c4", {"roomname": "r1"})  # fills r1
    assert isinstance(d := lobby.join_random("c5", {"roomname": "r1"}), LobbyError)
    assert d.code == LobbyErrorCode.ROOM_NAME_TAKEN


def test_random_name_colliding_with_a_room_goes_to_the_pending_one() -> None:
    lobby = Lobby()
    friend(lobby, "c1", "party")
    lobby.join_random("c2", {"roomname": "waiting"})
    assert lobby.join_random("c3", {"roomname": "party"}) == JoinDecision(
        "waiting", random_room=True, new_room=False, player_limit=2)


def test_closed_rooms_are_forgotten_and_their_names_reusable() -> None:
    lobby = Lobby()
    friend(lobby, "c1", "fun")
    lobby.room_closed("fun")
    assert isinstance(d := friend(lobby, "c2", "fun", playerlimit=4), JoinDecision)
    assert d.new_room and d.player_limit == 4

    lobby.join_random("c3", {"roomname": "rnd"})
    lobby.room_closed("rnd")  # the pending room emptied
    assert lobby.pending_random_room is None
    assert not lobby.is_random_room("rnd")
    assert isinstance(d := friend(lobby, "c4", "rnd"), JoinDecision) and d.new_room
    lobby.room_closed("never-heard-of")  # harmless


def test_random_room_that_lost_a_player_is_offered_again() -> None:
    lobby = Lobby()
    lobby.join_random("c1", {"roomname": "r1"})
    lobby.join_random("c2", {"roomname": "xx"})  # r1 full
    assert lobby.random_room_has_space("r1")
    assert lobby.pending_random_room == "r1"
    assert isinstance(d := lobby.join_random("c3", {"roomname": "r3"}), JoinDecision) and d.room == "r1"
    assert not lobby.random_room_has_space("unknown")


def test_filled_random_rooms_are_listed_until_started_closed_or_reoffered() -> None:
    lobby = Lobby()
    for n in (1, 2, 3):
        lobby.join_random(f"a{n}", {"roomname": f"r{n}"})
        lobby.join_random(f"b{n}", {"roomname": "xx"})  # r{n} full
    assert lobby.unconfirmed_random_rooms == ["r1", "r2", "r3"]  # oldest first
    lobby.random_room_started("r1")
    lobby.room_closed("r2")
    assert lobby.unconfirmed_random_rooms == ["r3"]
    assert lobby.is_random_room("r1")  # a started room's name stays taken
    # r3 lost b3: offered again, but not to a3, who is still waiting in it
    assert lobby.random_room_has_space("r3", waiting="a3")
    assert lobby.unconfirmed_random_rooms == []
    assert isinstance(d := lobby.join_random("a3", {"roomname": "r9"}), JoinDecision) and d.room == "r3"
    assert lobby.pending_random_room == "r3"  # a3 asking again does not fill it
    assert isinstance(d := lobby.join_random("c", {"roomname": "r9"}), JoinDecision) and d.room == "r3"
    assert lobby.pending_random_room is None and lobby.unconfirmed_random_rooms == ["r3"]


def test_only_one_random_room_is_pending_at_a_time() -> None:
    lobby = Lobby()
    lobby.join_random("c1", {"roomname": "r1"})
    lobby.join_random("c2", {"roomname": "xx"})  # r1 full
    lobby.join_random("c3", {"roomname": "r3"})  # r3 pending
    assert not lobby.random_room_has_space("r1")
    assert lobby.pending_random_room == "r3"


names = st.sampled_from(["r1", "r2", "r3", "fun", "bad name", ""])
clients = st.sampled_from(["c1", "c2", "c3", "c4"])
ops = st.one_of(
    st.tuples(st.just("friend"), clients, names),
    st.tuples(st.just("random"), clients, names),
    st.tuples(st.just("closed"), clients, names),
    st.tuples(st.just("space"), clients, names),
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(ops, max_size=40))
def test_matchmaking_invariants(script: list[tuple[str, str, str]]) -> None:
    """A room is a friend room or a random room, never both; random joins fill at most two."""
    lobby = Lobby()
    kinds: dict[str, str] = {}  # room -> "friend" | "random" while the lobby knows it
    seats: dict[str, set[str]] = {}  # random room -> clients sent there
    for op, client, room in script:
        if op == "closed":
            lobby.room_closed(room)
            kinds.pop(room, None)
            seats.pop(room, None)
            continue
        if op == "space":
            if lobby.random_room_has_space(room):
                assert kinds.get(room) == "random"
                seats[room] = set()  # the host says the leaver is gone; count afresh
            continue
        decision = (lobby.join_friend(client, {"roomname": room}) if op == "friend"
                    else lobby.join_random(client, {"roomname": room}))
        if isinstance(decision, LobbyError):
            continue
        kind = "random" if decision.random_room else "friend"
        assert decision.random_room == (op == "random")
        if decision.new_room:
            assert decision.room == room and room not in kinds, "only unknown names become new rooms"
        else:
            assert decision.room in kinds
        assert kinds.setdefault(decision.room, kind) == kind, "a room never changes kind"
        if kind == "random":
            seats.setdefault(decision.room, set()).add(client)
            assert len(seats[decision.room]) <= 2
            assert decision.player_limit == 2
        pending = lobby.pending_random_room
        assert pending is None or kinds.get(pending) == "random"
