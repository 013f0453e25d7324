"""The routing core, directly: no sockets, no processes, no clock.

Client IDs are '<gateway>.<n>' as the gateways make them; `RecordingOutbox`
resolves room deliveries to the clients a gateway would hand them to, so the
tests read like what each client sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, get_args

import pytest

from meshstream_zmq import LOBBY, SERVER_SENDER, protocol
from meshstream_zmq.commands import (
    Command,
    CreateRoom,
    DeleteRoom,
    Disconnect,
    Join,
    Query,
    QueryWhat,
    Remove,
    SendClients,
    SendRoom,
    Settings,
)
from meshstream_zmq.core import (
    MAX_LIST_PAGE,
    MAX_ROOM_NAME,
    PAGE_BODY,
    Delivery,
    EventKind,
    Mesh,
    RoomView,
    valid_room_name,
)
from meshstream_zmq.errors import CloseCode, ErrorCode

from .outbox import RecordingOutbox, decode, new_mesh, send

A, A2, A3 = "g1.1", "g1.2", "g1.3"  # gateway g1
B, B2 = "g2.1", "g2.2"  # gateway g2
C = "g3.1"  # gateway g3
W = "w-1"  # a watcher ID

Make = Callable[..., tuple[Mesh, RecordingOutbox]]


@pytest.fixture
def make() -> Iterator[Make]:
    """A mesh with these clients connected (at t=0) and a clean outbox; invariants checked at the end."""
    meshes: list[Mesh] = []

    def factory(*clients: str, **kwargs: Any) -> tuple[Mesh, RecordingOutbox]:
        mesh, out = new_mesh(**kwargs)
        for client in clients:
            mesh.client_connected(client, 0.0)
        out.clear()
        meshes.append(mesh)
        return mesh, out

    yield factory
    for mesh in meshes:
        mesh.check()




def join(mesh: Mesh, client: str, room: str) -> None:
    send(mesh, client, "join-room", room)


def members(mesh: Mesh, room: str) -> list[str]:
    return list(mesh.rooms[room].members)


def only(messages: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(messages) == 1, messages
    return messages[0]


def assert_error(out: RecordingOutbox, client: str, code: ErrorCode, action: str, target: str,
                 rid: Any = None) -> None:
    """Exactly one message reached the sender: the error, shaped as documented."""
    msg = only(out.inbox(client))
    expected: dict[str, Any] = {
        "action": "error", "target": target, "sender": SERVER_SENDER,
        "message_body": {"code": code.value, "message": code.message, "action": action},
    }
    if rid is not None:
        expected["id"] = rid
    assert msg == expected


# ====================================================================== connect


def test_connect_puts_the_client_in_the_lobby_without_notices(make: Make) -> None:
    mesh, out = make()
    mesh.client_connected(A, 1.0)
    mesh.client_connected(B, 1.0)
    assert members(mesh, LOBBY) == [A, B]
    assert mesh.clients[A].rooms == {LOBBY}
    assert out.deliveries() == [] and out.of("membership") == []
    assert out.events() == [(EventKind.CLIENT_CONNECTED, A, "", ""),
                            (EventKind.CLIENT_CONNECTED, B, "", "")]
    assert mesh.knows_gateway("g1") and mesh.knows_gateway("g2")


def test_connect_twice_is_one_connection(make: Make) -> None:
    mesh, out = make(A)
    mesh.client_connected(A, 1.0)
    assert members(mesh, LOBBY) == [A]
    assert out.calls == []


# ====================================================================== join


def test_first_join_creates_the_room_with_the_joiner_as_maker(make: Make) -> None:
    mesh, out = make(A)
    send(mesh, A, "join-room", "r", rid=1)
    assert members(mesh, "r") == [A]
    assert mesh.rooms["r"].maker == A
    assert mesh.clients[A].rooms == {LOBBY, "r"}
    assert out.of("membership") == [("membership", "g1", A, "r", True)]
    assert out.events() == [(EventKind.ROOM_CREATED, "", "r", ""),
                            (EventKind.CLIENT_JOINED_ROOM, A, "r", "")]
    assert only(out.inbox(A)) == {"action": "client-joined-room", "target": "r", "sender": A,
                                  "message_body": {"client": A, "room": "r"}, "id": 1}


def test_join_with_the_seed_form(make: Make) -> None:
    mesh, out = make(A)
    send(mesh, A, "join-room", LOBBY, {"roomname": "r", "playerlimit": 3}, rid="j1")
    assert members(mesh, "r") == [A]
    msg = only(out.inbox(A))
    assert (msg["action"], msg["target"], msg["sender"], msg["id"]) == ("client-joined-room", "r", A, "j1")


def test_join_notice_reaches_the_joiner_with_id_and_members_without(make: Make) -> None:
    mesh, out = make(A, A2, B, C)
    join(mesh, A, "r")
    join(mesh, A2, "r")
    out.clear()
    send(mesh, B, "join-room", "r", rid=7)
    notice = {"action": "client-joined-room", "target": "r", "sender": B,
              "message_body": {"client": B, "room": "r"}}
    assert only(out.inbox(B)) == {**notice, "id": 7}
    assert only(out.inbox(A)) == notice
    assert only(out.inbox(A2)) == notice
    assert out.inbox(C) == []  # not a member
    assert mesh.rooms["r"].maker == A  # later joiners do not take over
    assert out.event_kinds() == [EventKind.CLIENT_JOINED_ROOM]


def test_join_notice_is_one_delivery_per_gateway(make: Make) -> None:
    mesh, out = make(A, A2, A3, B, B2, C)
    for client in (A, A2, B, B2):
        join(mesh, client, "r")
    out.clear()
    join(mesh, A3, "r")
    room_deliveries = [d for d in out.deliveries() if d[4] == "r"]
    assert sorted(d[1] for d in room_deliveries) == ["g1", "g2"]
    assert all(d[3] == () and d[5] == (A3,) for d in room_deliveries)
    direct = [d for d in out.deliveries() if d[3]]
    assert [(d[1], d[3]) for d in direct] == [("g1", (A3,))]


def test_a_64_character_room_name_is_accepted(make: Make) -> None:
    mesh, out = make(A)
    name = "x" * MAX_ROOM_NAME
    join(mesh, A, name)
    assert members(mesh, name) == [A]


@pytest.mark.parametrize(("target", "body", "code", "echoed_target"), [
    ("x" * 65, None, ErrorCode.BAD_ROOM_NAME, "x" * 65),
    (LOBBY, {"roomname": ""}, ErrorCode.BAD_ROOM_NAME, LOBBY),
    (LOBBY, {"roomname": "y" * 65}, ErrorCode.BAD_ROOM_NAME, LOBBY),
    (LOBBY, {"roomname": 42}, ErrorCode.BAD_ROOM_NAME, LOBBY),
    (LOBBY, {"roomname": ["r"]}, ErrorCode.BAD_ROOM_NAME, LOBBY),
    (LOBBY, None, ErrorCode.ALREADY_MEMBER, LOBBY),
    (LOBBY, {"roomname": LOBBY}, ErrorCode.ALREADY_MEMBER, LOBBY),
    ("", None, ErrorCode.MISSING_TARGET, ""),
], ids=["long-target", "empty-roomname", "long-roomname", "number-roomname", "list-roomname",
        "lobby", "lobby-roomname", "no-target"])
def test_join_errors(make: Make, target: str, body: dict[str, Any] | None, code: ErrorCode,
                     echoed_target: str) -> None:
    mesh, out = make(A)
    send(mesh, A, "join-room", target, body, rid=3)
    assert_error(out, A, code, "join-room", echoed_target, rid=3)
    assert set(mesh.rooms) == {LOBBY}
    assert out.events() == [] and out.of("membership") == []


def test_joining_a_room_twice_is_already_member(make: Make) -> None:
    mesh, out = make(A)
    join(mesh, A, "r")
    out.clear()
    send(mesh, A, "join-room", "r", rid="again")
    assert_error(out, A, ErrorCode.ALREADY_MEMBER, "join-room", "r", rid="again")
    send(mesh, A, "join-room", LOBBY, {"roomname": "r"})
    assert out.errors(A) == ["already-member", "already-member"]
    assert members(mesh, "r") == [A]
    assert out.events() == []


# ====================================================================== relay


def test_relay_reaches_every_member_including_the_sender_with_sender_stamped(make: Make) -> None:
    mesh, out = make(A, B, C)
    join(mesh, A, "r")
    join(mesh, B, "r")
    out.clear()
    send(mesh, B, "send-message", "r", {"text": "hi", "sender": "someone-else"})
    expected = {"action": "send-message", "target": "r", "sender": B,
                "message_body": {"text": "hi", "sender": "someone-else"}}
    assert only(out.inbox(A)) == expected
    assert only(out.inbox(B)) == expected
    assert out.inbox(C) == []
    assert out.events() == [] and out.of("membership") == []


def test_relay_is_one_delivery_per_gateway_not_per_client(make: Make) -> None:
    mesh, out = make(A, A2, A3, B, B2, C)
    for client in (A, A2, A3, B, B2):
        join(mesh, client, "r")
    out.clear()
    send(mesh, A, "move", "r", {"n": 1})
    assert [(d[1], d[3], d[4], d[5]) for d in out.deliveries()] == [
        ("g1", (), "r", ()), ("g2", (), "r", ())]
    frames = {d[2] for d in out.deliveries()}
    assert len(frames) == 1  # encoded once for every gateway
    for client in (A, A2, A3, B, B2):
        assert only(out.inbox(client))["message_body"] == {"n": 1}
    assert out.inbox(C) == []


def test_relay_without_body_sends_an_empty_object(make: Make) -> None:
    mesh, out = make(A)
    join(mesh, A, "r")
    out.clear()
    send(mesh, A, "ping", "r")
    assert only(out.inbox(A))["message_body"] == {}


@pytest.mark.parametrize(("setup", "target", "code"), [
    ([], "nowhere", ErrorCode.UNKNOWN_ROOM),
    ([(B, "r")], "r", ErrorCode.NOT_MEMBER),
    ([], LOBBY, ErrorCode.LOBBY_READONLY),
    ([], "", ErrorCode.MISSING_TARGET),
], ids=["unknown-room", "not-member", "lobby-readonly", "missing-target"])
def test_relay_errors(make: Make, setup: list[tuple[str, str]], target: str, code: ErrorCode) -> None:
    mesh, out = make(A, B)
    for client, room in setup:
        join(mesh, client, room)
    out.clear()
    send(mesh, A, "send-message", target, {"text": "x"}, rid=12)
    assert_error(out, A, code, "send-message", target, rid=12)
    assert out.inbox(B) == []
    assert len(out.deliveries()) == 1


# ====================================================================== direct messages


def test_direct_message_reaches_exactly_one_client(make: Make) -> None:
    mesh, out = make(A, A2, B, B2)
    for client in (A, A2, B, B2):
        join(mesh, client, "r")
    out.clear()
    send(mesh, A, "whisper", B, {"text": "psst"}, to_client=True)
    assert [(d[1], d[3], d[4]) for d in out.deliveries()] == [("g2", (B,), "")]
    assert only(out.inbox(B)) == {"action": "whisper", "target": B, "sender": A, "IsTargetClient": True,
                                  "message_body": {"text": "psst"}}
    for other in (A, A2, B2):
        assert out.inbox(other) == []


def test_direct_message_needs_no_shared_room(make: Make) -> None:
    mesh, out = make(A, C)
    send(mesh, C, "whisper", A, to_client=True)
    assert only(out.inbox(A))["sender"] == C


def test_direct_message_to_an_unknown_client(make: Make) -> None:
    mesh, out = make(A)
    join(mesh, A, "r")
    out.clear()
    send(mesh, A, "whisper", "g9.9", to_client=True, rid=4)
    assert_error(out, A, ErrorCode.UNKNOWN_CLIENT, "whisper", "g9.9", rid=4)
    send(mesh, A, "whisper", "r", to_client=True)  # a room name is not a client
    assert out.errors(A) == ["unknown-client", "unknown-client"]


# ====================================================================== queries


def test_list_rooms_counts_members_and_echoes_the_id(make: Make) -> None:
    mesh, out = make(A, B, C)
    join(mesh, A, "r")
    join(mesh, B, "r")
    join(mesh, C, "s")
    out.clear()
    send(mesh, C, "list-rooms", rid="q")
    assert only(out.inbox(C)) == {
        "action": "room-list", "target": "", "sender": SERVER_SENDER, "id": "q",
        "message_body": {"rooms": [{"name": LOBBY, "members": 3}, {"name": "r", "members": 2},
                                   {"name": "s", "members": 1}], "next": None}}
    assert out.inbox(A) == [] and out.inbox(B) == []


def test_list_members_by_client_id_for_anyone(make: Make) -> None:
    mesh, out = make(A, B, C)
    join(mesh, B, "r")
    join(mesh, A, "r")
    out.clear()
    send(mesh, C, "list-members", "r", rid=99)  # presence: no membership needed
    assert only(out.inbox(C)) == {"action": "member-list", "target": "r", "sender": SERVER_SENDER,
                                  "id": 99, "message_body": {"members": sorted([A, B]), "next": None}}


def test_list_members_is_paged_and_stable_while_members_come_and_go(make: Make) -> None:
    """No reply is unbounded: at most 100 members a page, a cursor for the next, and a
    member leaving between pages neither hides nor repeats anyone still there."""
    clients = [f"g2.{i:03d}" for i in range(MAX_LIST_PAGE + 30)]
    mesh, out = make(A, *clients)
    for c in clients:
        join(mesh, c, "big")
    out.clear()
    send(mesh, A, "list-members", "big", rid=1)
    first = only(out.inbox(A))["message_body"]
    assert first["members"] == clients[:MAX_LIST_PAGE] and first["next"] == clients[MAX_LIST_PAGE - 1]
    send(mesh, clients[0], "leave-room", "big")
    out.clear()
    send(mesh, A, "list-members", "big", body={"after": first["next"], "limit": 20}, rid=2)
    second = only(out.inbox(A))["message_body"]
    assert second["members"] == clients[MAX_LIST_PAGE:MAX_LIST_PAGE + 20]
    out.clear()
    send(mesh, A, "list-members", "big", body={"after": second["next"]}, rid=3)
    last = only(out.inbox(A))["message_body"]
    assert last == {"members": clients[MAX_LIST_PAGE + 20:], "next": None}


def test_list_members_of_the_lobby_is_forbidden(make: Make) -> None:
    """Issue 9 changed this: the lobby holds every client, so listing it enumerated them all."""
    mesh, out = make(A, B, C)
    send(mesh, C, "list-members", LOBBY, rid=1)
    assert_error(out, C, ErrorCode.FORBIDDEN, "list-members", LOBBY, rid=1)


def test_list_members_of_an_unknown_room(make: Make) -> None:
    mesh, out = make(A)
    send(mesh, A, "list-members", "nope", rid=5)
    assert_error(out, A, ErrorCode.UNKNOWN_ROOM, "list-members", "nope", rid=5)


# ====================================================================== leave


def test_leave_notifies_and_the_last_leave_deletes_the_room(make: Make) -> None:
    mesh, out = make(A, B)
    join(mesh, A, "r")
    join(mesh, B, "r")
    out.clear()
    send(mesh, A, "leave-room", "r", rid=9)
    notice = {"action": "client-left-room", "target": "r", "sender": A,
              "message_body": {"client": A, "room": "r"}}
    assert only(out.inbox(A)) == {**notice, "id": 9}
    assert only(out.inbox(B)) == notice
    assert out.of("membership") == [("membership", "g1", A, "r", False)]
    assert out.events() == [(EventKind.CLIENT_LEFT_ROOM, A, "r", "")]
    assert members(mesh, "r") == [B] and mesh.clients[A].rooms == {LOBBY}
    out.clear()
    send(mesh, B, "leave-room", "r")
    assert "r" not in mesh.rooms
    assert out.events() == [(EventKind.CLIENT_LEFT_ROOM, B, "r", ""), (EventKind.ROOM_DELETED, "", "r", "")]
    assert only(out.inbox(B))["action"] == "client-left-room"


def test_a_deleted_room_is_created_afresh_on_the_next_join(make: Make) -> None:
    mesh, out = make(A, B)
    join(mesh, A, "r")
    send(mesh, A, "leave-room", "r")
    out.clear()
    join(mesh, B, "r")
    assert mesh.rooms["r"].maker == B
    assert out.event_kinds() == [EventKind.ROOM_CREATED, EventKind.CLIENT_JOINED_ROOM]


def test_the_maker_role_passes_to_the_oldest_remaining_member(make: Make) -> None:
    mesh, _ = make(A, B, C, A2)
    for client in (A, B, C, A2):
        join(mesh, client, "r")
    send(mesh, C, "leave-room", "r")
    assert mesh.rooms["r"].maker == A  # a non-maker leaving changes nothing
    send(mesh, A, "leave-room", "r")
    assert mesh.rooms["r"].maker == B
    mesh.client_disconnected(B)
    assert mesh.rooms["r"].maker == A2


@pytest.mark.parametrize(("setup", "target", "code"), [
    ([], LOBBY, ErrorCode.CANNOT_LEAVE_LOBBY),
    ([], "nowhere", ErrorCode.UNKNOWN_ROOM),
    ([(B, "r")], "r", ErrorCode.NOT_MEMBER),
    ([], "", ErrorCode.MISSING_TARGET),
], ids=["lobby", "unknown-room", "not-member", "missing-target"])
def test_leave_errors(make: Make, setup: list[tuple[str, str]], target: str, code: ErrorCode) -> None:
    mesh, out = make(A, B)
    for client, room in setup:
        join(mesh, client, room)
    out.clear()
    send(mesh, A, "leave-room", target, rid=1)
    assert_error(out, A, code, "leave-room", target, rid=1)
    assert out.events() == [] and out.of("membership") == []


# ====================================================================== the lobby


@pytest.mark.parametrize("action", ["send-message", "chat", "client-joined-room", "error"])
def test_the_lobby_is_read_only(make: Make, action: str) -> None:
    mesh, out = make(A, B)
    send(mesh, A, action, LOBBY, {"text": "everyone!"}, rid="l")
    assert_error(out, A, ErrorCode.LOBBY_READONLY, action, LOBBY, rid="l")
    assert out.inbox(B) == []


def test_the_lobby_outlives_its_last_client(make: Make) -> None:
    mesh, out = make(A)
    mesh.client_disconnected(A)
    assert LOBBY in mesh.rooms and members(mesh, LOBBY) == []
    assert EventKind.ROOM_DELETED not in out.event_kinds()
    mesh.client_connected(B, 1.0)
    assert members(mesh, LOBBY) == [B]


# ====================================================================== every error code


def _unknown_sender(mesh: Mesh) -> None:
    send(mesh, "g1.77", "list-rooms", rid=1)


def _watcher_unavailable(mesh: Mesh) -> None:
    mesh.watcher_hello(W, "game", ["game"], [], 0.0)
    mesh.watcher_gone(W)
    send(mesh, A, "play", "game", rid=1)


def _watcher_restarted(mesh: Mesh) -> None:
    mesh.watcher_hello(W, "game", ["game"], [], 0.0)
    send(mesh, A, "play", "game", rid=1)
    mesh.watcher_gone(W)


def _not_member(mesh: Mesh) -> None:
    join(mesh, B, "r")
    send(mesh, A, "send-message", "r", rid=1)


def _already_member(mesh: Mesh) -> None:
    join(mesh, A, "r")
    send(mesh, A, "join-room", "r", rid=1)


def _too_many_rooms(mesh: Mesh) -> None:
    mesh.max_rooms_per_client = 1
    join(mesh, A, "r")
    send(mesh, A, "join-room", "s", rid=1)


ERROR_CASES: dict[ErrorCode, tuple[str, Callable[[Mesh], None]]] = {
    ErrorCode.FORBIDDEN: (A, lambda m: send(m, A, "list-members", LOBBY, rid=1)),
    ErrorCode.TOO_MANY_ROOMS: (A, _too_many_rooms),
    ErrorCode.MISSING_TARGET: (A, lambda m: send(m, A, "send-message", "", rid=1)),
    ErrorCode.BAD_ROOM_NAME: (A, lambda m: send(m, A, "join-room", "z" * 65, rid=1)),
    ErrorCode.UNKNOWN_ROOM: (A, lambda m: send(m, A, "send-message", "nope", rid=1)),
    ErrorCode.NOT_MEMBER: (A, _not_member),
    ErrorCode.ALREADY_MEMBER: (A, _already_member),
    ErrorCode.UNKNOWN_CLIENT: (A, lambda m: send(m, A, "dm", "g1.99", to_client=True, rid=1)),
    ErrorCode.LOBBY_READONLY: (A, lambda m: send(m, A, "send-message", LOBBY, rid=1)),
    ErrorCode.CANNOT_LEAVE_LOBBY: (A, lambda m: send(m, A, "leave-room", LOBBY, rid=1)),
    ErrorCode.UNKNOWN_SENDER: ("g1.77", _unknown_sender),
    ErrorCode.WATCHER_UNAVAILABLE: (A, _watcher_unavailable),
    ErrorCode.WATCHER_RESTARTED: (A, _watcher_restarted),
}


@pytest.mark.parametrize("code", list(ERROR_CASES), ids=[c.value for c in ERROR_CASES])
def test_every_routing_error_reaches_only_the_sender_with_its_id(make: Make, code: ErrorCode) -> None:
    mesh, out = make(A, B)
    sender, scenario = ERROR_CASES[code]
    scenario(mesh)
    errors = [m for m in out.inbox(sender) if m["action"] == "error"]
    assert len(errors) == 1, out.inbox(sender)
    assert errors[0]["message_body"]["code"] == code.value
    assert errors[0]["message_body"]["message"] == code.message
    assert errors[0]["id"] == 1
    assert errors[0]["sender"] == SERVER_SENDER
    assert all(m["action"] != "error" for m in out.inbox(B))


def test_the_error_table_covers_every_routing_code() -> None:
    routing = {ErrorCode.MISSING_TARGET, ErrorCode.BAD_ROOM_NAME, ErrorCode.UNKNOWN_ROOM,
               ErrorCode.NOT_MEMBER, ErrorCode.ALREADY_MEMBER, ErrorCode.UNKNOWN_CLIENT,
               ErrorCode.LOBBY_READONLY, ErrorCode.CANNOT_LEAVE_LOBBY, ErrorCode.UNKNOWN_SENDER,
               ErrorCode.WATCHER_UNAVAILABLE, ErrorCode.WATCHER_RESTARTED, ErrorCode.FORBIDDEN,
               ErrorCode.TOO_MANY_ROOMS}
    assert set(ERROR_CASES) == routing


def test_an_unknown_sender_is_told_on_its_own_gateway_and_nothing_changes(make: Make) -> None:
    mesh, out = make(A)
    send(mesh, "g5.1", "join-room", "r", rid=2)
    assert [(d[1], d[3]) for d in out.deliveries()] == [("g5", ("g5.1",))]
    assert_error(out, "g5.1", ErrorCode.UNKNOWN_SENDER, "join-room", "r", rid=2)
    assert "r" not in mesh.rooms and not mesh.knows_gateway("g5")


# ====================================================================== disconnect


def test_disconnect_leaves_every_room_with_notices_and_events(make: Make) -> None:
    mesh, out = make(A, B, C)
    join(mesh, A, "r1")
    join(mesh, B, "r1")
    join(mesh, A, "r2")
    join(mesh, C, "r2")
    join(mesh, A, "solo")
    out.clear()
    mesh.client_disconnected(A)
    assert A not in mesh.clients and A not in members(mesh, LOBBY)
    assert members(mesh, "r1") == [B] and members(mesh, "r2") == [C] and "solo" not in mesh.rooms
    assert mesh.rooms["r1"].maker == B
    assert [m["action"] for m in out.inbox(B)] == ["client-left-room"]
    assert out.inbox(B)[0] == {"action": "client-left-room", "target": "r1", "sender": A,
                               "message_body": {"client": A, "room": "r1"}}
    assert out.inbox(C)[0]["target"] == "r2"
    assert out.inbox(A) == []  # it is gone: nothing is sent to it
    assert all(A not in d[3] for d in out.deliveries())
    assert out.of("membership") == []  # its gateway already forgot it
    events = out.events()
    left = {e[2] for e in events if e[0] == EventKind.CLIENT_LEFT_ROOM}
    assert left == {"r1", "r2", "solo"}
    assert (EventKind.ROOM_DELETED, "", "solo", "") in events
    assert events[-1] == (EventKind.CLIENT_DISCONNECTED, A, "", "")
    assert len(events) == 5


def test_disconnect_of_an_unknown_client_does_nothing(make: Make) -> None:
    mesh, out = make(A)
    mesh.client_disconnected("g1.404")
    mesh.client_disconnected(A)
    out.clear()
    mesh.client_disconnected(A)
    assert out.calls == []


def test_a_disconnected_client_is_an_unknown_sender(make: Make) -> None:
    mesh, out = make(A)
    mesh.client_disconnected(A)
    out.clear()
    send(mesh, A, "join-room", "r")
    assert out.errors(A) == ["unknown-sender"]


# ====================================================================== gateways


def test_hello_resync_restores_memberships_silently(make: Make) -> None:
    mesh, out = make()  # a restarted processor: empty state
    mesh.gateway_hello("g1", 0, [(A, [LOBBY, "r"]), (A2, ["r", "s"])], 5.0)
    mesh.gateway_hello("g2", 1, [(B, ["s"])], 5.0)
    assert members(mesh, "r") == [A, A2]
    assert members(mesh, "s") == [A2, B]
    assert members(mesh, LOBBY) == [A, A2, B]
    assert mesh.rooms["r"].maker == A
    assert out.deliveries() == []  # clients are told nothing
    assert out.of("membership") == []  # gateways already know
    joined = sorted((e[1], e[2]) for e in out.events() if e[0] == EventKind.CLIENT_JOINED_ROOM)
    assert joined == [(A, "r"), (A2, "r"), (A2, "s"), (B, "s")]  # watchers can rebuild
    out.clear()
    send(mesh, B, "chat", "s", rid=1)
    assert only(out.inbox(A2))["sender"] == B


def test_hello_from_a_known_gateway_changes_nothing_that_matches(make: Make) -> None:
    mesh, out = make(A, B)
    join(mesh, A, "r")
    join(mesh, B, "r")
    out.clear()
    mesh.gateway_hello("g1", 0, [(A, [LOBBY, "r"])], 1.0)
    assert out.calls == []
    assert members(mesh, "r") == [A, B]


def test_hello_makes_memberships_match_the_gateway(make: Make) -> None:
    mesh, out = make(A, A2, B)
    join(mesh, A, "keep")
    join(mesh, A, "drop")
    join(mesh, B, "drop")
    out.clear()
    mesh.gateway_hello("g1", 0, [(A, ["keep", "new", "", "x" * 65])], 1.0)  # bad names are ignored
    assert mesh.clients[A].rooms == {LOBBY, "keep", "new"}
    assert members(mesh, "drop") == [B]
    assert ("membership", "g1", A, "drop", False) in out.of("membership")
    assert A2 not in mesh.clients  # not listed: gone, with its event
    assert (EventKind.CLIENT_DISCONNECTED, A2, "", "") in out.events()
    # the gateway's list is the truth: the other members hear that A left "drop"
    assert [(m["action"], m["sender"]) for m in out.inbox(B)] == [("client-left-room", A)]


def test_hello_in_a_taken_slot_replaces_the_older_gateway(make: Make) -> None:
    mesh, out = make(A, A2, B)
    mesh.gateway_hello("g1", 0, [(A, []), (A2, [])], 0.0)
    mesh.gateway_hello("g2", 1, [(B, [])], 0.0)
    join(mesh, A, "r")
    join(mesh, B, "r")
    out.clear()
    mesh.gateway_hello("g9", 0, [], 1.0)  # gateway 0 restarted under a new ID
    assert not mesh.knows_gateway("g1") and mesh.knows_gateway("g9") and mesh.knows_gateway("g2")
    assert A not in mesh.clients and A2 not in mesh.clients
    assert members(mesh, "r") == [B] and members(mesh, LOBBY) == [B]
    assert [(m["action"], m["sender"]) for m in out.inbox(B)] == [("client-left-room", A)]
    disconnected = [e[1] for e in out.events() if e[0] == EventKind.CLIENT_DISCONNECTED]
    assert sorted(disconnected) == [A, A2]


def test_hello_in_another_slot_keeps_other_gateways(make: Make) -> None:
    mesh, out = make(A, B)
    mesh.gateway_hello("g1", 0, [(A, [])], 0.0)
    mesh.gateway_hello("g2", 1, [(B, [])], 0.0)
    assert set(mesh.clients) == {A, B}


def test_expire_drops_silent_gateways_only(make: Make) -> None:
    mesh, out = make(gateway_timeout=3.0)
    mesh.gateway_hello("g1", 0, [(A, ["r"])], 0.0)
    mesh.gateway_hello("g2", 1, [(B, ["r"])], 0.0)
    mesh.gateway_seen("g2", 2.0)
    out.clear()
    assert mesh.expire(3.0) == []  # exactly at the timeout: still alive
    assert mesh.expire(3.5) == ["g1"]
    assert not mesh.knows_gateway("g1") and A not in mesh.clients
    assert members(mesh, "r") == [B]
    assert [m["action"] for m in out.inbox(B)] == ["client-left-room"]
    assert mesh.expire(5.5) == ["g2"]
    assert "r" not in mesh.rooms and mesh.clients == {}


def test_client_traffic_keeps_a_gateway_alive(make: Make) -> None:
    mesh, _ = make(gateway_timeout=3.0)
    mesh.client_connected(A, 0.0)
    mesh.client_connected(A2, 2.0)
    assert mesh.expire(4.0) == []


def test_dropping_an_unknown_gateway_does_nothing(make: Make) -> None:
    mesh, out = make(A)
    mesh.drop_gateway("nope")
    mesh.gateway_seen("nope", 1.0)
    assert out.calls == [] and not mesh.knows_gateway("nope")


def test_drop_gateway_disconnects_only_its_clients(make: Make) -> None:
    mesh, out = make(A, A2, B)
    for client in (A, A2, B):
        join(mesh, client, "r")
    out.clear()
    mesh.drop_gateway("g1")
    assert set(mesh.clients) == {B} and members(mesh, "r") == [B]
    assert sorted(m["sender"] for m in out.inbox(B)) == sorted([A, A2])


# ====================================================================== events


def test_all_six_events_with_increasing_sequence_numbers(make: Make) -> None:
    mesh, out = make()
    mesh.client_connected(A, 0.0)
    mesh.client_connected(B, 0.0)
    join(mesh, A, "r")
    join(mesh, B, "r")
    send(mesh, A, "leave-room", "r")
    mesh.client_disconnected(B)
    assert out.event_kinds() == [
        EventKind.CLIENT_CONNECTED, EventKind.CLIENT_CONNECTED,
        EventKind.ROOM_CREATED, EventKind.CLIENT_JOINED_ROOM, EventKind.CLIENT_JOINED_ROOM,
        EventKind.CLIENT_LEFT_ROOM,
        EventKind.CLIENT_LEFT_ROOM, EventKind.ROOM_DELETED, EventKind.CLIENT_DISCONNECTED]
    # away and back come with resume (their own tests)
    assert set(out.event_kinds()) == set(EventKind) - {EventKind.CLIENT_AWAY, EventKind.CLIENT_BACK}
    seqs = [c[1] for c in out.of("event")]
    assert seqs == list(range(1, len(seqs) + 1))


def test_event_kinds_match_the_proto_enum() -> None:
    from meshstream_zmq import meshstream_pb2 as pb

    for kind in EventKind:
        assert pb.Event.Kind.Value(kind.name) == kind.value


# ====================================================================== watchers


def watcher(mesh: Mesh, wid: str = W, name: str = "game", rooms: tuple[str, ...] = (),
            prefixes: tuple[str, ...] = (), now: float = 0.0) -> None:
    mesh.watcher_hello(wid, name, list(rooms), list(prefixes), now)


def test_watcher_hello_is_welcomed_with_its_rooms(make: Make) -> None:
    mesh, out = make(A, B)
    join(mesh, A, "game-1")
    join(mesh, B, "game-1")
    join(mesh, A, "chat")
    out.clear()
    watcher(mesh, rooms=("exact",), prefixes=("game-",))
    assert out.calls == [("welcome", W, (RoomView("game-1", [A, B], A, {}),))]


def test_watcher_claiming_the_lobby_gets_its_members(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=(LOBBY,))
    assert out.calls == [("welcome", W, (RoomView(LOBBY, [A], "", {}),))]


@pytest.mark.parametrize(("first", "second"), [
    ((("r",), ()), (("r", "s"), ())),
    (((), ("game-",)), ((), ("game-",))),
], ids=["same-room", "same-prefix"])
def test_a_live_claim_refuses_another_watcher(
        make: Make, first: tuple[tuple[str, ...], tuple[str, ...]],
        second: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
    mesh, out = make(A)
    watcher(mesh, "w1", "one", *first)
    out.clear()
    watcher(mesh, "w2", "two", *second)
    ((_, wid, command, error, detail, rooms),) = out.calls
    assert (wid, command, error, rooms) == ("w2", 0, ErrorCode.CLAIM_CONFLICT, ())
    assert "one" in detail
    out.clear()
    mesh.command("w2", 1, Query(what=QueryWhat.ROOMS))
    assert out.replies()[0][3] == ErrorCode.UNKNOWN_WATCHER


def test_a_dead_watchers_claims_pass_to_the_next_hello(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, "w1", "one", ("r",))
    mesh.watcher_gone("w1")
    out.clear()
    watcher(mesh, "w2", "one-again", ("r",))
    assert out.calls[0][0] == "welcome"
    assert "w1" not in mesh.watchers
    send(mesh, A, "join-room", "r")
    assert out.of("to_watcher")[0][1] == "w2"


def test_a_watcher_may_say_hello_again(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=("r",))
    watcher(mesh, rooms=("r", "s"))
    assert [c[0] for c in out.calls] == ["welcome", "welcome"]
    assert mesh.watchers[W].rooms == {"r", "s"}


@pytest.mark.parametrize(("name", "rooms", "prefixes"), [
    ("", ("r",), ()),
    ("w", ("",), ()),
    ("w", ("x" * 65,), ()),
    ("w", (), ("",)),
], ids=["no-name", "empty-room", "long-room", "empty-prefix"])
def test_a_bad_hello_is_refused(make: Make, name: str, rooms: tuple[str, ...],
                                prefixes: tuple[str, ...]) -> None:
    mesh, out = make()
    watcher(mesh, W, name, rooms, prefixes)
    assert [(c[0], c[2], c[3]) for c in out.calls] == [("reply", 0, ErrorCode.BAD_COMMAND)]
    assert W not in mesh.watchers


def test_frames_to_a_claimed_room_go_to_its_watcher_not_the_relay(make: Make) -> None:
    mesh, out = make(A, B)
    join(mesh, A, "game-1")
    join(mesh, B, "game-1")
    watcher(mesh, prefixes=("game-",))
    out.clear()
    for action in ("move", "join-room", "leave-room"):
        send(mesh, A, action, "game-1", {"x": 1}, rid=5)
    send(mesh, B, "join-room", "game-2")  # the room need not exist
    assert out.of("to_watcher") == [
        ("to_watcher", W, A, "move", "game-1", b'{"x":1}', False, b"5"),
        ("to_watcher", W, A, "join-room", "game-1", b'{"x":1}', False, b"5"),
        ("to_watcher", W, A, "leave-room", "game-1", b'{"x":1}', False, b"5"),
        ("to_watcher", W, B, "join-room", "game-2", b"{}", False, b""),
    ]
    assert out.deliveries() == [] and out.events() == [] and out.of("membership") == []
    assert members(mesh, "game-1") == [A, B] and "game-2" not in mesh.rooms


def test_the_seed_form_naming_a_claimed_room_goes_to_its_watcher(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=("game",))
    out.clear()
    send(mesh, A, "join-room", LOBBY, {"roomname": "game"}, rid=8)
    # the body travels too (Words Battle's lobby form carries playerlimit, setplayername)
    assert out.calls == [("to_watcher", W, A, "join-room", "game", b'{"roomname":"game"}', False,
                          b"8")]


def test_a_claimed_lobby_receives_every_lobby_frame(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=(LOBBY,))
    out.clear()
    send(mesh, A, "join-random-room", LOBBY, {"roomname": "abc"})
    send(mesh, A, "join-room", LOBBY, {"roomname": "abc"})
    assert [(c[3], c[4]) for c in out.of("to_watcher")] == [("join-random-room", LOBBY),
                                                            ("join-room", LOBBY)]
    assert out.deliveries() == []


def test_an_exact_claim_beats_a_prefix_and_the_longest_prefix_wins(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, "w-short", "short", prefixes=("g",))
    watcher(mesh, "w-long", "long", prefixes=("game-",))
    watcher(mesh, "w-exact", "exact", rooms=("game-7",))
    out.clear()
    for room in ("game-7", "game-8", "go"):
        send(mesh, A, "move", room)
    assert [(c[1], c[4]) for c in out.of("to_watcher")] == [
        ("w-exact", "game-7"), ("w-long", "game-8"), ("w-short", "go")]


@pytest.mark.parametrize("how", ["gone", "expired", "queue-full"])
def test_frames_to_the_room_of_an_unavailable_watcher_get_an_error(make: Make, how: str) -> None:
    mesh, out = make(A, B, watcher_timeout=3.0)
    join(mesh, A, "game")
    join(mesh, B, "game")
    watcher(mesh, rooms=("game",))
    if how == "gone":
        mesh.watcher_gone(W)
    elif how == "expired":
        mesh.gateway_seen("g1", 10.0)
        mesh.gateway_seen("g2", 10.0)
        assert mesh.expire(10.0) == []
        assert not mesh.watcher_seen(W, 10.0)
    else:
        out.watcher_accepts = False
    out.clear()
    send(mesh, A, "move", "game", rid=3)
    assert_error(out, A, ErrorCode.WATCHER_UNAVAILABLE, "move", "game", rid=3)
    assert out.inbox(B) == []  # no fall-back to the built-in relay
    out.clear()
    send(mesh, A, "join-room", LOBBY, {"roomname": "game2"})  # unclaimed: still works
    send(mesh, B, "join-room", LOBBY, {"roomname": "game"})
    assert out.errors(B) == ["already-member"]


def test_seed_form_join_to_a_dead_watchers_room(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=("game",))
    mesh.watcher_gone(W)
    out.clear()
    send(mesh, A, "join-room", LOBBY, {"roomname": "game"}, rid=2)
    assert_error(out, A, ErrorCode.WATCHER_UNAVAILABLE, "join-room", "game", rid=2)


def test_events_of_claimed_rooms_name_their_watcher(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=(LOBBY, "game"))
    out.clear()
    mesh.client_connected(B, 0.0)
    mesh.command(W, 1, Join(client=B, room="game"))
    mesh.client_disconnected(B)
    assert out.events() == [
        (EventKind.CLIENT_CONNECTED, B, "", W),
        (EventKind.ROOM_CREATED, "", "game", W),
        (EventKind.CLIENT_JOINED_ROOM, B, "game", W),
        (EventKind.CLIENT_LEFT_ROOM, B, "game", W),
        (EventKind.ROOM_DELETED, "", "game", W),
        (EventKind.CLIENT_DISCONNECTED, B, "", W),
    ]
    mesh.watcher_gone(W)
    out.clear()
    mesh.client_connected(C, 0.0)
    assert out.events() == [(EventKind.CLIENT_CONNECTED, C, "", "")]


def test_claimed_rooms_get_no_built_in_notices(make: Make) -> None:
    mesh, out = make(A, B)
    watcher(mesh, rooms=("game",))
    mesh.command(W, 1, Join(client=A, room="game"))
    mesh.command(W, 2, Join(client=B, room="game"))
    mesh.client_disconnected(B)
    mesh.command(W, 3, Remove(client=A, room="game"))
    assert out.deliveries() == []


def test_watcher_heartbeats(make: Make) -> None:
    mesh, out = make(watcher_timeout=3.0)
    watcher(mesh, now=0.0)
    assert mesh.watcher_seen(W, 2.0)
    mesh.expire(4.0)
    assert mesh.watchers[W].alive
    mesh.expire(5.5)
    assert not mesh.watchers[W].alive
    assert not mesh.watcher_seen(W, 6.0) and not mesh.watcher_seen("nobody", 6.0)
    mesh.watcher_gone("nobody")


def test_forwarded_frames_are_numbered_per_watcher(make: Make) -> None:
    mesh, out = make(A, B)
    watcher(mesh, rooms=("game",))
    watcher(mesh, "w-other", "other", rooms=("table",))
    out.clear()
    for client, room in ((A, "game"), (B, "table"), (B, "game"), (A, "game")):
        send(mesh, client, "move", room)
    assert [(c[1], seq) for c, seq in zip(out.of("to_watcher"), out.seqs, strict=True)] == [
        (W, 1), ("w-other", 1), (W, 2), (W, 3)]


def test_a_refused_frame_takes_no_sequence_number(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=("game",))
    out.watcher_accepts = False
    send(mesh, A, "move", "game", rid=1)
    assert out.errors(A) == ["watcher-unavailable"]
    out.watcher_accepts = True
    out.clear()
    send(mesh, A, "move", "game", rid=2)
    assert out.seqs == [1]
    mesh.watcher_gone(W)
    assert [(m["message_body"]["code"], m["id"]) for m in out.inbox(A)] == [("watcher-restarted", 2)]


def test_frames_a_dead_watcher_never_acknowledged_are_reported_to_their_senders(make: Make) -> None:
    mesh, out = make(A, B, C, watcher_timeout=3.0)
    watcher(mesh, rooms=("game",))
    send(mesh, A, "move", "game", rid="a1")  # seq 1
    send(mesh, B, "move", "game", rid="b1")  # seq 2
    send(mesh, C, "move", "game", rid="c1")  # seq 3
    send(mesh, A, "move", "game", rid="a2")  # seq 4
    assert mesh.watcher_seen(W, 1.0, acked=2)  # the first two were handled
    mesh.client_disconnected(C)  # nobody left to tell
    for gateway in ("g1", "g2", "g3"):
        mesh.gateway_seen(gateway, 10.0)
    out.clear()
    assert mesh.expire(10.0) == []
    assert [(m["action"], m["message_body"]["code"], m["id"]) for m in out.inbox(A)] == [
        ("error", "watcher-restarted", "a2")]
    assert out.inbox(B) == [] and out.inbox(C) == []
    error = out.inbox(A)[0]
    assert error["target"] == "game" and error["message_body"]["action"] == "move"
    out.clear()
    mesh.watcher_gone(W)  # already reported: not twice
    assert out.calls == []


def test_a_watcher_restarting_under_its_name_reports_what_it_had_not_acknowledged(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, "w-old", "game", rooms=("game",))
    send(mesh, A, "move", "game", rid=1)
    send(mesh, A, "move", "game", rid=2)
    mesh.watcher_seen("w-old", 0.5, acked=1)
    out.clear()
    watcher(mesh, "w-new", "game", rooms=("game",))
    assert [(m["message_body"]["code"], m["id"]) for m in out.inbox(A)] == [("watcher-restarted", 2)]
    assert out.of("welcome")[0][1] == "w-new"
    out.clear()
    send(mesh, A, "move", "game", rid=3)
    assert out.seqs == [1]  # a new process counts from the start


def test_acknowledgements_never_reach_past_what_was_sent(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=("game",))
    send(mesh, A, "move", "game", rid=1)
    assert mesh.watcher_seen(W, 0.5, acked=99)
    send(mesh, A, "move", "game", rid=2)
    out.clear()
    mesh.watcher_gone(W)
    assert [m["id"] for m in out.inbox(A)] == [2]


# ---------------------------------------------------------------------- commands


@pytest.fixture
def game(make: Make) -> tuple[Mesh, RecordingOutbox]:
    """A and B connected; W claims 'game', the prefix 'g-' and the lobby; A is in 'other', unclaimed."""
    mesh, out = make(A, B)
    join(mesh, A, "other")
    watcher(mesh, rooms=("game", LOBBY), prefixes=("g-",))
    out.clear()
    return mesh, out


def reply_of(out: RecordingOutbox, command: int) -> tuple[ErrorCode | None, str, tuple[RoomView, ...]]:
    """The one reply to `command`."""
    replies = [r for r in out.replies() if r[2] == command]
    assert len(replies) == 1, out.replies()
    _, wid, _, error, detail, rooms = replies[0]
    assert wid == W
    return error, detail, rooms


def test_create_room_keeps_it_while_empty(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, CreateRoom(room="game"))
    assert reply_of(out, 1) == (None, "", ())
    assert mesh.rooms["game"].keep and members(mesh, "game") == []
    assert out.events() == [(EventKind.ROOM_CREATED, "", "game", W)]
    mesh.command(W, 2, Join(client=A, room="game"))
    mesh.command(W, 3, Remove(client=A, room="game"))
    assert "game" in mesh.rooms
    assert out.of("membership") == [("membership", "g1", A, "game", True),
                                    ("membership", "g1", A, "game", False)]


def test_delete_room_removes_its_members(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, CreateRoom(room="g-1"))
    mesh.command(W, 2, Join(client=A, room="g-1"))
    mesh.command(W, 3, Join(client=B, room="g-1"))
    out.clear()
    mesh.command(W, 4, DeleteRoom(room="g-1"))
    assert reply_of(out, 4)[0] is None
    assert "g-1" not in mesh.rooms
    assert mesh.clients[A].rooms == {LOBBY, "other"} and mesh.clients[B].rooms == {LOBBY}
    assert sorted(out.of("membership")) == [("membership", "g1", A, "g-1", False),
                                            ("membership", "g2", B, "g-1", False)]
    assert out.event_kinds() == [EventKind.CLIENT_LEFT_ROOM, EventKind.CLIENT_LEFT_ROOM,
                                 EventKind.ROOM_DELETED]


def test_delete_of_a_room_made_by_joins_deletes_it_once(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, Join(client=A, room="g-2"))  # created by the join: not kept
    assert not mesh.rooms["g-2"].keep
    out.clear()
    mesh.command(W, 2, DeleteRoom(room="g-2"))
    assert reply_of(out, 2)[0] is None
    assert out.event_kinds() == [EventKind.CLIENT_LEFT_ROOM, EventKind.ROOM_DELETED]


def test_join_and_remove_commands(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, Join(client=B, room="g-9"))
    assert reply_of(out, 1)[0] is None
    assert members(mesh, "g-9") == [B] and mesh.rooms["g-9"].maker == B
    assert out.events()[-1] == (EventKind.CLIENT_JOINED_ROOM, B, "g-9", W)
    mesh.command(W, 2, Remove(client=B, room="g-9"))
    assert reply_of(out, 2)[0] is None
    assert "g-9" not in mesh.rooms
    assert out.deliveries() == []  # notices are the watcher's business


def test_send_room_is_one_delivery_per_gateway_with_exclusions(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.client_connected(A2, 0.0)
    for client in (A, A2, B):
        mesh.command(W, 0, Join(client=client, room="game"))
    out.clear()
    frame = protocol.encode("bot", "game", b'{"m":1}', "bot-of-the-room")
    mesh.command(W, 1, SendRoom(room="game", frame=frame, exclude=(A,)))
    assert reply_of(out, 1)[0] is None
    assert sorted((d[1], d[4], d[5]) for d in out.deliveries()) == [("g1", "game", (A,)),
                                                                     ("g2", "game", (A,))]
    assert out.inbox(A) == [] and only(out.inbox(A2)) == decode(frame) and only(out.inbox(B)) == decode(frame)


def test_send_clients_gives_each_recipient_its_copy_numbered_in_its_stream(
        game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.client_connected(A2, 0.0)
    frame = protocol.encode("know-yourself", A, b"{}", "bot", is_target_client=True)
    mesh.command(W, 1, SendClients(clients=(A,), frame=frame))
    out.clear()
    mesh.command(W, 2, SendClients(clients=(A, B, A2), frame=frame))
    assert reply_of(out, 2)[0] is None
    copies = sorted((d[1], d[3], json.loads(d[2])["offset"]) for d in out.deliveries())
    assert copies == [("g1", (A,), 2), ("g1", (A2,), 1), ("g2", (B,), 1)]  # A had one already
    assert {json.loads(d[2])["epoch"] for d in out.deliveries()} == {mesh.epoch}


def test_send_clients_with_an_unknown_client_sends_nothing(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, SendClients(clients=(A, "g7.7"), frame=b"{}"))
    assert reply_of(out, 1)[:2] == (ErrorCode.UNKNOWN_CLIENT, "g7.7")
    assert out.deliveries() == []


def test_disconnect_command_asks_the_gateway_to_close(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, Disconnect(client=B))
    mesh.command(W, 2, Disconnect(client=A, code=4100, reason="cheating"))
    assert out.of("close") == [("close", "g2", B, CloseCode.DISCONNECTED, "disconnected by watcher"),
                               ("close", "g1", A, 4100, "cheating")]
    assert reply_of(out, 1)[0] is None and reply_of(out, 2)[0] is None
    assert B in mesh.clients  # gone when its gateway says so


def test_query_commands(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, Query(what=QueryWhat.ROOMS))
    assert [v.name for v in reply_of(out, 1)[2]] == [LOBBY, "other"]
    mesh.command(W, 2, Query(what=QueryWhat.ROOM, room="other"))
    epoch = mesh.rooms["other"].epoch  # with its members' users, count, epoch and newest offset
    assert reply_of(out, 2) == (None, "", (RoomView("other", [A], A, {}, [""], 1, epoch, 1),))
    mesh.command(W, 3, Query(what=QueryWhat.CLIENT_ROOMS, client=A))
    assert [v.name for v in reply_of(out, 3)[2]] == sorted([LOBBY, "other"])


def test_settings_are_stored_and_shown(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, CreateRoom(room="game"))
    mesh.command(W, 2, Settings(room="game", settings={"player_limit": "3"}))
    mesh.command(W, 3, Settings(room="game", settings={"game_duration": "60"}))
    assert reply_of(out, 3)[0] is None
    mesh.command(W, 4, Query(what=QueryWhat.ROOM, room="game"))
    assert reply_of(out, 4)[2][0].settings == {"player_limit": "3", "game_duration": "60"}


COMMANDS_THAT_SUCCEED: list[Command] = [
    CreateRoom("g-1", settings={"player_limit": "2"}),
    DeleteRoom("other"),
    Join(B, "game"),
    Remove(A, "other"),
    SendRoom("other", b'{"action":"x"}'),
    SendClients((A, B), b'{"action":"x"}'),
    Disconnect(B),
    Query(QueryWhat.ROOMS),
    Settings("other", {"a": "1"}),
]


@pytest.mark.parametrize("command", COMMANDS_THAT_SUCCEED, ids=lambda c: type(c).__name__)
def test_each_command_type_gets_one_successful_reply(game: tuple[Mesh, RecordingOutbox],
                                                     command: Command) -> None:
    mesh, out = game
    mesh.command(W, 5, command)
    assert reply_of(out, 5)[0] is None
    assert out.calls[-1][0] == "reply"  # the reply comes after everything the command did


def test_every_command_type_is_exercised() -> None:
    assert {type(c) for c in COMMANDS_THAT_SUCCEED} == set(get_args(Command))


COMMAND_ERRORS: list[tuple[Command, ErrorCode]] = [
    (CreateRoom("g-" + "x" * 63), ErrorCode.BAD_ROOM_NAME),
    (CreateRoom(""), ErrorCode.BAD_ROOM_NAME),
    (CreateRoom(LOBBY), ErrorCode.ROOM_EXISTS),
    (CreateRoom("other"), ErrorCode.ROOM_EXISTS),
    (CreateRoom("g-1", watcher="nobody"), ErrorCode.UNKNOWN_WATCHER),
    (DeleteRoom("g-none"), ErrorCode.UNKNOWN_ROOM),
    (DeleteRoom(""), ErrorCode.BAD_ROOM_NAME),
    (DeleteRoom(LOBBY), ErrorCode.CANNOT_LEAVE_LOBBY),
    (Join("g8.8", "game"), ErrorCode.UNKNOWN_CLIENT),
    (Join(A, LOBBY), ErrorCode.ALREADY_MEMBER),
    (Join(A, "other"), ErrorCode.ALREADY_MEMBER),
    (Join(A, "x" * 65), ErrorCode.BAD_ROOM_NAME),
    (Remove(A, "g-none"), ErrorCode.UNKNOWN_ROOM),
    (Remove(A, LOBBY), ErrorCode.CANNOT_LEAVE_LOBBY),
    (Remove(B, "other"), ErrorCode.NOT_MEMBER),
    (SendRoom("g-none", b"{}"), ErrorCode.UNKNOWN_ROOM),
    (SendClients(("g8.8",), b"{}"), ErrorCode.UNKNOWN_CLIENT),
    (Disconnect("g8.8"), ErrorCode.UNKNOWN_CLIENT),
    (Query(QueryWhat.ROOM, room="nope"), ErrorCode.UNKNOWN_ROOM),
    (Query(QueryWhat.CLIENT_ROOMS, client="g8.8"), ErrorCode.UNKNOWN_CLIENT),
    (Settings("g-none", {}), ErrorCode.UNKNOWN_ROOM),
]


@pytest.mark.parametrize(("command", "code"), COMMAND_ERRORS,
                         ids=[f"{type(c).__name__}-{code.value}-{i}"
                              for i, (c, code) in enumerate(COMMAND_ERRORS)])
def test_command_errors_get_exactly_one_reply(game: tuple[Mesh, RecordingOutbox], command: Command,
                                              code: ErrorCode) -> None:
    mesh, out = game
    rooms_before = {name: room.view() for name, room in mesh.rooms.items()}
    mesh.command(W, 42, command)
    assert reply_of(out, 42)[0] == code
    assert out.calls == out.replies()  # nothing else happened
    assert {name: room.view() for name, room in mesh.rooms.items()} == rooms_before


@dataclass(frozen=True, slots=True)
class Explode:
    room: str


def test_a_value_that_is_not_a_command_raises(game: tuple[Mesh, RecordingOutbox]) -> None:
    """A bug in the caller is not turned into a bad-command reply: the core knows every command type."""
    mesh, out = game
    with pytest.raises(AssertionError):
        mesh.command(W, 1, Explode("game"))  # type: ignore[arg-type]
    assert out.calls == []


def test_not_member_on_remove(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, CreateRoom(room="game"))
    mesh.command(W, 2, Remove(client=B, room="game"))
    assert reply_of(out, 2)[:2] == (ErrorCode.NOT_MEMBER, B)


def test_room_exists_on_create(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, CreateRoom(room="g-1"))
    mesh.command(W, 2, CreateRoom(room="g-1"))
    assert reply_of(out, 2)[:2] == (ErrorCode.ROOM_EXISTS, "g-1")
    assert out.event_kinds() == [EventKind.ROOM_CREATED]


def test_already_member_on_join(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, Join(client=A, room="game"))
    mesh.command(W, 2, Join(client=A, room="game"))
    assert reply_of(out, 2)[:2] == (ErrorCode.ALREADY_MEMBER, A)


def test_creating_a_room_another_live_watcher_claims_is_a_conflict(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, "w-prefix", "p", prefixes=("g-",))
    watcher(mesh, "w-exact", "e", rooms=("g-1",))
    out.clear()
    mesh.command("w-prefix", 1, CreateRoom(room="g-1"))
    assert out.replies()[0][3] == ErrorCode.CLAIM_CONFLICT and "g-1" not in mesh.rooms
    mesh.command("w-exact", 2, CreateRoom(room="g-1"))
    assert out.replies()[1][3] is None and "g-1" in mesh.rooms


def test_commands_act_on_unclaimed_rooms_with_the_built_in_notices(
        game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, Join(client=B, room="other"))
    assert reply_of(out, 1)[0] is None
    assert [m["action"] for m in out.inbox(A)] == ["client-joined-room"]
    assert [m["action"] for m in out.inbox(B)] == ["client-joined-room"]
    out.clear()
    mesh.command(W, 2, Remove(client=B, room="other"))
    assert reply_of(out, 2)[0] is None
    assert [m["action"] for m in out.inbox(A)] == ["client-left-room"]
    assert [m["action"] for m in out.inbox(B)] == ["client-left-room"]
    assert out.of("membership") == [("membership", "g2", B, "other", False)]


def test_a_created_room_belongs_to_its_creator(game: tuple[Mesh, RecordingOutbox]) -> None:
    mesh, out = game
    mesh.command(W, 1, CreateRoom(room="table-1", settings={"player_limit": "2"}))
    assert reply_of(out, 1)[0] is None
    assert mesh.rooms["table-1"].settings == {"player_limit": "2"}
    assert out.events() == [(EventKind.ROOM_CREATED, "", "table-1", W)]
    out.clear()
    send(mesh, A, "join-room", "table-1", rid=1)
    assert out.calls == [("to_watcher", W, A, "join-room", "table-1", b"{}", False, b"1")]
    mesh.command(W, 2, DeleteRoom(room="table-1"))
    out.clear()
    send(mesh, A, "join-room", "table-1")  # deleted: no longer the watcher's
    assert members(mesh, "table-1") == [A]


def test_a_room_can_be_created_for_another_watcher_by_name(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, "w-lobby", "lobby", rooms=(LOBBY,))
    watcher(mesh, "w-game", "game", rooms=("unused",))
    mesh.command("w-lobby", 1, CreateRoom(room="abc", watcher="game"))
    assert out.replies()[-1][3] is None
    out.clear()
    send(mesh, A, "ready", "abc")
    assert [c[1] for c in out.of("to_watcher")] == ["w-game"]
    # The game watcher restarts under a new ID: the room stays with it.
    watcher(mesh, "w-game-2", "game", rooms=("unused",))
    assert out.of("welcome")[-1] == ("welcome", "w-game-2",
                                     (RoomView("abc", [], "", {}), ))
    out.clear()
    send(mesh, A, "ready", "abc")
    assert [c[1] for c in out.of("to_watcher")] == ["w-game-2"]


def test_a_hello_under_a_known_name_takes_over_at_once(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, "w-old", "game", rooms=("game",))
    out.clear()
    watcher(mesh, "w-new", "game", rooms=("game",))  # the old one has not timed out yet
    assert out.calls[0][0] == "welcome"
    assert set(mesh.watchers) == {"w-new"}
    mesh.command("w-old", 1, Query(what=QueryWhat.ROOMS))
    assert out.replies()[-1][3] == ErrorCode.UNKNOWN_WATCHER


def test_an_assigned_room_conflicts_with_a_new_claim(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, "w1", "one", rooms=("x",))
    mesh.command("w1", 1, CreateRoom(room="mine"))
    out.clear()
    watcher(mesh, "w2", "two", rooms=("mine",))
    assert [(c[0], c[3]) for c in out.calls] == [("reply", ErrorCode.CLAIM_CONFLICT)]


@pytest.mark.parametrize("who", ["unknown", "dead"])
def test_commands_from_an_unknown_or_dead_watcher(make: Make, who: str) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=("game",))
    if who == "dead":
        mesh.watcher_gone(W)
        wid = W
    else:
        wid = "stranger"
    out.clear()
    mesh.command(wid, 5, CreateRoom(room="game"))
    assert out.calls == [("reply", wid, 5, ErrorCode.UNKNOWN_WATCHER, "", ())]


# ---------------------------------------------------------------------- known defects


def test_the_owner_of_a_room_does_not_depend_on_hello_order(make: Make) -> None:
    """A dead watcher's exact claim against a live prefix claim: once decided by dict order."""
    outcomes = []
    for order in (("exact", "prefix"), ("prefix", "exact")):
        mesh, out = make(A)
        for which in order:
            if which == "exact":
                watcher(mesh, "w-exact", "exact", rooms=("g-1",))
            else:
                watcher(mesh, "w-prefix", "prefix", prefixes=("g-",))
        mesh.watcher_gone("w-exact")
        out.clear()
        send(mesh, A, "move", "g-1", rid=1)
        outcomes.append([(c[0], c[1]) if c[0] == "to_watcher" else (c[0], decode(c[2])["action"])
                         for c in out.calls])
    assert outcomes[0] == outcomes[1]


def test_deleting_an_unclaimed_room_tells_its_members(game: tuple[Mesh, RecordingOutbox]) -> None:
    """Once, members of a deleted built-in room were removed without a word (unlike `remove`)."""
    mesh, out = game
    join(mesh, B, "other")
    out.clear()
    mesh.command(W, 1, DeleteRoom(room="other"))
    assert reply_of(out, 1)[0] is None and "other" not in mesh.rooms
    for client in (A, B):
        own = [m for m in out.inbox(client)
               if m["action"] == "client-left-room" and m["message_body"]["client"] == client]
        assert len(own) == 1 and own[0]["target"] == "other"
    assert out.event_kinds().count(EventKind.ROOM_DELETED) == 1


def test_a_dead_watchers_assigned_rooms_do_not_become_chat_rooms(make: Make) -> None:
    """Once, a newcomer taking over a dead watcher's claims dropped the rooms assigned to it."""
    mesh, out = make(A, B)
    watcher(mesh, "w1", "one", rooms=("x",))
    mesh.command("w1", 1, CreateRoom(room="table"))
    mesh.command("w1", 2, Join(client=A, room="table"))
    mesh.command("w1", 3, Join(client=B, room="table"))
    mesh.watcher_gone("w1")
    watcher(mesh, "w2", "two", rooms=("x",))  # takes over the dead watcher's claim on 'x'
    out.clear()
    send(mesh, A, "chat", "table", {"text": "hello?"})
    assert out.inbox(B) == []  # not relayed: the room's logic is a watcher's, dead or alive


# ====================================================================== issue 9: users and room policies


class FakePass:
    """The processor's room-pass port: admits token 'pass:<user>:<room>' and records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, str, str]] = []

    def __call__(self, token: object, user: str, room: str) -> bool:
        self.calls.append((token, user, room))
        return token == f"pass:{user}:{room}"


def secure(make: Make, **kwargs: Any) -> tuple[Mesh, RecordingOutbox, FakePass]:
    """A mesh with a room pass; A is alice, A2 is anonymous, B is bob, C is carol."""
    room_pass = FakePass()
    mesh, out = make(room_pass=room_pass, **kwargs)
    for client, user in ((A, "alice"), (A2, ""), (B, "bob"), (C, "carol")):
        mesh.client_connected(client, 0.0, user)
    out.clear()
    return mesh, out, room_pass


def test_the_user_is_sent_with_every_client_event_and_forwarded_frame(make: Make) -> None:
    mesh, out = make()
    mesh.watcher_hello(W, "game", [], ["game-"], 0.0)
    mesh.client_connected(A, 0.0, "alice")
    mesh.client_connected(A2, 0.0)
    send(mesh, A, "join-room", "game-1")
    send(mesh, A2, "move", "game-1")
    join(mesh, A, "chat")
    mesh.client_disconnected(A)
    assert out.users == [
        ("event", A, "alice"), ("event", A2, ""),  # connected
        ("to_watcher", A, "alice"), ("to_watcher", A2, ""),  # frames to the watcher's room
        ("event", "", ""), ("event", A, "alice"),  # chat created, alice joined
        ("event", A, "alice"), ("event", "", ""),  # alice left chat (disconnecting), chat deleted
        ("event", A, "alice"),  # disconnected: the user outlives the client entry
    ]
    assert out.event_kinds() == [
        EventKind.CLIENT_CONNECTED, EventKind.CLIENT_CONNECTED, EventKind.ROOM_CREATED,
        EventKind.CLIENT_JOINED_ROOM, EventKind.CLIENT_LEFT_ROOM, EventKind.ROOM_DELETED,
        EventKind.CLIENT_DISCONNECTED]


def test_a_gateway_hello_restores_users(make: Make) -> None:
    mesh, out = make()
    mesh.gateway_hello("g1", 0, [(A, ["r"]), (A2, [])], 0.0, {A: "alice"})
    assert mesh.clients[A].user == "alice" and mesh.clients[A2].user == ""
    assert ("event", A, "alice") in out.users
    mesh.gateway_hello("g1", 0, [(A, ["r"]), (A2, [])], 1.0, {A2: "anna"})  # resync: the gateway knows
    assert mesh.clients[A].user == "alice" and mesh.clients[A2].user == "anna"


# ---------------------------------------------------------------------- private rooms


@pytest.mark.parametrize("form", ["target", "roomname"])
def test_a_private_room_admits_a_client_with_its_room_pass(make: Make, form: str) -> None:
    mesh, out, room_pass = secure(make)
    body = {"token": "pass:alice:private-r"}
    if form == "target":
        send(mesh, A, "join-room", "private-r", body, rid=1)
    else:
        send(mesh, A, "join-room", LOBBY, {"roomname": "private-r", **body}, rid=1)
    assert members(mesh, "private-r") == [A]
    assert only(out.inbox(A))["action"] == "client-joined-room"
    assert room_pass.calls == [("pass:alice:private-r", "alice", "private-r")]


@pytest.mark.parametrize(("client", "body"), [
    (A, None),
    (A, {"token": "pass:bob:private-r"}),  # bob's pass: not alice's
    (A, {"token": "pass:alice:private-other"}),  # another room's pass
    (A, {"token": ["pass:alice:private-r"]}),
    (A2, {"token": "pass::private-r"}),  # anonymous: no user, no private room
], ids=["no-token", "other-user", "other-room", "not-a-string", "anonymous"])
@pytest.mark.parametrize("form", ["target", "roomname"])
def test_a_private_room_refuses_a_client_without_a_valid_pass(
        make: Make, client: str, body: dict[str, Any] | None, form: str) -> None:
    mesh, out, _ = secure(make)
    mesh.watcher_hello(W, "host", [], ["h-"], 0.0)
    mesh.command(W, 1, Join(B, "private-r"))  # the room exists: bob is in
    out.clear()
    if form == "target":
        send(mesh, client, "join-room", "private-r", body, rid=2)
        target = "private-r"
    else:
        send(mesh, client, "join-room", LOBBY, {"roomname": "private-r", **(body or {})}, rid=2)
        target = LOBBY
    assert_error(out, client, ErrorCode.FORBIDDEN, "join-room", target, rid=2)
    assert client not in mesh.rooms["private-r"].members
    assert out.events() == [] and out.of("membership") == []


def test_without_a_jwt_key_no_client_joins_a_private_room(make: Make) -> None:
    mesh, out = make()  # room_pass None: what the processor passes with JWT off
    mesh.client_connected(A, 0.0, "alice")
    out.clear()
    send(mesh, A, "join-room", "private-r", {"token": "anything"}, rid=1)
    assert_error(out, A, ErrorCode.FORBIDDEN, "join-room", "private-r", rid=1)
    assert "private-r" not in mesh.rooms


def test_the_room_pass_is_asked_only_for_private_joins(make: Make) -> None:
    mesh, out, room_pass = secure(make)
    join(mesh, A, "public")
    send(mesh, A, "chat", "public", {"token": "pass:alice:public"})
    send(mesh, A, "list-rooms")
    send(mesh, A, "whisper", B, to_client=True)
    assert room_pass.calls == []


def test_a_claimed_private_room_is_its_watchers_decision(make: Make) -> None:
    mesh, out, room_pass = secure(make)
    mesh.watcher_hello(W, "vault", [], ["private-vault-"], 0.0)
    out.clear()
    send(mesh, A, "join-room", "private-vault-1", rid=3)  # no token: the watcher decides
    assert [(c[1], c[2], c[3], c[4]) for c in out.of("to_watcher")] == [
        (W, A, "join-room", "private-vault-1")]
    assert out.users == [("to_watcher", A, "alice")]  # it sees who asks
    assert room_pass.calls == [] and out.inbox(A) == []
    mesh.command(W, 1, Join(A, "private-vault-1"))  # it lets alice in
    assert members(mesh, "private-vault-1") == [A]


def test_a_watcher_may_join_a_client_to_an_unclaimed_private_room(make: Make) -> None:
    """Watchers are trusted room logic: their join commands are not bound by room passes."""
    mesh, out, room_pass = secure(make)
    mesh.watcher_hello(W, "host", [], ["h-"], 0.0)
    mesh.command(W, 1, Join(B, "private-r"))
    assert members(mesh, "private-r") == [B] and room_pass.calls == []


def test_the_lobby_form_through_a_claimed_lobby_does_not_bypass_the_pass(make: Make) -> None:
    """Under make run the lobby watcher claims mesh-global, and gomeshstream's form goes to it;
    a private room no watcher claims is still only joined with a pass, and by the core."""
    mesh, out, room_pass = secure(make)
    mesh.watcher_hello(W, "lobby", [LOBBY], [], 0.0)
    out.clear()
    send(mesh, A, "join-room", LOBBY, {"roomname": "private-r"}, rid=1)
    assert_error(out, A, ErrorCode.FORBIDDEN, "join-room", LOBBY, rid=1)
    assert out.of("to_watcher") == []
    out.clear()
    send(mesh, A, "join-room", LOBBY, {"roomname": "private-r", "token": "pass:alice:private-r"},
         rid=2)
    assert out.of("to_watcher") == []
    assert members(mesh, "private-r") == [A]
    assert only(out.inbox(A))["action"] == "client-joined-room"
    out.clear()
    send(mesh, B, "join-room", LOBBY, {"roomname": "public", "playerlimit": 3}, rid=3)
    assert [(c[2], c[3], c[4]) for c in out.of("to_watcher")] == [(B, "join-room", LOBBY)]


# ---------------------------------------------------------------------- enumeration


def test_list_members_of_a_private_room_is_for_its_members_only(make: Make) -> None:
    mesh, out, _ = secure(make)
    send(mesh, A, "join-room", "private-r", {"token": "pass:alice:private-r"})
    out.clear()
    send(mesh, A, "list-members", "private-r", rid=1)
    assert only(out.inbox(A))["message_body"] == {"members": [A], "next": None}
    send(mesh, B, "list-members", "private-r", rid=2)
    assert_error(out, B, ErrorCode.FORBIDDEN, "list-members", "private-r", rid=2)
    out.clear()
    send(mesh, B, "list-members", "private-none", rid=3)  # existing or not: the same answer
    assert_error(out, B, ErrorCode.FORBIDDEN, "list-members", "private-none", rid=3)


@pytest.mark.parametrize("action", ["chat", "leave-room"])
def test_a_private_rooms_existence_is_not_told_to_non_members(make: Make, action: str) -> None:
    mesh, out, _ = secure(make)
    send(mesh, A, "join-room", "private-r", {"token": "pass:alice:private-r"})
    out.clear()
    send(mesh, B, action, "private-r", rid=1)
    send(mesh, B, action, "private-none", rid=2)
    assert out.errors(B) == ["not-member", "not-member"]
    assert out.inbox(A) == []


def test_list_rooms_never_shows_private_rooms(make: Make) -> None:
    mesh, out, _ = secure(make)
    send(mesh, A, "join-room", "private-r", {"token": "pass:alice:private-r"})
    join(mesh, B, "public")
    out.clear()
    send(mesh, A, "list-rooms", rid=1)
    assert only(out.inbox(A))["message_body"] == {
        "rooms": [{"name": LOBBY, "members": 4}, {"name": "public", "members": 1}], "next": None}


def test_list_rooms_pages_by_name_with_a_cursor(make: Make) -> None:
    mesh, out = make(A)
    names = [f"room-{i:03}" for i in range(7)]
    for name in reversed(names):
        mesh._new_room(name, keep=True)
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        out.clear()
        body: dict[str, Any] = {"limit": 3} if after is None else {"limit": 3, "after": after}
        send(mesh, A, "list-rooms", body=body, rid=pages)
        reply = only(out.inbox(A))
        assert reply["id"] == pages and len(reply["message_body"]["rooms"]) <= 3
        seen += [r["name"] for r in reply["message_body"]["rooms"]]
        pages += 1
        after = reply["message_body"]["next"]
        if after is None:
            break
        assert after == seen[-1]
    assert seen == sorted([LOBBY, *names]) and pages == 3
    out.clear()
    send(mesh, A, "list-rooms", body={"after": "room-005"})  # strictly after the cursor
    assert [r["name"] for r in only(out.inbox(A))["message_body"]["rooms"]] == ["room-006"]


def test_list_rooms_is_bounded_and_clamps_its_limit(make: Make) -> None:
    mesh, out = make(A)
    for i in range(MAX_LIST_PAGE + 50):
        name = f"r{i:04}"
        mesh._new_room(name, keep=True)
    for body, expected in (({}, MAX_LIST_PAGE), ({"limit": None}, MAX_LIST_PAGE),
                           ({"limit": 10**9}, MAX_LIST_PAGE), ({"limit": 0}, 1),
                           ({"limit": -5}, 1), ({"limit": 7}, 7)):
        out.clear()
        send(mesh, A, "list-rooms", body=body)
        page = only(out.inbox(A))["message_body"]
        assert len(page["rooms"]) == expected, body
        assert page["next"] == page["rooms"][-1]["name"]


@pytest.mark.parametrize("body", [{"limit": "10"}, {"limit": 2.5}, {"limit": True}, {"after": 3},
                                  {"after": ["a"]}])
def test_list_rooms_with_a_bad_limit_or_cursor_is_bad_body(make: Make, body: dict[str, Any]) -> None:
    mesh, out = make(A)
    send(mesh, A, "list-rooms", body=body, rid=4)
    error = only(out.inbox(A))
    assert error["message_body"] == {"code": "bad-body", "action": "list-rooms",
                                     "message": f"list-rooms: {PAGE_BODY}"}
    assert error["id"] == 4


# ---------------------------------------------------------------------- direct messages


def test_direct_messages_shared_room(make: Make) -> None:
    mesh, out = make(A, B, C, direct_messages="shared-room")
    join(mesh, A, "r")
    join(mesh, B, "r")
    out.clear()
    send(mesh, A, "whisper", B, {"x": 1}, to_client=True)
    assert only(out.inbox(B))["sender"] == A
    out.clear()
    send(mesh, A, "whisper", C, to_client=True, rid=1)  # C shares only the lobby with A
    assert_error(out, A, ErrorCode.FORBIDDEN, "whisper", C, rid=1)
    out.clear()
    send(mesh, A, "whisper", "g9.9", to_client=True, rid=2)  # unknown: the same answer
    assert_error(out, A, ErrorCode.FORBIDDEN, "whisper", "g9.9", rid=2)
    assert out.inbox(C) == []


def test_direct_messages_off(make: Make) -> None:
    mesh, out = make(A, B, direct_messages="off")
    join(mesh, A, "r")
    join(mesh, B, "r")
    out.clear()
    send(mesh, A, "whisper", B, to_client=True, rid=1)
    assert_error(out, A, ErrorCode.FORBIDDEN, "whisper", B, rid=1)
    assert out.inbox(B) == []


def test_an_unknown_direct_message_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="direct_messages"):
        new_mesh(direct_messages="friends")


# ---------------------------------------------------------------------- rooms per client


def test_rooms_per_client_is_bounded_without_counting_the_lobby(make: Make) -> None:
    mesh, out = make(A, B, max_rooms_per_client=2)
    join(mesh, A, "r1")
    join(mesh, A, "r2")
    out.clear()
    send(mesh, A, "join-room", "r3", rid=1)
    assert_error(out, A, ErrorCode.TOO_MANY_ROOMS, "join-room", "r3", rid=1)
    out.clear()
    send(mesh, A, "join-room", LOBBY, {"roomname": "r3"}, rid=2)
    assert_error(out, A, ErrorCode.TOO_MANY_ROOMS, "join-room", LOBBY, rid=2)
    assert "r3" not in mesh.rooms
    send(mesh, A, "leave-room", "r1")
    join(mesh, A, "r3")  # room for one more again
    assert mesh.clients[A].rooms == {LOBBY, "r2", "r3"}


def test_watcher_joins_are_not_bound_by_rooms_per_client(make: Make) -> None:
    """Watchers are trusted room logic; the rooms they give a client do count against its own joins."""
    mesh, out = make(A, max_rooms_per_client=1)
    mesh.watcher_hello(W, "game", [], ["g-"], 0.0)
    for room in ("g-1", "g-2", "free"):
        mesh.command(W, 1, Join(A, room))
    assert mesh.clients[A].rooms == {LOBBY, "g-1", "g-2", "free"}
    out.clear()
    send(mesh, A, "join-room", "r", rid=1)
    assert_error(out, A, ErrorCode.TOO_MANY_ROOMS, "join-room", "r", rid=1)
    out.clear()
    send(mesh, A, "join-room", "g-3", rid=2)  # a claimed room: its watcher decides
    assert len(out.of("to_watcher")) == 1


def test_rooms_per_client_holds_through_a_claimed_lobby(make: Make) -> None:
    mesh, out = make(A, max_rooms_per_client=1)
    mesh.watcher_hello(W, "lobby", [LOBBY], [], 0.0)
    join(mesh, A, "r1")
    out.clear()
    send(mesh, A, "join-room", LOBBY, {"roomname": "r2"}, rid=1)
    assert_error(out, A, ErrorCode.TOO_MANY_ROOMS, "join-room", LOBBY, rid=1)
    assert out.of("to_watcher") == []


# ---------------------------------------------------------------------- room names


FORBIDDEN_IN_NAMES = ["\x00", "\x1b", "\n", "\x7f", "\x85", "\u202a", "\u202e", "\u2066", "\u2069"]


@pytest.mark.parametrize("char", FORBIDDEN_IN_NAMES, ids=[f"U+{ord(c):04X}" for c in FORBIDDEN_IN_NAMES])
def test_room_names_with_control_or_bidi_characters_are_refused(make: Make, char: str) -> None:
    mesh, out = make(A)
    mesh.watcher_hello(W, "game", [], ["g-"], 0.0)
    name = f"evil{char}room"
    assert not valid_room_name(name)
    out.clear()
    send(mesh, A, "join-room", name, rid=1)
    send(mesh, A, "join-room", LOBBY, {"roomname": name}, rid=2)
    assert out.errors(A) == ["bad-room-name", "bad-room-name"]
    mesh.command(W, 3, CreateRoom(name))
    mesh.command(W, 4, Join(A, name))
    assert [r[3] for r in out.replies()] == [ErrorCode.BAD_ROOM_NAME, ErrorCode.BAD_ROOM_NAME]
    assert set(mesh.rooms) == {LOBBY}


@pytest.mark.parametrize("name", ["café", "日本語", "👩\u200d💻 devs", "a b", "x" * MAX_ROOM_NAME])
def test_printable_room_names_are_accepted(make: Make, name: str) -> None:
    mesh, out = make(A)
    join(mesh, A, name)
    assert members(mesh, name) == [A]


# ---------------------------------------------------------------------- watcher goodbye and death


def test_a_goodbye_reports_only_the_frames_after_its_acked(make: Make) -> None:
    """A clean stop says which frames it handled: only later ones may not have been."""
    mesh, out = make(A, B)
    watcher(mesh, rooms=("game",))
    send(mesh, A, "move", "game", rid="a1")  # seq 1
    send(mesh, B, "move", "game", rid="b1")  # seq 2
    send(mesh, A, "move", "game", rid="a2")  # seq 3
    out.clear()
    mesh.watcher_goodbye(W, 2)
    assert not mesh.watchers[W].alive
    assert [(m["message_body"]["code"], m["id"]) for m in out.inbox(A)] == [("watcher-restarted", "a2")]
    assert out.inbox(B) == []
    out.clear()
    send(mesh, B, "move", "game", rid="b2")  # its claims stay reserved: not a chat room
    assert out.errors(B) == ["watcher-unavailable"]


def test_a_goodbye_with_everything_acked_reports_nothing(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=("game",))
    send(mesh, A, "move", "game", rid=1)
    out.clear()
    mesh.watcher_goodbye(W, 1)
    mesh.watcher_goodbye(W, 0)  # a second goodbye (or one from a dead watcher) changes nothing
    mesh.watcher_goodbye("nobody", 5)
    assert out.inbox(A) == []


def test_a_disconnected_watcher_answers_pending_frames_before_the_new_one(make: Make) -> None:
    """Found gone when a frame cannot reach it (SIGKILLed): each sender hears of its frames
    in the order it sent them, the older `watcher-restarted` first."""
    mesh, out = make(A, B)
    watcher(mesh, rooms=("game",))
    send(mesh, A, "move", "game", rid=1)
    send(mesh, B, "move", "game", rid=2)
    out.clear()
    out.watcher_accepts = Delivery.GONE
    send(mesh, A, "move", "game", rid=3)
    assert [(m["message_body"]["code"], m["id"]) for m in out.inbox(A)] == [
        ("watcher-restarted", 1), ("watcher-unavailable", 3)]
    assert [(m["message_body"]["code"], m["id"]) for m in out.inbox(B)] == [("watcher-restarted", 2)]
    assert not mesh.watchers[W].alive and mesh.live_watchers() == []
    out.clear()
    send(mesh, B, "move", "game", rid=4)  # dead now: not even tried
    assert out.of("to_watcher") == [] and out.errors(B) == ["watcher-unavailable"]


def test_a_watcher_with_a_full_queue_is_not_gone(make: Make) -> None:
    mesh, out = make(A)
    watcher(mesh, rooms=("game",))
    send(mesh, A, "move", "game", rid=1)
    out.clear()
    out.watcher_accepts = Delivery.FULL
    send(mesh, A, "move", "game", rid=2)
    assert [(m["message_body"]["code"], m["id"]) for m in out.inbox(A)] == [("watcher-unavailable", 2)]
    assert mesh.watchers[W].alive and mesh.live_watchers() == [W]
    assert mesh.watcher_name(W) == "game" and mesh.watcher_name("nobody") == ""


def test_a_room_a_watcher_creates_has_no_maker_and_one_made_by_a_join_has_its_first_member(
        make: Make) -> None:
    """docs/watchers.md (Room life cycle): what RoomState.maker says."""
    mesh, out = make(A, B)
    watcher(mesh, rooms=("table",))
    mesh.command(W, 1, CreateRoom("table"))
    for n, client in enumerate((A, B), start=2):
        mesh.command(W, n, Join(client, "table"))
    mesh.command(W, 4, Remove(A, "table"))
    mesh.command(W, 5, Join(A, "solo"))  # a join command making an unclaimed room
    mesh.command(W, 6, Join(B, "solo"))
    assert [r[3] for r in out.replies()] == [None] * 6
    assert mesh.rooms["table"].view().maker == ""  # never picked, whoever joins or leaves
    assert mesh.rooms["solo"].view().maker == A
    mesh.command(W, 7, Remove(A, "solo"))
    assert mesh.rooms["solo"].view().maker == B  # the earliest joiner left takes over


def test_a_join_command_can_carry_the_clients_request_id_to_its_notice(make: Make) -> None:
    """The Words Battle lobby carries out a plain lobby join with a join command: the
    joiner's client-joined-room carries the frame's id, as a built-in join's does."""
    mesh, out = make(A, B)
    join(mesh, B, "plain")
    out.clear()
    mesh.command(W, 1, Join(A, "plain", b'"j1"'))  # W unknown: refused, nothing joined
    assert out.replies()[0][3] == ErrorCode.UNKNOWN_WATCHER
    watcher(mesh, rooms=(LOBBY,))
    out.clear()
    mesh.command(W, 2, Join(A, "plain", b'"j1"'))
    (mine,) = out.inbox(A)
    assert (mine["action"], mine["target"], mine["id"]) == ("client-joined-room", "plain", "j1")
    (theirs,) = out.inbox(B)
    assert theirs["action"] == "client-joined-room" and "id" not in theirs
