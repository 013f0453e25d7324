"""What a resume position and a `history` request mean, exactly as docs/protocol.md
("Sessions and resume") says (issue 20, "Also found"): a room frame's epoch is a valid
resume epoch (its processor part counts); a session lost with a processor restart is
`history-lost`, not `unknown-session`; `history` without `since` starts at the oldest
message held, however many were dropped before it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from meshstream_zmq import protocol

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


def resume(mesh: Any, out: RecordingOutbox, client: str, epoch: str, seq: int) -> dict[str, Any]:
    out.clear()
    mesh.resume("g3", "L", h(f"s-{client}"), h(f"new-{client}"), "", epoch, seq, 1.0)
    (call,) = out.of("resumed")
    return {"client": call[3], "reason": call[4], "replay": [json.loads(f) for f in call[6]]}


def test_a_room_frame_s_epoch_and_seq_resume_as_the_docs_say() -> None:
    """The last frame received was a room message: its `epoch` is the room's
    (`<processor epoch>.<n>`); resuming with it and its `seq` replays what came after."""
    mesh, out = mesh_with(A, B)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    send(mesh, B, "say", "r", {"n": 1})
    last = out.stream(A)[-1]
    assert last["epoch"] == f"{EPOCH}.2" and last["message_body"] == {"n": 1}
    mesh.client_away(A, 1.0, "g1")
    send(mesh, B, "say", "r", {"n": 2})
    answer = resume(mesh, out, A, last["epoch"], last["seq"])
    assert answer["reason"] == "" and answer["client"] == A
    assert [m["message_body"] for m in answer["replay"]] == [{"n": 2}]
    mesh.check()


def test_a_room_epoch_of_another_processor_is_still_history_lost() -> None:
    mesh, out = mesh_with(A)
    mesh.client_away(A, 1.0, "g1")
    assert resume(mesh, out, A, "0ld.2", 1)["reason"] == "history-lost"
    mesh.check()


def test_a_session_lost_with_a_processor_restart_is_history_lost() -> None:
    """After a restart the new processor knows only the sessions the gateways list: an
    away one resuming with the old epoch is told `history-lost` (its messages are gone),
    not `unknown-session`; an unknown secret with our own epoch, or none, stays
    `unknown-session`."""
    mesh, out = mesh_with(A)  # the new processor: B's session died with the old one
    assert resume(mesh, out, B, "0ld", 17)["reason"] == "history-lost"
    assert resume(mesh, out, B, "0ld.3", 17)["reason"] == "history-lost"
    assert resume(mesh, out, B, EPOCH, 0)["reason"] == "unknown-session"
    assert resume(mesh, out, B, "", 0)["reason"] == "unknown-session"
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
