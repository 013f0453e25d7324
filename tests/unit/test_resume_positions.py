"""What resume positions and a `history` request mean, exactly as docs/protocol.md
("Sessions and resume", "Positions") says: a position per stream, named by its epoch (a
room's, or the processor's for the client's direct messages), each exact; a stream left
out, or named by an epoch it no longer has, is replayed from when the session went away
(in a room, from its join, if later); a session lost with a processor restart is `history-lost`, not
`unknown-session`; `history` without `since` starts at the oldest message held, however
many were dropped before it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from meshstream_zmq import protocol
from meshstream_zmq.client import Session
from meshstream_zmq.commands import CreateRoom, DeleteRoom, Join, SendClients, SendRoom

from .outbox import RecordingOutbox, new_mesh, send

EPOCH = "9f3c"
A, B = "g1.1", "g2.1"


def h(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def mesh_with(*clients: str, **kwargs: Any) -> tuple[Any, RecordingOutbox]:
    mesh, out = new_mesh(epoch=EPOCH, resume_window=60.0, **kwargs)
    for client in clients:
        mesh.client_connected(client, 0.0, session_hash=h(f"s-{client}"))
    return mesh, out


def resume(mesh: Any, out: RecordingOutbox, client: str,
           positions: dict[str, int] | None = None) -> dict[str, Any]:
    out.clear()
    mesh.resume("g3", "L", h(f"s-{client}"), h(f"new-{client}"), "", positions or {}, 1.0)
    (call,) = out.of("resumed")
    return {"client": call[3], "reason": call[4], "replay": [json.loads(f) for f in call[6]]}


def received(session: Session, out: RecordingOutbox, client: str) -> Session:
    """`session` fed what `out` sent `client` since it was last cleared."""
    for frame in out.stream(client):
        assert session.accept(frame), frame  # nothing came twice
    return session


def bodies(answer: dict[str, Any]) -> list[Any]:
    return [(m["target"], m["message_body"].get("n")) for m in answer["replay"]]


def test_each_stream_resumes_from_its_own_position_exactly() -> None:
    """Messages the processor sent while the client was still connected, but that never
    reached it (lost with its connection), come back: the positions say what it had."""
    mesh, out = mesh_with(A, B)
    for room in ("r", "s"):
        send(mesh, A, "join-room", room)
        send(mesh, B, "join-room", room)
    send(mesh, B, "say", "r", {"n": 1})
    send(mesh, B, "whisper", A, {"n": 2}, to_client=True)
    session = received(Session(epoch=EPOCH, positions={EPOCH: 0}, client=A), out, A)
    out.clear()
    send(mesh, B, "say", "s", {"n": 3})  # sent to A's gateway, lost on the way
    send(mesh, B, "whisper", A, {"n": 4}, to_client=True)
    send(mesh, B, "say", "r", {"n": 5})
    mesh.client_away(A, 1.0, "g1")  # only now does the processor know
    send(mesh, B, "say", "r", {"n": 6})
    r, s = mesh.rooms["r"].epoch, mesh.rooms["s"].epoch
    assert session.positions == {r: 3, s: 2, EPOCH: 1}
    answer = resume(mesh, out, A, session.positions)
    assert answer["reason"] == "" and answer["client"] == A
    assert bodies(answer) == [("s", 3), (A, 4), ("r", 5), ("r", 6)]  # in the order sent
    received(session, out, A)  # and the library finds each new
    mesh.check()


def test_a_stream_left_out_is_replayed_from_when_the_session_went_away() -> None:
    mesh, out = mesh_with(A, B)
    for room in ("r", "s"):
        send(mesh, A, "join-room", room)
        send(mesh, B, "join-room", room)
    r_epoch = mesh.rooms["r"].epoch
    send(mesh, B, "say", "r", {"n": 1})  # A had r up to its joins
    send(mesh, B, "say", "s", {"n": 2})  # lost with the connection: s is not named, so gone
    mesh.client_away(A, 1.0, "g1")
    send(mesh, B, "say", "s", {"n": 3})
    send(mesh, B, "say", "r", {"n": 4})
    answer = resume(mesh, out, A, {EPOCH: 0, r_epoch: 2})
    assert bodies(answer) == [("r", 1), ("s", 3), ("r", 4)]
    mesh.check()


def test_a_room_made_again_while_away_is_replayed_from_the_join() -> None:
    mesh, out = mesh_with(A, B)
    mesh.watcher_hello("w", "game", [], ["w-"], 0.0)
    mesh.command("w", 1, CreateRoom("w-g"))
    mesh.command("w", 2, Join(A, "w-g"))
    old = mesh.rooms["w-g"].epoch
    mesh.client_away(A, 1.0, "g1")
    mesh.command("w", 3, DeleteRoom("w-g"))
    mesh.command("w", 4, CreateRoom("w-g"))
    mesh.command("w", 5, SendRoom("w-g", protocol.encode("state", "w-g", b'{"n":1}')))
    mesh.command("w", 6, Join(A, "w-g"))
    mesh.command("w", 7, SendRoom("w-g", protocol.encode("state", "w-g", b'{"n":2}')))
    answer = resume(mesh, out, A, {EPOCH: 0, old: 5})  # a position in the old room
    assert answer["reason"] == ""
    assert [(m["action"], m["message_body"].get("n")) for m in answer["replay"]] == [("state", 2)]
    assert {m["epoch"] for m in answer["replay"]} == {mesh.rooms["w-g"].epoch} != {old}
    mesh.check()


def test_a_direct_message_to_a_room_target_is_in_the_direct_stream() -> None:
    """A watcher may address a client's message to a room (Words Battle does): its epoch,
    the processor's, says it is one of the client's direct messages."""
    mesh, out = mesh_with(A)
    mesh.watcher_hello("w", "bot", [], [], 0.0)
    send(mesh, A, "join-room", "r")
    mesh.command("w", 1, SendClients((A,), protocol.encode("hint", "r", b'{"n":1}')))
    (hint,) = [m for m in out.stream(A) if m["action"] == "hint"]
    assert (hint["target"], hint["epoch"], hint["offset"]) == ("r", EPOCH, 1)


def test_a_position_past_its_streams_newest_is_history_lost_and_ends_the_session() -> None:
    for positions in [{EPOCH: 5},  # no direct message was ever sent to it
                      {f"{EPOCH}.2": 99}]:  # the room never reached 99
        mesh, out = mesh_with(A, B)
        send(mesh, A, "join-room", "r")
        send(mesh, B, "join-room", "r")
        mesh.client_away(A, 1.0, "g1")
        out.clear()
        assert resume(mesh, out, A, positions)["reason"] == "history-lost", positions
        assert A not in mesh.clients
        assert [m["action"] for m in out.inbox(B)] == ["client-left-room"]  # never a silent gap
        mesh.check()


def test_a_session_lost_with_a_processor_restart_is_history_lost() -> None:
    """After a restart the new processor knows only the sessions the gateways list: an
    away one resuming with positions of the old epoch is told `history-lost` (its messages
    are gone), not `unknown-session`; an unknown secret with our own epochs, or none,
    stays `unknown-session`."""
    mesh, out = mesh_with(A)  # the new processor: B's session died with the old one
    assert resume(mesh, out, B, {"0ld": 17})["reason"] == "history-lost"
    assert resume(mesh, out, B, {EPOCH: 0, "0ld.3": 17})["reason"] == "history-lost"
    assert resume(mesh, out, B, {EPOCH: 0, f"{EPOCH}.1": 2})["reason"] == "unknown-session"
    assert resume(mesh, out, B)["reason"] == "unknown-session"
    mesh.check()


def history(mesh: Any, out: RecordingOutbox, client: str, room: str, **body: Any) -> dict[str, Any]:
    out.clear()
    send(mesh, client, "history", room, body or None, rid=1)
    (reply,) = out.stream(client)
    return dict(reply["message_body"])


def test_history_without_since_is_from_the_oldest_held_once_older_were_dropped() -> None:
    mesh, out = mesh_with(A, history_size=2)
    send(mesh, A, "join-room", "r")
    for n in range(3):
        send(mesh, A, "say", "r", {"n": n})
    page = history(mesh, out, A, "r")
    assert [m["offset"] for m in page["messages"]] == [3, 4] and page["next"] is None
    page = history(mesh, out, A, "r", since=None, limit=1)  # null counts as absent
    assert [m["offset"] for m in page["messages"]] == [3] and page["next"] == 3
    assert history(mesh, out, A, "r", since=0)["code"] == "history-lost"  # a position: no gap
    mesh.check()


def test_history_without_since_of_a_room_whose_messages_all_aged_out_is_empty() -> None:
    mesh, out = mesh_with(A, history_age=10.0)
    send(mesh, A, "join-room", "r")
    send(mesh, A, "say", "r", {"n": 1})
    mesh.gateway_seen("g1", 20.0)
    mesh.expire(20.0)
    assert history(mesh, out, A, "r") == {"epoch": f"{EPOCH}.2", "messages": [], "next": None}
    assert history(mesh, out, A, "r", since=0)["code"] == "history-lost"
    assert history(mesh, out, A, "r", since=protocol.MAX_POSITION)["messages"] == []
    mesh.check()
