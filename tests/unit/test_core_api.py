"""The core's commands behind the server API (docs/api.md): positions of room sends,
commands by user, room pages with users, history pages, idempotency keys."""

from __future__ import annotations

import json

import pytest

from meshstream_zmq import LOBBY, protocol
from meshstream_zmq.commands import (
    Disconnect,
    Query,
    QueryWhat,
    Remove,
    SendClients,
    SendRoom,
)
from meshstream_zmq.core import IDEMPOTENCY_AGE, IDEMPOTENCY_KEYS, Mesh
from meshstream_zmq.errors import CloseCode, ErrorCode

from .outbox import RecordingOutbox, new_mesh, send

W = "w-1"
A, A2, A3 = "g1.1", "g1.2", "g2.1"  # user ann's three connections, on two gateways
B = "g2.2"  # user bob


@pytest.fixture
def mesh() -> tuple[Mesh, RecordingOutbox]:
    mesh, out = new_mesh(resume_window=60.0)
    for client, user in ((A, "ann"), (A2, "ann"), (A3, "ann"), (B, "bob")):
        mesh.client_connected(client, 0.0, user=user, session_hash=client.encode().ljust(32, b"#"))
    for client in (A, A2, B):
        send(mesh, client, "join-room", "r")
    mesh.watcher_hello(W, "api.g9", [], [], 0.0)
    out.clear()
    yield mesh, out
    mesh.check()


def publish(data: dict[str, object], room: str = "r") -> SendRoom:
    return SendRoom(room, protocol.encode("publish", room, protocol.encode_body(data), "meshstream"))


def reply(out: RecordingOutbox, command: int) -> tuple[ErrorCode | None, str]:
    (r,) = [r for r in out.replies() if r[2] == command]
    return r[3], r[4]


def test_a_room_send_is_answered_with_its_offset_and_the_rooms_epoch(
        mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    m.command(W, 1, publish({"n": 1}))
    m.command(W, 2, publish({"n": 2}))
    epoch = m.rooms["r"].epoch
    offsets = [out.answers[i].offset for i in (1, 2)]
    assert offsets[1] == offsets[0] + 1 and {out.answers[i].epoch for i in (1, 2)} == {epoch}
    received = [f for f in out.inboxes[B] if f["action"] == "publish"]
    assert [(f["offset"], f["epoch"], f["message_body"]) for f in received] == [
        (offsets[0], epoch, {"n": 1}), (offsets[1], epoch, {"n": 2})]
    assert received[0]["sender"] == "meshstream" and received[0]["target"] == "r"


def test_send_to_a_user_reaches_each_of_its_connections_and_only_them(
        mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    m.client_away(A3, 1.0)  # away: its copy is held for its resume
    frame = protocol.encode("send", "", b'{"hi":1}', "meshstream", is_target_client=True)
    m.command(W, 1, SendClients((), frame, user="ann"))
    assert reply(out, 1) == (None, "") and out.answers[1].clients == (A, A2, A3)
    assert [f["message_body"] for f in out.inboxes[A]] == [{"hi": 1}]
    assert [f["message_body"] for f in out.inboxes[A2]] == [{"hi": 1}]
    assert out.inboxes[B] == [] and out.inboxes[A3] == []
    m.command(W, 2, SendClients((), frame, user="nobody"))  # no connection: reached none
    assert reply(out, 2) == (None, "") and out.answers[2].clients == ()


def test_disconnect_a_user_closes_every_connection_with_the_code_and_reason(
        mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    m.command(W, 1, Disconnect("", 4020, "banned", user="ann"))
    assert out.answers[1].clients == (A, A2, A3)
    assert sorted(c[1:] for c in out.of("close")) == [
        ("g1", A, 4020, "banned"), ("g1", A2, 4020, "banned"), ("g2", A3, 4020, "banned")]
    m.command(W, 2, Disconnect(B))
    assert out.of("close")[-1][1:] == ("g2", B, CloseCode.DISCONNECTED, "disconnected by watcher")


def test_remove_a_user_from_a_room_takes_out_only_its_clients_in_it(
        mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    m.command(W, 1, Remove("", "r", user="ann"))
    assert out.answers[1].clients == (A, A2)  # A3 is not in it
    assert list(m.rooms["r"].members) == [B]
    left = [f for f in out.inboxes[B] if f["action"] == "client-left-room"]
    assert [f["sender"] for f in left] == [A, A2]
    m.command(W, 2, Remove("", "nowhere", user="ann"))
    assert reply(out, 2)[0] is ErrorCode.UNKNOWN_ROOM
    m.command(W, 3, Remove("", LOBBY, user="ann"))
    assert reply(out, 3)[0] is ErrorCode.CANNOT_LEAVE_LOBBY


def test_a_room_page_lists_rooms_by_name_with_counts(mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    for i in range(5):
        send(m, A, "join-room", f"room-{i}")
    m.command(W, 1, Query(QueryWhat.ROOM_PAGE, limit=3))
    first = out.answers[1]
    assert [(v.name, v.count) for v in first.rooms] == [(LOBBY, 4), ("r", 3), ("room-0", 1)]
    assert first.next == "room-0" and all(v.members == [] for v in first.rooms)
    m.command(W, 2, Query(QueryWhat.ROOM_PAGE, limit=3, after=first.next))
    assert [v.name for v in out.answers[2].rooms] == ["room-1", "room-2", "room-3"]
    m.command(W, 3, Query(QueryWhat.ROOM_PAGE, limit=3, after="room-3"))
    assert [v.name for v in out.answers[3].rooms] == ["room-4"] and out.answers[3].next == ""


def test_a_room_query_with_a_limit_pages_members_with_their_users(mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    m.command(W, 1, publish({}))
    m.command(W, 2, Query(QueryWhat.ROOM, room="r", limit=2))
    (view,) = out.answers[2].rooms
    assert (view.members, view.users, view.count) == ([A, A2], ["ann", "ann"], 3)
    assert (view.epoch, view.offset) == (m.rooms["r"].epoch, out.answers[1].offset)
    m.command(W, 3, Query(QueryWhat.ROOM, room="r", limit=2, after=out.answers[2].next))
    (rest,) = out.answers[3].rooms
    assert (rest.members, rest.users, out.answers[3].next) == ([B], ["bob"], "")
    m.command(W, 4, Query(QueryWhat.ROOM, room="gone", limit=2))
    assert reply(out, 4)[0] is ErrorCode.UNKNOWN_ROOM


def test_a_history_query_pages_the_held_messages(mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    for n in range(5):
        m.command(W, 10 + n, publish({"n": n}))
    first = out.answers[10].offset
    m.command(W, 1, Query(QueryWhat.HISTORY, room="r", since=first - 1, limit=3))
    page = out.answers[1]
    assert [json.loads(f)["message_body"] for f in page.messages] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert page.epoch == m.rooms["r"].epoch and page.since == first + 2
    m.command(W, 2, Query(QueryWhat.HISTORY, room="r", since=page.since, limit=3))
    assert [json.loads(f)["message_body"] for f in out.answers[2].messages] == [{"n": 3}, {"n": 4}]
    assert out.answers[2].since is None
    m.command(W, 3, Query(QueryWhat.HISTORY, room="r"))  # from the oldest held
    assert len(out.answers[3].messages) == 5 + 3  # the three joins too
    m.command(W, 4, Query(QueryWhat.HISTORY, room="nowhere"))
    assert reply(out, 4)[0] is ErrorCode.UNKNOWN_ROOM


def test_history_lost_once_the_messages_asked_for_are_gone() -> None:
    m, out = new_mesh(history_size=2)
    m.client_connected(A, 0.0)
    send(m, A, "join-room", "r")
    m.watcher_hello(W, "api", [], [], 0.0)
    for n in range(4):
        m.command(W, 10 + n, publish({"n": n}))
    m.command(W, 1, Query(QueryWhat.HISTORY, room="r", since=0))
    assert reply(out, 1)[0] is ErrorCode.HISTORY_LOST
    m.command(W, 2, Query(QueryWhat.HISTORY, room="r", since=2**64 - 1))
    assert reply(out, 2)[0] is ErrorCode.BAD_COMMAND


def test_a_repeated_idempotency_key_is_not_applied_again_and_gets_the_first_answer(
        mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    m.command(W, 1, publish({"n": 1}), idempotency_key="k1")
    m.watcher_hello("w-2", "api.g8", [], [], 0.0)  # another gateway's: the table is the processor's
    m.command("w-2", 2, publish({"n": 1}), idempotency_key="k1")
    assert out.answers[2] == out.answers[1]
    assert [f["message_body"] for f in out.inboxes[B] if f["action"] == "publish"] == [{"n": 1}]
    m.expire(IDEMPOTENCY_AGE + 1)  # forgotten after five minutes: applied again
    m.watcher_hello(W, "api.g9", [], [], IDEMPOTENCY_AGE + 1)
    m.command(W, 3, publish({"n": 1}), idempotency_key="k1")
    assert out.answers[3].offset == out.answers[1].offset + 1


def test_a_failure_is_not_remembered_and_a_long_key_is_refused(mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    m.command(W, 1, publish({}, room="later"), idempotency_key="k")
    assert reply(out, 1)[0] is ErrorCode.UNKNOWN_ROOM
    send(m, A, "join-room", "later")
    m.command(W, 2, publish({}, room="later"), idempotency_key="k")
    assert reply(out, 2) == (None, "") and out.answers[2].offset > 0
    m.command(W, 3, publish({}), idempotency_key="k" * 129)
    assert reply(out, 3)[0] is ErrorCode.BAD_COMMAND


def test_the_idempotency_table_is_bounded_and_in_the_snapshot(mesh: tuple[Mesh, RecordingOutbox]) -> None:
    m, out = mesh
    for i in range(IDEMPOTENCY_KEYS + 1):
        m.command(W, i + 1, Disconnect(B), idempotency_key=f"k{i}")
    assert len(m.idempotent) == IDEMPOTENCY_KEYS and "k0" not in m.idempotent
    assert m.snapshot()["idempotent"]["k1"] == (0.0, None)
