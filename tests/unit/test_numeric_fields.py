"""Every number a client sends, of every size and type, at every field that reads one
(docs/protocol.md, Frames, "Numbers"): the frame's `id`, `history` `since` and `limit`,
`list-rooms` and `list-members` `limit`, and a resume's `seq`. Each is driven through the
real client codec (`protocol.parse`, the gateway core's resume query and ResumeRequest)
into the real `Mesh`; the answer is the documented one (a normal reply, `bad-body`,
`bad-id`, `bad-json`; a resume resumed or refused for a documented reason) and nothing
raises: one `since` of 2**63 used to crash the processor (issue 20, item 1), a resume
`seq` over 2**64 - 1 the gateway's handshake (item 2).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq import protocol
from meshstream_zmq.core import Mesh
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.gateway import Gateway, parse_resume
from meshstream_zmq.protocol import MAX_INTEGER, MAX_POSITION, MIN_INTEGER
from meshstream_zmq.wire import resume_positions

from .outbox import RecordingOutbox, new_mesh
from .test_gateway_core import Outbox as GatewayOutbox

NUMERIC = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EPOCH = "e1"
A, B = "g1.1", "g2.1"

EDGES = [0, 1, -1, 100, 101, MAX_POSITION, MAX_POSITION + 1, 2**64 - 1, 2**64, MIN_INTEGER,
         MIN_INTEGER - 1, 10**30, -(10**30), 2**1000]
# Anything JSON can carry where a number is expected: integers of every size (hypothesis's
# own and the edges), bools, floats (finite and not: Infinity is not JSON), strings of
# digits, null.
values = (st.integers() | st.sampled_from(EDGES) | st.booleans() | st.floats(allow_nan=False)
          | st.text("0123456789", min_size=1, max_size=25) | st.none())
ACTIONS = {"history": ("r", ("since", "limit")), "list-rooms": ("", ("limit",)),
           "list-members": ("r", ("limit",))}
REPLIES = {"history": "history", "list-rooms": "room-list", "list-members": "member-list"}


def fresh() -> tuple[Mesh, RecordingOutbox]:
    """A in room r (with a few messages), B connected; both could resume (sessions)."""
    mesh, out = new_mesh(epoch=EPOCH, resume_window=60.0)
    for client in (A, B):
        mesh.client_connected(client, 0.0, session_hash=session(client))
    mesh.client_frame(A, "join-room", "r")
    for n in range(3):
        mesh.client_frame(A, "say", "r", protocol.encode_body({"n": n}))
    out.clear()
    return mesh, out


def session(client: str) -> bytes:
    return hashlib.sha256(f"s-{client}".encode()).digest()


def answer(mesh: Mesh, out: RecordingOutbox, text: str) -> dict[str, Any]:
    """What A is told about one frame: the gateway's rejection, or the mesh's one reply."""
    parsed = protocol.parse(text)
    if isinstance(parsed, protocol.Rejected):
        return {"action": "error", "message_body": {"code": parsed.code.value}}
    mesh.client_frame(A, parsed.action, parsed.target, parsed.body, parsed.is_target_client,
                      parsed.request_id)
    (reply,) = out.stream(A)
    mesh.check()
    return reply


def outcome(reply: dict[str, Any]) -> str:
    return str(reply["message_body"]["code"]) if reply["action"] == "error" else str(reply["action"])


def finite(value: object) -> bool:
    return not isinstance(value, float) or value not in (float("inf"), float("-inf"))


def documented_id(value: object) -> str:
    """What the docs promise for an `id` (Frames, Numbers; Errors)."""
    if not finite(value):
        return "bad-json"
    if isinstance(value, bool) or value is None:
        return "bad-id"
    if isinstance(value, int) and not MIN_INTEGER <= value <= MAX_INTEGER:
        return "bad-id"
    return ""


def documented_field(field: str, value: object) -> str:
    """What the docs promise for a body field: "" if accepted."""
    if not finite(value):
        return "bad-json"
    if value is None:  # null counts as absent
        return ""
    if type(value) is not int:
        return "bad-body"
    low = 0 if field == "since" else MIN_INTEGER
    return "" if low <= value <= (MAX_POSITION if field == "since" else MAX_INTEGER) else "bad-body"


@NUMERIC
@given(action=st.sampled_from(sorted(ACTIONS)), data=st.data())
@example(action="history", data=None)  # issue 20's frame, exactly (see below)
def test_every_numeric_body_field_gets_its_documented_answer(action: str,
                                                             data: st.DataObject | None) -> None:
    target, fields = ACTIONS[action]
    if data is None:
        body: dict[str, object] = {"since": 9223372036854775808}
    else:
        body = {f: v for f in fields if (v := data.draw(values | st.just("absent"))) != "absent"}
    mesh, out = fresh()
    reply = answer(mesh, out, json.dumps({"action": action, "target": target, "message_body": body,
                                          "id": 7}))
    refused = [code for f, v in body.items() if (code := documented_field(f, v))]
    if "bad-json" in refused:
        assert outcome(reply) == "bad-json"
    elif refused:
        assert outcome(reply) == ErrorCode.BAD_BODY.value and reply["id"] == 7
        assert reply["message_body"]["action"] == action
    else:
        assert outcome(reply) == REPLIES[action] and reply["id"] == 7
        if action == "history":
            since = body.get("since")
            offsets = [m["offset"] for m in reply["message_body"]["messages"]]
            assert all(o > (since or 0) for o in offsets)


@NUMERIC
@given(value=values, action=st.sampled_from([*sorted(ACTIONS), "say", "join-room"]))
def test_every_id_gets_its_documented_answer(value: object, action: str) -> None:
    mesh, out = fresh()
    target = ACTIONS.get(action, ("r", ()))[0]
    reply = answer(mesh, out, json.dumps({"action": action, "target": target, "id": value}))
    expected = documented_id(value)
    if expected:
        assert outcome(reply) == expected
    else:
        assert reply["action"] != "error" or outcome(reply) == "already-member", reply
        assert reply["id"] == value  # carried back as sent


@NUMERIC
@given(digits=st.integers(1, 6000), field=st.sampled_from(["since", "limit", "id"]))
def test_a_number_of_thousands_of_digits_is_bad_json_or_answered(digits: int, field: str) -> None:
    """Python will not read an integer of more than 4300 digits (its int-to-str limit):
    such a frame is `bad-json`, not an exception."""
    literal = "9" * digits
    if field == "id":
        text = f'{{"action":"list-rooms","id":{literal}}}'
    else:
        text = f'{{"action":"history","target":"r","message_body":{{"{field}":{literal}}}}}'
    mesh, out = fresh()
    code = outcome(answer(mesh, out, text))
    if digits > 4300:
        assert code == ErrorCode.BAD_JSON.value
    elif digits > 18:  # above 2**63 - 1
        assert code == (ErrorCode.BAD_ID if field == "id" else ErrorCode.BAD_BODY).value
    else:
        assert code in ("history", "room-list")


# ------------------------------------------------------------------ resume positions

seq_texts = (values.map(lambda v: json.dumps(v) if not isinstance(v, str) else v)
             | st.sampled_from(["99999999999999999999", "18446744073709551616", "²", "٣", "-0",
                                "+5", " 5", "5 ", "0x10", "1e3", "0" * 40 + "5", ""])
             | st.text(max_size=30))
epochs = st.sampled_from([EPOCH, f"{EPOCH}.1", f"{EPOCH}.2", f"{EPOCH}.99", "e0", "e0.1", "",
                          "x" * 70])


@NUMERIC
@given(secret=st.sampled_from([f"s-{A}", "unknown", ""]), epoch=epochs, seq=seq_texts,
       room_epoch=epochs, room_seq=seq_texts, away=st.booleans())
@example(secret=f"s-{A}", epoch=EPOCH, seq="99999999999999999999", room_epoch="", room_seq="",
         away=True)  # issue 20, item 2
def test_every_resume_position_is_parsed_asked_and_answered(secret: str, epoch: str, seq: str,
                                                            room_epoch: str, room_seq: str,
                                                            away: bool) -> None:
    """`?resume=&positions=<epoch>:<n>,…` through the gateway core (parse_resume, then the
    ResumeRequest it builds, encoded as on the wire) to the mesh: never an exception, and
    each position valid or ignored as the docs say."""
    resume = parse_resume(secret, f"{epoch}:{seq},{room_epoch}:{room_seq},{EPOCH}.1:0")
    assert resume is not None

    def valid(text: str) -> tuple[tuple[str, int], ...]:
        e, _, n = text.rpartition(":")
        ok = (bool(e) and len(e) <= 64 and n.isascii() and n.isdigit() and len(n) <= 32
              and int(n) <= MAX_POSITION)
        return ((e, int(n)),) if ok else ()

    assert resume.positions == (valid(f"{epoch}:{seq}") + valid(f"{room_epoch}:{room_seq}")
                                + ((f"{EPOCH}.1", 0),))

    gateway = Gateway("gw3-x", 3, GatewayOutbox(), send_queue=1 << 20)
    gateway.processor_out(pb.GatewayOut(seq=1, epoch=EPOCH,
                                        ops=[pb.GatewayOp(welcome=pb.Welcome(epoch=EPOCH))]))
    conn = gateway.connect("L1", 0.0, resume=resume)
    assert conn is not None
    wire = pb.GatewayBatch.FromString(gateway.batch.SerializeToString())
    (request,) = [i.resume for i in wire.items if i.WhichOneof("kind") == "resume"]
    positions = resume_positions(request)
    expected: dict[str, int] = {}
    for e, n in resume.positions:
        expected.setdefault(e, n)  # the first of an epoch named twice
    assert positions == expected

    mesh, out = fresh()
    if away:
        mesh.client_away(A, 0.0, "g1")
    streams = [(mesh.history.direct, A, EPOCH)] + [
        (mesh.history.rooms, name, room.epoch) for name, room in mesh.rooms.items()]
    held = all(pool.after(key, positions[e]) is not None for pool, key, e in streams if e in positions)
    mesh.resume("gw3-x", request.link, request.session_hash, request.new_session_hash,
                request.user, positions, 1.0)
    (call,) = out.of("resumed")
    reason = call[4]
    theirs = any(e.partition(".")[0] != EPOCH for e in positions)  # another processor's
    if secret != f"s-{A}":
        assert reason == ("history-lost" if theirs else "unknown-session")
    else:
        assert reason == ("" if held and not theirs else "history-lost"), (positions, call)
    mesh.check()


def test_the_mesh_itself_takes_any_offset() -> None:
    """Gateways are trusted, but the mesh does not rely on them for its own safety: an
    offset out of range is one the stream never reached, so history-lost."""
    for offset in (-1, MAX_POSITION, MAX_POSITION + 1, 2**64, 10**30, True):
        for epoch in (EPOCH, f"{EPOCH}.1"):
            mesh, out = fresh()
            mesh.client_away(A, 0.0, "g1")
            mesh.resume("g3", "L", session(A), b"n" * 32, "", {epoch: offset}, 1.0)
            (call,) = out.of("resumed")
            assert call[4] == "history-lost", (offset, call)
            mesh.check()
