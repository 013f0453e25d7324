"""meshstream_zmq.wire: the hand-encoded GatewayOut ops are exactly what protobuf would
produce, and every watcher Command decodes to its typed form (or to bad-command)."""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, get_args

import jwt
import pytest

from meshstream_zmq import SERVER_SENDER, protocol
from meshstream_zmq import meshstream_pb2 as pb
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
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.link import Peers
from meshstream_zmq.wire import BadCommand, decode_command, deliver_op, varint
from services.processor import Processor, ZmqOutbox, room_pass

from .outbox import new_mesh

NO_FRAME = "message needs an action and a JSON object body"


class FakePub:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)


@pytest.mark.parametrize("n", [1, 127, 128, 300, 16383, 16384, 2**21, 2**35])
def test_varint(n: int) -> None:
    assert pb.GatewayOut(seq=n).SerializeToString() == b"\x10" + varint(n)


@pytest.mark.parametrize("kwargs", [
    {"frame": b'{"action":"x"}', "room": "r1"},
    {"frame": b"y" * 300, "room": "r\u00e9", "exclude": ["gw1-a.1", "gw1-a.2"]},
    {"frame": b"z" * 70000, "clients": ["gw2-b.7"]},
    {"frame": b"", "clients": ["a", "b"]},
    {"frame": b"v" * 200, "room": "x" * 200},
    {"frame": b"w" * 20000, "room": "big"},
    {"frame": b"u" * 16300, "room": "edge" * 30},
])
def test_deliver_op_matches_protobuf(kwargs: dict[str, Any]) -> None:
    op = pb.GatewayOp(deliver=pb.Deliver(**kwargs))
    expected = pb.GatewayOut(ops=[op]).SerializeToString()
    got = deliver_op(kwargs["frame"], kwargs.get("clients", ()), kwargs.get("room", ""),
                      kwargs.get("exclude", ()))
    assert got == expected


def test_flush_builds_one_gatewayout_per_gateway() -> None:
    pub = FakePub()
    out = ZmqOutbox(pub, None, "ep1")  # type: ignore[arg-type]
    frame = b'{"action":"a"}'
    out.broadcast(["gw1-x", "gw2-y"], "r", frame, exclude=("gw1-x.1",))  # one op, both gateways
    out.membership("gw1-x", "gw1-x.1", "r", True)
    out.deliver("gw1-x", b"direct", clients=("gw1-x.2",))
    out.close("gw2-y", "gw2-y.3", 4000, "bye")
    out.welcome_gateway("gw2-y")
    out.flush(0.0)
    out.deliver("gw1-x", frame, room="r")
    out.flush(0.0)
    assert len(pub.sent) == 3
    g1 = pb.GatewayOut.FromString(pub.sent[0][1])
    assert pub.sent[0][0] == b"gw1-x."
    assert g1 == pb.GatewayOut(seq=1, epoch="ep1", ops=[
        pb.GatewayOp(deliver=pb.Deliver(frame=frame, room="r", exclude=["gw1-x.1"])),
        pb.GatewayOp(joined=pb.Membership(client="gw1-x.1", room="r")),
        pb.GatewayOp(deliver=pb.Deliver(frame=b"direct", clients=["gw1-x.2"])),
    ])
    g2 = pb.GatewayOut.FromString(pub.sent[1][1])
    assert g2 == pb.GatewayOut(seq=1, epoch="ep1", ops=[
        pb.GatewayOp(deliver=pb.Deliver(frame=frame, room="r", exclude=["gw1-x.1"])),
        pb.GatewayOp(close=pb.CloseClient(client="gw2-y.3", code=4000, reason="bye")),
        pb.GatewayOp(welcome=pb.Welcome(epoch="ep1")),
    ])
    assert pb.GatewayOut.FromString(pub.sent[2][1]) == pb.GatewayOut(seq=2, epoch="ep1", ops=[
        pb.GatewayOp(deliver=pb.Deliver(frame=frame, room="r"))])


@pytest.mark.parametrize("n", [0, 1, 126, 127, 128, 129, 300, 16300, 16379, 16380, 16381, 16383, 16384,
                               20000])
def test_room_deliveries_of_every_size_match_protobuf(n: int) -> None:
    frame = b"f" * n
    for room in ("r", "room-" + "x" * 120):
        expected = pb.GatewayOut(ops=[pb.GatewayOp(deliver=pb.Deliver(frame=frame, room=room))])
        assert deliver_op(frame, (), room, ()) == expected.SerializeToString()


# ------------------------------------------------------------ watcher commands, decoded once

MSG = pb.ClientMessage(action="say", body=b'{"x":1}', sender="bot")
DECODED: list[tuple[pb.Command, Command]] = [
    (pb.Command(create_room=pb.CreateRoom(room="g-1", watcher="game", settings={"limit": "2"})),
     CreateRoom("g-1", "game", {"limit": "2"})),
    (pb.Command(create_room=pb.CreateRoom(room="g-1")), CreateRoom("g-1")),
    (pb.Command(delete_room=pb.RoomRef(room="g-1")), DeleteRoom("g-1")),
    (pb.Command(join=pb.Membership(client="g1.1", room="r")), Join("g1.1", "r")),
    (pb.Command(remove=pb.Membership(client="g1.1", room="r")), Remove("g1.1", "r")),
    (pb.Command(send_room=pb.SendToRoom(room="r", message=MSG, exclude=["g1.1"])),
     SendRoom("r", protocol.encode("say", "r", MSG.body, "bot"), ("g1.1",))),
    (pb.Command(send_clients=pb.SendToClients(clients=["g1.1"], message=MSG)),
     SendClients(("g1.1",), protocol.encode("say", "g1.1", MSG.body, "bot"))),
    (pb.Command(send_clients=pb.SendToClients(clients=["g1.1", "g2.1"],
                                              message=pb.ClientMessage(action="hi"))),
     SendClients(("g1.1", "g2.1"), protocol.encode("hi", "", protocol.EMPTY_BODY, SERVER_SENDER))),
    (pb.Command(disconnect=pb.CloseClient(client="g1.1", code=4100, reason="cheating")),
     Disconnect("g1.1", 4100, "cheating")),
    (pb.Command(disconnect=pb.CloseClient(client="g1.1")), Disconnect("g1.1")),
    (pb.Command(query=pb.Query()), Query(QueryWhat.ROOMS)),
    (pb.Command(query=pb.Query(what=pb.Query.ROOM, room="r")), Query(QueryWhat.ROOM, room="r")),
    (pb.Command(query=pb.Query(what=pb.Query.CLIENT_ROOMS, client="g1.1")),
     Query(QueryWhat.CLIENT_ROOMS, client="g1.1")),
    (pb.Command(settings=pb.RoomSettings(room="r", settings={"a": "1"})), Settings("r", {"a": "1"})),
]


@pytest.mark.parametrize(("cmd", "expected"), DECODED,
                         ids=[f"{c.WhichOneof('op')}-{i}" for i, (c, _) in enumerate(DECODED)])
def test_decode_command(cmd: pb.Command, expected: Command) -> None:
    assert decode_command(cmd) == expected


def test_every_op_and_every_command_type_is_decoded_above() -> None:
    ops = {f.name for f in pb.Command.DESCRIPTOR.oneofs_by_name["op"].fields}
    assert {cmd.WhichOneof("op") for cmd, _ in DECODED} == ops
    assert {type(command) for _, command in DECODED} == set(get_args(Command))


@pytest.mark.parametrize(("cmd", "detail"), [
    (pb.Command(id=3), "command has no op"),
    (pb.Command(send_room=pb.SendToRoom(room="r", message=pb.ClientMessage(body=b"{}"))), NO_FRAME),
    (pb.Command(send_room=pb.SendToRoom(room="r", message=pb.ClientMessage(action="a", body=b"[1]"))),
     NO_FRAME),
    (pb.Command(send_clients=pb.SendToClients(clients=["g1.1"],
                                              message=pb.ClientMessage(action="a", body=b"{bad"))),
     NO_FRAME),
    (pb.Command(query=pb.Query(what=7)), "unknown query 7"),  # type: ignore[arg-type]
], ids=["empty", "send-room-no-action", "send-room-not-object", "send-clients-bad-json", "query-7"])
def test_undecodable_commands_get_bad_command(cmd: pb.Command, detail: str) -> None:
    with pytest.raises(BadCommand, match=detail):
        decode_command(cmd)
    # What the processor makes of it: the documented reply, and the core never sees it.
    mesh, out = new_mesh()
    mesh.watcher_hello("w1", "game", [], ["g-"], 0.0)
    out.clear()
    processor = SimpleNamespace(out=out, mesh=mesh)
    Processor.on_command(processor, "w1", cmd)  # type: ignore[arg-type]
    assert out.calls == [("reply", "w1", cmd.id, ErrorCode.BAD_COMMAND, detail, ())]


def test_the_processor_hands_decoded_commands_to_the_core() -> None:
    mesh, out = new_mesh()
    mesh.watcher_hello("w1", "game", [], ["g-"], 0.0)
    out.clear()
    processor = SimpleNamespace(out=out, mesh=mesh)
    Processor.on_command(processor, "w1", pb.Command(id=9, create_room=pb.CreateRoom(room="g-1")))  # type: ignore[arg-type]
    assert "g-1" in mesh.rooms and mesh.rooms["g-1"].keep
    assert out.replies() == [("reply", "w1", 9, None, "", ())]


# ------------------------------------------------------------ the client's user, and the policies


class FakeRouter:
    def __init__(self) -> None:
        self.sent: list[list[bytes]] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(frames)


def processor_of(mesh: Any, out: Any) -> Any:
    """The processor's input half around a core and a recording outbox (no sockets); an
    input that fails in the core fails the test."""
    ns = SimpleNamespace(mesh=mesh, out=out, acked={}, serving=True, peers=Peers(), recording=None,
                         recovering=set())
    ns.on_item = functools.partial(Processor.on_item, ns)
    ns.unsent_sent = []  # gateways sent their unapplied GatewayOuts again
    ns.send_unsent = ns.unsent_sent.append

    def failed(what: str, now: float, **fields: object) -> None:
        raise AssertionError(f"{what} failed")

    ns.failed = failed
    return ns


def test_the_processor_hands_each_clients_user_to_the_core() -> None:
    mesh, out = new_mesh()
    processor = processor_of(mesh, out)
    batch = pb.GatewayBatch(gateway="gw1-a")
    batch.items.add().hello.CopyFrom(pb.GatewayHello(index=0, clients=[
        pb.ClientRooms(client="gw1-a.1", rooms=["r"], user="alice"),
        pb.ClientRooms(client="gw1-a.2", rooms=[])]))
    batch.items.add().connected.CopyFrom(pb.ClientConnected(client="gw1-a.3", user="bob"))
    Processor.on_gateway(processor, batch.SerializeToString(), 0.0)  # type: ignore[arg-type]
    assert {c: s.user for c, s in mesh.clients.items()} == {
        "gw1-a.1": "alice", "gw1-a.2": "", "gw1-a.3": "bob"}


def test_events_and_forwarded_frames_carry_the_user_on_the_wire() -> None:
    pub, router = FakePub(), FakeRouter()
    out = ZmqOutbox(pub, router, "ep1")  # type: ignore[arg-type]
    out.event(4, EventKind.CLIENT_JOINED_ROOM, "gw1-a.1", "r", "0a", "alice")
    out.to_watcher("0a", 1, "gw1-a.1", "move", "r", b"{}", False, b"", "alice")
    assert pb.Event.FromString(pub.sent[0][1]).user == "alice"
    event = pb.WatcherOut.FromString(router.sent[0][2]).event
    message = pb.WatcherOut.FromString(router.sent[1][2]).message
    assert (event.user, event.client, message.user, message.client) == (
        "alice", "gw1-a.1", "alice", "gw1-a.1")


def test_the_room_pass_checks_real_tokens_on_the_wall_clock() -> None:
    assert room_pass(Config()) is None  # no JWT key: no client joins an unclaimed private room
    check = room_pass(Config(jwt_secret="k" * 32))
    assert check is not None
    now = time.time()

    def token(**claims: Any) -> str:
        return jwt.encode({"sub": "ann", "room": "private-r", "exp": now + 60, **claims}, "k" * 32,
                          algorithm="HS256")

    assert check(token(), "ann", "private-r")
    assert not check(token(), "bob", "private-r")
    assert not check(token(), "ann", "private-s")
    assert not check(token(exp=now - 1), "ann", "private-r")  # expired by the wall clock
    assert not check(jwt.encode({"sub": "ann", "room": "private-r", "exp": now + 60}, "x" * 32,
                                algorithm="HS256"), "ann", "private-r")
    assert not check(None, "ann", "private-r")


def test_the_processor_wires_the_configured_policies() -> None:
    config = Config(max_rooms_per_client=7, direct_messages="shared-room", jwt_secret="k" * 32)
    with tempfile.TemporaryDirectory(prefix="ms-") as tmp:
        processor = Processor(replace(config, run_dir=tmp))
        try:
            mesh = processor.mesh
            assert (mesh.max_rooms_per_client, mesh.direct_messages) == (7, "shared-room")
            assert mesh.room_pass is not None
        finally:
            processor.close()


# ------------------------------------------------------------ sessions and resume on the wire


def test_the_processor_hands_sessions_away_and_resumes_to_the_core() -> None:
    mesh, out = new_mesh(epoch="ep1", resume_window=60.0)
    processor = processor_of(mesh, out)

    def batch_of(gateway: str, *items: pb.GatewayItem) -> bytes:
        return pb.GatewayBatch(gateway=gateway, items=list(items)).SerializeToString()

    hello = pb.GatewayItem(hello=pb.GatewayHello(index=0, clients=[
        pb.ClientRooms(client="gw1-a.1", rooms=["r"], user="alice", session_hash=b"h1")]))
    connected = pb.GatewayItem(connected=pb.ClientConnected(client="gw1-a.2", session_hash=b"h2"))
    Processor.on_gateway(processor, batch_of("gw1-a", hello, connected), 0.0)  # type: ignore[arg-type]
    assert mesh.sessions == {b"h1": "gw1-a.1", b"h2": "gw1-a.2"}
    away = pb.GatewayItem(away="gw1-a.1")
    stale = pb.GatewayItem(disconnected="gw1-a.1")  # from a gateway it is not on: ignored
    Processor.on_gateway(processor, batch_of("gw1-a", away), 1.0)  # type: ignore[arg-type]
    Processor.on_gateway(processor, batch_of("gw2-b", pb.GatewayItem(hello=pb.GatewayHello(index=1)),
                                             stale), 1.0)  # type: ignore[arg-type]
    assert mesh.clients["gw1-a.1"].gateway == "" and "gw1-a.1" in mesh.away
    request = pb.ResumeRequest(link="7", session_hash=b"h1", new_session_hash=b"h3", user="alice")
    Processor.on_gateway(processor, batch_of("gw2-b", pb.GatewayItem(resume=request)), 2.0)  # type: ignore[arg-type]
    (call,) = out.of("resumed")
    assert call[:6] == ("resumed", "gw2-b", "7", "gw1-a.1", "", ("r",))
    assert mesh.clients["gw1-a.1"].gateway == "gw2-b" and mesh.sessions[b"h3"] == "gw1-a.1"


def test_a_resume_result_is_an_op_in_the_gateway_s_stream() -> None:
    pub = FakePub()
    out = ZmqOutbox(pub, None, "ep1")  # type: ignore[arg-type]
    out.resumed("gw1-x", "3", "gw2-y.1", rooms=["r", "s"], replay=[b'{"a":1}', b'{"a":2}'], epoch="ep1")
    out.resumed("gw1-x", "4", reason="unknown-session", epoch="ep1")
    out.flush(0.0)
    assert pb.GatewayOut.FromString(pub.sent[0][1]) == pb.GatewayOut(seq=1, epoch="ep1", ops=[
        pb.GatewayOp(resumed=pb.ResumeResult(link="3", client="gw2-y.1", rooms=["r", "s"],
                                             replay=[b'{"a":1}', b'{"a":2}'], epoch="ep1")),
        pb.GatewayOp(resumed=pb.ResumeResult(link="4", reason="unknown-session", epoch="ep1")),
    ])


def frames_batch(gateway: str, first: int, texts: list[str], resent: bool = False) -> bytes:
    batch = pb.GatewayBatch(gateway=gateway)
    if resent:
        batch.items.add().resent.SetInParent()
    run = batch.items.add().frames
    run.first_seq = first
    for text in texts:
        run.client.append(f"{gateway}.1")
        run.action.append("say")
        run.target.append("r")
        run.body.append(protocol.encode_body({"t": text}))
        run.is_target_client.append(False)
        run.request_id.append(b"")
    return batch.SerializeToString()


def said(mesh: Any) -> list[str]:
    stream = mesh.room_streams["r"]
    return [protocol.decode_body(frame)["message_body"]["t"] for _, frame, _, _ in stream.held or ()]


def test_frames_sent_again_are_applied_once_and_wait_for_their_resent_after_a_recovery() -> None:
    """A processor restarted from its log: the gateway sends every frame it had not had
    acknowledged again, after a Resent. Until then its frames are not applied (they would
    come before those lost); then each is applied once, by its seq."""
    mesh, out = new_mesh()
    p = processor_of(mesh, out)
    hello = pb.GatewayBatch(gateway="gw1-a")
    hello.items.add().hello.CopyFrom(pb.GatewayHello(index=1, clients=[
        pb.ClientRooms(client="gw1-a.1", rooms=["r"])]))
    Processor.on_gateway(p, hello.SerializeToString(), 0.0)  # type: ignore[arg-type]
    Processor.on_gateway(p, frames_batch("gw1-a", 1, ["a", "b"]), 0.0)  # type: ignore[arg-type]
    assert said(mesh) == ["a", "b"] and p.acked["gw1-a"] == 2
    Processor.on_gateway(p, frames_batch("gw1-a", 2, ["b", "c"]), 0.0)  # type: ignore[arg-type]
    assert said(mesh) == ["a", "b", "c"] and p.acked["gw1-a"] == 3  # b once
    p.recovering = {"gw1-a"}  # restarted: 4 and 5 were lost with the old process
    Processor.on_gateway(p, frames_batch("gw1-a", 6, ["f"]), 0.0)  # type: ignore[arg-type]
    assert said(mesh) == ["a", "b", "c"] and p.acked["gw1-a"] == 3  # waits: it would overtake 4, 5
    Processor.on_gateway(p, frames_batch("gw1-a", 3, ["c", "d", "e", "f"], resent=True), 0.0)  # type: ignore[arg-type]
    assert said(mesh) == ["a", "b", "c", "d", "e", "f"] and p.acked["gw1-a"] == 6
    assert not p.recovering
    assert p.unsent_sent == ["gw1-a"]  # it listens to us: what it has not applied, again


def test_after_a_replay_watchers_with_zeromqs_made_up_ids_are_forgotten() -> None:
    """A restarted processor's ROUTER hands ZeroMQ's IDs (a leading 0 byte) out again in
    its own order: the log's record of one names nobody, or another watcher. A watcher with
    an ID of its own (the SDK's) goes on; one without is gone until its hello."""
    mesh, out = new_mesh()
    p = processor_of(mesh, out)
    mesh.watcher_hello("006b8b4567", "made-up", ["r1"], [], 0.0)
    mesh.watcher_hello("9f" + "ab" * 15, "own-id", ["r2"], [], 0.0)
    Processor.recovered(p)  # type: ignore[arg-type]
    assert mesh.live_watchers() == ["9f" + "ab" * 15]
    owner = mesh.claims.owner("r2")
    assert owner is not None and owner.id == "9f" + "ab" * 15 and owner.alive
    gone = mesh.claims.owner("r1")  # kept for its hello; frames meanwhile: watcher-restarted
    assert gone is not None and not gone.alive
