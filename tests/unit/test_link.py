"""The gateway link under faults: flow control at the processor's end (GatewayOutput),
a gap repaired by a resync, refused batches that keep what they said of clients, and
an exception in the core that fails one input, not the processor."""

from __future__ import annotations

from typing import Any

import pytest

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq import protocol
from meshstream_zmq.commands import Disconnect
from meshstream_zmq.config import Config
from meshstream_zmq.errors import CloseCode
from meshstream_zmq.gateway import LINK, Link
from meshstream_zmq.link import PEER, GatewayOutput, GatewayStream, Peer, Peers
from services.processor import Processor
from tests.unit.outbox import new_mesh
from tests.unit.test_gateway_core import deliver, joined, make, out_msg, welcome


def gateway_out(payload: bytes) -> pb.GatewayOut:
    return pb.GatewayOut.FromString(payload)


# ------------------------------------------------------------ the processor's end: GatewayOutput


def test_each_gateway_gets_one_numbered_gatewayout_per_take() -> None:
    out = GatewayOutput("ep", lag_bytes=1 << 20, lag_age=3.0)
    out.broadcast(["g1", "g2"], "r", b'{"x":1}')
    out.deliver("g1", b'{"y":2}', clients=["g1.a"])
    sent = dict(out.take(0.0))
    assert set(sent) == {"g1", "g2"}
    assert [len(gateway_out(p).ops) for p in (sent["g1"], sent["g2"])] == [2, 1]
    assert gateway_out(sent["g1"]).seq == 1 and gateway_out(sent["g1"]).epoch == "ep"
    out.broadcast(["g1"], "r", b'{"x":3}')
    assert gateway_out(dict(out.take(0.1))["g1"]).seq == 2
    assert out.take(0.2) == []  # nothing touched: nothing sent
    out.check()


@pytest.mark.parametrize("seq", [1, 127, 128, 16383, 16384, 2**40])
def test_a_gatewayout_is_byte_for_byte_what_upb_writes(seq: int) -> None:
    """take() writes `seq` and `epoch` itself (no message built per GatewayOut)."""
    out = GatewayOutput("1a2507a79c839c5-é")
    out.streams["g1"] = GatewayStream("g1", seq=seq - 1)  # its next GatewayOut is `seq`
    out.broadcast(["g1"], "r", b'{"x":1}')
    [(_, payload)] = out.take(0.0)
    decoded = gateway_out(payload)
    assert (decoded.seq, decoded.epoch) == (seq, "1a2507a79c839c5-é")
    assert payload == decoded.SerializeToString()


def test_a_gateway_that_applies_what_it_is_sent_is_never_stalled() -> None:
    out = GatewayOutput("ep", lag_bytes=10_000, lag_age=3.0)
    for i in range(100):
        out.broadcast(["g1"], "r", b"x" * 500)
        (_, payload), = out.take(float(i))
        out.received("g1", gateway_out(payload).seq)
        assert out.stalled(float(i) + 2.9) == [] and out.over == []
    assert out.lag("g1") == 0
    out.check()


def test_a_gateway_that_stops_reading_is_stalled_by_bytes_at_once() -> None:
    out = GatewayOutput("ep", lag_bytes=10_000, lag_age=3.0)
    for i in range(25):
        out.broadcast(["g1", "g2"], "r", b"x" * 500)
        out.take(0.0)
        out.received("g2", i + 1)  # g2 reads; g1 does not
    assert out.over == ["g1"] and out.stalled(0.0) == ["g1"]
    assert out.lag("g1") > 10_000 and out.lag("g2") == 0
    out.forget("g1")
    assert out.stalled(0.0) == [] and out.lag("g1") == 0
    out.check()


def test_a_gateway_that_stops_reading_is_stalled_by_age() -> None:
    out = GatewayOutput("ep", lag_bytes=1 << 30, lag_age=3.0)
    out.broadcast(["g1"], "r", b"x")
    out.take(10.0)
    assert out.stalled(12.9) == []
    assert out.stalled(13.1) == ["g1"]
    out.received("g1", 1)
    assert out.stalled(20.0) == []


def test_a_forgotten_gateway_starts_its_numbering_over() -> None:
    out = GatewayOutput("ep")
    out.welcome_gateway("g1")
    out.take(0.0)
    out.welcome_gateway("g1")
    out.forget("g1")  # forgotten with ops pending: they go too
    assert out.take(0.0) == []
    out.welcome_gateway("g1")
    (_, payload), = out.take(0.0)
    assert gateway_out(payload).seq == 1
    out.check()


# ------------------------------------------------------------ the gateway's end: gaps and syncs


def test_a_gap_asks_the_processor_for_a_resync_and_the_sync_repairs_the_mirror() -> None:
    gw, out = make()
    a, b = gw.connect("A", 0.0), gw.connect("B", 0.0)
    assert a is not None and b is not None
    welcome(gw)
    out_msg(gw, joined(a.id, "private-r"), joined(b.id, "private-r"))
    gw.flush()
    out.batches.clear()
    # The `left` of a (seq 3) is lost, with a message only b should have had.
    out_msg(gw, deliver(b'{"n":1}', room="private-r"), seq=4)
    gw.flush()
    assert [i.WhichOneof("kind") for i in out.batches[-1].items] == ["resync"]
    assert "messages-lost" in str(out.frames_for("A")) and "messages-lost" in str(out.frames_for("B"))
    sync = pb.GatewaySync(clients=[pb.ClientRooms(client=b.id, rooms=["private-r"]),
                                   pb.ClientRooms(client=a.id, rooms=[])])
    out_msg(gw, pb.GatewayOp(sync=sync))
    assert a.rooms == set() and b.rooms == {"private-r"}
    out.writes.clear()
    out_msg(gw, deliver(b'{"n":2}', room="private-r"))
    gw.flush()
    assert [w for w, _ in out.writes] == ["B"]  # a left the private room: it hears nothing of it
    gw.check()


def test_a_sync_makes_the_closes_that_were_lost_and_closes_unknown_older_connections() -> None:
    gw, out = make()
    a, b = gw.connect("A", 0.0), gw.connect("B", 0.0)
    assert a is not None and b is not None
    welcome(gw)
    out_msg(gw, seq=5)  # a gap: resync asked
    c = gw.connect("C", 1.0)  # after the Resync: not in the answer, left alone
    assert c is not None
    out_msg(gw, pb.GatewayOp(sync=pb.GatewaySync(
        clients=[pb.ClientRooms(client=a.id)],
        close=[pb.CloseClient(client=a.id, code=CloseCode.DISCONNECTED, reason="bye")])))
    assert ("A", CloseCode.DISCONNECTED, "bye") in out.closes
    assert ("B", CloseCode.SERVICE_RESTART, "resynced") in out.closes  # the processor knew none of it
    assert not any(link == "C" for link, _, _ in out.closes)


def test_a_welcome_starts_the_numbering_over_without_a_gap() -> None:
    gw, out = make()
    gw.connect("A", 0.0)
    welcome(gw, seq=1)
    out_msg(gw)
    welcome(gw, seq=1)  # the processor answered a second hello: it numbers from 1 again
    out_msg(gw)
    gw.flush()
    assert "messages lost; resyncing" not in out.notices
    assert not any(i.HasField("resync") for b in out.batches for i in b.items)


def test_every_batch_says_what_the_gateway_applied() -> None:
    gw, out = make()
    conn = gw.connect("A", 0.0)
    assert conn is not None
    welcome(gw, seq=7)
    out_msg(gw)
    gw.client_frame(conn, '{"action":"join-room","target":"r"}', 0.1)
    gw.flush()
    assert out.batches[-1].received == 8


def test_a_refused_batch_keeps_what_it_said_of_clients_for_the_next() -> None:
    gw, out = make()
    welcome(gw)
    out.accept = False
    a = gw.connect("A", 0.0)  # `connected` in a batch the processor never gets
    assert a is not None
    gw.flush()
    b = gw.connect("B", 0.1)
    assert b is not None
    gw.flush()
    gw.disconnect(a, clean=True)
    gw.flush()
    assert out.batches == []
    out.accept = True
    gw.heartbeat(0.5)
    gw.flush()
    kinds = [(i.WhichOneof("kind"), i.connected.client or i.disconnected)
             for i in out.batches[0].items]
    assert kinds == [("connected", a.id), ("connected", b.id), ("disconnected", a.id),
                     ("heartbeat", "")]
    gw.heartbeat(1.0)
    gw.flush()
    assert [i.WhichOneof("kind") for i in out.batches[1].items] == ["heartbeat"]  # sent once


# ------------------------------------------------------------ the mesh's view for a sync


def test_the_mesh_answers_a_resync_with_rooms_and_pending_closes() -> None:
    mesh, out = new_mesh()
    mesh.gateway_hello("g1", 1, [("g1.a", ["r"]), ("g1.b", [])], 0.0)
    mesh.watcher_hello("w", "bot", [], ["x-"], 0.0)
    mesh.command("w", 1, Disconnect("g1.b", 4001, "bye"))
    mesh.gateway_sync("g1")
    (call,) = out.of("sync")
    assert call[1] == "g1"
    assert sorted(call[2]) == [("g1.a", ("r",)), ("g1.b", ())]
    assert call[3] == (("g1.b", 4001, "bye"),)
    mesh.client_disconnected("g1.b", "g1")
    out.clear()
    mesh.gateway_sync("g1")
    assert out.of("sync")[0][3] == ()  # done: not asked again
    mesh.check()


# ------------------------------------------------------------ one failing input, not the processor


@pytest.fixture
def processor(tmp_path: Any) -> Any:
    proc = Processor(Config(run_dir=str(tmp_path / "run"), metrics_port=0))
    yield proc
    proc.close()


def test_an_exception_in_the_core_fails_one_frame_and_the_processor_goes_on(
        processor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hello = pb.GatewayBatch(gateway="gw1-x")
    hello.items.add().hello.CopyFrom(pb.GatewayHello(index=1, clients=[pb.ClientRooms(client="gw1-x.a")]))
    processor.on_gateway(hello.SerializeToString(), 0.0)
    epoch = processor.epoch
    real = processor.mesh.client_frame

    def client_frame(client: str, action: str, *args: Any) -> None:
        if action == "boom":
            raise RuntimeError("a bug")
        real(client, action, *args)

    monkeypatch.setattr(processor.mesh, "client_frame", client_frame)
    batch = pb.GatewayBatch(gateway="gw1-x")
    run = batch.items.add().frames
    run.first_seq = 1
    for action, target in (("boom", "r"), ("join-room", "r")):
        run.client.append("gw1-x.a")
        run.action.append(action)
        run.target.append(target)
        run.body.append(b"")
        run.is_target_client.append(False)
        run.request_id.append(b"7")
    processor.on_gateway(batch.SerializeToString(), 1.0)
    assert processor.epoch == epoch and "r" in processor.mesh.clients["gw1-x.a"].rooms
    assert processor.acked["gw1-x"] == 2  # both handled: the failed one was answered
    ops = processor.out.streams["gw1-x"].ops
    answered = [op for op in ops if b"internal-error" in op]
    assert len(answered) == 1 and protocol.encode_body({"id": 7})[1:-1] in answered[0]
    processor.mesh.check()


# ------------------------------------------------------------ the tables


def test_the_processor_welcomes_a_gateway_once_it_is_subscribed() -> None:
    peers = Peers()
    assert peers.hello("g1") is False and peers.of("g1") is Peer.SUBSCRIBING  # a slow joiner
    assert peers.subscription(b"\x01g2.") is None  # another's subscription, no hello yet
    assert peers.subscription(b"\x01g1.") == "g1" and peers.of("g1") is Peer.WELCOMED
    assert peers.hello("g2") is True and peers.of("g2") is Peer.WELCOMED  # already subscribed
    assert peers.hello("g1") is True  # a second hello: welcomed again, its numbering over
    peers.resync("g1")
    peers.dropped("g1")
    assert peers.of("g1") is Peer.UNKNOWN and "g1" not in peers.state
    with pytest.raises(KeyError):
        peers.resync("g1")  # not a transition of an unknown gateway: a bug, not a state
    peers.subscription(b"\x00g2.")
    assert peers.hello("g2") is False  # unsubscribed: it waits for its subscription again


@pytest.mark.parametrize(("state", "event"), [(Link.HELLO, "gap"), (Link.HELLO, "sync"),
                                              (Link.HELLO, "forgot")])
def test_a_gateway_link_event_outside_the_table_is_a_bug(state: Link, event: str) -> None:
    assert (state, event) not in LINK


def test_every_gateway_link_state_can_be_left_and_reached() -> None:
    assert {s for s, _ in LINK} == set(Link) == set(LINK.values())
    assert all(PEER[(p, "dropped")] is Peer.UNKNOWN for p in Peer)
