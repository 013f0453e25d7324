"""The gateway's pure core, driven directly: method calls in (time passed in), outbox calls out."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from meshstream_zmq import LOBBY
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.auth import Identity, TokenError
from meshstream_zmq.errors import CloseCode
from meshstream_zmq.gateway import (
    HELD_FRAMES,
    KEPT_BATCH_BYTES,
    MAX_RESUME_POSITIONS,
    PACED_MESSAGE,
    PING_INTERVAL,
    PING_TIMEOUT,
    RESUME_FAILURE_BURST,
    RESUME_FAILURES,
    RESUME_TIMEOUT,
    WAIT_TIMEOUTS,
    Connection,
    Gateway,
    Link,
    Resume,
    ResumeFailures,
    parse_resume,
)


class Outbox:
    """Records what the core asks of the I/O; `buffered` plays the client's TCP buffer."""

    def __init__(self) -> None:
        self.wakes = 0
        self.batches: list[pb.GatewayBatch] = []
        self.writes: list[tuple[str, bytes]] = []
        self.payloads: list[bytes] = []  # the objects, to check the shared-payload promise
        self.closes: list[tuple[str, int, str]] = []
        self.pings: list[str] = []
        self.notices: list[str] = []
        self.switches = 0
        self.accept = True
        self.buffered = 0
        self.transports: dict[Any, int] = {}  # links whose writes fill a buffer: bytes in it

    def wake(self) -> None:
        self.wakes += 1

    def push_batch(self, batch: bytes) -> bool:
        if self.accept:
            self.batches.append(pb.GatewayBatch.FromString(batch))
        return self.accept

    def write(self, link: Any, payload: bytes) -> int:
        self.writes.append((link, payload))
        self.payloads.append(payload)
        if link in self.transports:
            self.transports[link] += len(payload)
            return self.transports[link]
        return self.buffered

    def close(self, link: Any, code: int, reason: str) -> None:
        self.closes.append((link, code, reason))

    def ping(self, link: Any) -> None:
        self.pings.append(link)

    def switch_processor(self) -> None:
        self.switches += 1

    def notice(self, level: str, message: str, fields: dict[str, object]) -> None:
        self.notices.append(message)

    def frames_for(self, link: str) -> list[dict[str, Any]]:
        return [json.loads(line) for who, p in self.writes if who == link for line in p.split(b"\n")]


GW = "gw1-abc"


def make(**kw: Any) -> tuple[Gateway, Outbox]:
    out = Outbox()
    return Gateway(GW, 1, out, send_queue=kw.pop("send_queue", 1 << 20), **kw), out


def welcome(gw: Gateway, epoch: str = "e1", seq: int = 1) -> None:
    gw.processor_out(pb.GatewayOut(seq=seq, epoch=epoch, ops=[pb.GatewayOp(welcome=pb.Welcome(epoch=epoch))]))


def out_msg(gw: Gateway, *ops: pb.GatewayOp, seq: int | None = None) -> None:
    gw.processor_out(pb.GatewayOut(seq=gw.out_seq + 1 if seq is None else seq,
                                   epoch=gw.processor_epoch, ops=list(ops)))


def joined(client: str, room: str) -> pb.GatewayOp:
    return pb.GatewayOp(joined=pb.Membership(client=client, room=room))


def left(client: str, room: str) -> pb.GatewayOp:
    return pb.GatewayOp(left=pb.Membership(client=client, room=room))


def deliver(frame: bytes, room: str = "", clients: tuple[str, ...] = (),
            exclude: tuple[str, ...] = ()) -> pb.GatewayOp:
    return pb.GatewayOp(deliver=pb.Deliver(frame=frame, room=room, clients=list(clients),
                                           exclude=list(exclude)))


def frames_of(batches: list[pb.GatewayBatch]) -> list[tuple[int, str, str, str]]:
    rows = []
    for b in batches:
        for item in b.items:
            if item.WhichOneof("kind") == "frames":
                r = item.frames
                rows += [(r.first_seq + i, c, a, t) for i, (c, a, t) in
                         enumerate(zip(r.client, r.action, r.target, strict=True))]
    return rows


def test_a_client_is_greeted_with_its_id_and_announced_to_the_processor() -> None:
    gw, out = make()
    conn = gw.connect("L1", 0.0)
    assert out.wakes == 1
    gw.flush()
    [greeting] = out.frames_for("L1")
    session = greeting["message_body"]["session"]
    assert greeting == {"action": "client-connected", "target": conn.id, "sender": "meshstream",
                        "message_body": {"client": conn.id, "session": session, "epoch": ""}}
    assert [i.connected.client for i in out.batches[0].items] == [conn.id]
    # the processor gets the secret's SHA-256, never the secret
    assert out.batches[0].items[0].connected.session_hash == hashlib.sha256(session.encode()).digest()
    assert len(session) >= 32 and session not in conn.id
    gw.check()


def test_frames_wait_for_the_welcome_then_travel_numbered_in_one_batch() -> None:
    gw, out = make()
    conn = gw.connect("L1", 0.0)
    gw.client_frame(conn, '{"action":"a","target":"r"}', 0.0)
    gw.flush()
    assert out.frames_for("L1")[-1]["message_body"]["code"] == "processor-unavailable"
    welcome(gw)
    assert gw.link is Link.UP
    gw.client_frame(conn, '{"action":"a","target":"r"}', 0.0)
    gw.client_frame(conn, '{"action":"b","target":"s","id":7}', 0.0)
    gw.flush()
    assert frames_of(out.batches) == [(1, conn.id, "a", "r"), (2, conn.id, "b", "s")]
    assert [u.seq for u in gw.unacked] == [1, 2]
    gw.check()


def test_a_batch_past_its_byte_bound_goes_within_the_tick() -> None:
    """A processor with --log stores a batch in one NATS message: a tick's frames are
    split into batches of about BATCH_BYTES, numbered on, in order."""
    from meshstream_zmq.gateway import BATCH_BYTES

    gw, out = make(rate_limit=0.0)
    welcome(gw)
    conn = gw.connect("L1", 0.0)
    big = "x" * 60_000
    n = 3 * BATCH_BYTES // 60_000
    for i in range(n):
        gw.client_frame(conn, json.dumps({"action": "chat", "target": "r", "message_body": {"t": big},
                                          "id": i}), 0.0)
    gw.flush()
    assert len(out.batches) >= 3
    assert all(b.ByteSize() < BATCH_BYTES + 70_000 for b in out.batches)
    assert [seq for seq, *_ in frames_of(out.batches)] == list(range(1, n + 1))
    gw.check()


def test_bad_frames_are_answered_at_the_gateway_with_their_id() -> None:
    gw, out = make()
    welcome(gw)
    conn = gw.connect("L1", 0.0)
    gw.client_frame(conn, '{"action":"a","id":"x","message_body":[1]}', 0.0)
    gw.client_frame(conn, b"\x00binary", 0.0)
    gw.flush()
    errors = [f["message_body"] for f in out.frames_for("L1")[1:]]
    assert [e["code"] for e in errors] == ["bad-body", "binary-frame"]
    assert out.frames_for("L1")[1]["id"] == "x"
    assert frames_of(out.batches) == [] and gw.errors == {"bad-body": 1, "binary-frame": 1}


def test_acknowledged_frames_are_forgotten_and_a_new_epoch_answers_the_rest() -> None:
    gw, out = make()
    welcome(gw, "e1")
    conn = gw.connect("L1", 0.0)
    for action in ("a", "b", "c"):
        gw.client_frame(conn, json.dumps({"action": action, "id": action}), 0.0)
    gw.flush()
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", acked={GW: 2}), 1.0)
    assert [u.action for u in gw.unacked] == ["c"]
    gw.processor_beat(pb.ProcessorBeat(epoch="e2", acked={}), 2.0)  # a new processor
    assert gw.link is Link.HELLO and not gw.unacked
    gw.flush()
    last = out.frames_for("L1")[-1]
    assert (last["message_body"]["code"], last["id"]) == ("processor-restarted", "c")
    hello = out.batches[-1].items[-1].hello
    assert [c.client for c in hello.clients] == [conn.id]
    assert "processor changed; resyncing" in out.notices
    gw.check()


def test_a_processor_restarted_from_its_log_is_sent_every_unacknowledged_frame_again() -> None:
    """With a log (--log) a restarted processor has the same epoch: its beats name a new
    `run`. It may never have had what the old process did not acknowledge: a Resent, then
    those frames again with their own seqs (the processor skips what it applied)."""
    gw, out = make()
    welcome(gw, "e1")
    conn = gw.connect("L1", 0.0)
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r1", acked={GW: 0}), 0.5)
    for action in ("a", "b", "c"):
        gw.client_frame(conn, json.dumps({"action": action, "target": "r", "id": action}), 0.0)
    gw.flush()
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r1", acked={GW: 1}), 1.0)
    assert [u.action for u in gw.unacked] == ["b", "c"]
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r2", acked={GW: 1}), 2.0)  # restarted
    gw.client_frame(conn, json.dumps({"action": "d", "target": "r"}), 2.0)
    gw.flush()
    assert gw.link is Link.UP  # the same processor: no hello, no resync, nothing answered
    resent, later = out.batches[-2:]  # the Resent and what it resends go first, alone
    assert resent.items[0].HasField("resent")
    assert frames_of([resent]) == [(2, conn.id, "b", "r"), (3, conn.id, "c", "r")]
    assert frames_of([later]) == [(4, conn.id, "d", "r")]
    assert [f["action"] for f in out.frames_for("L1")] == ["client-connected"]
    assert "processor restarted from its log (or its standby took over)" in out.notices
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r2", acked={GW: 4}), 3.0)
    assert not gw.unacked
    gw.check()


def test_a_gatewayout_sent_again_is_skipped_a_new_one_applied() -> None:
    gw, out = make()
    welcome(gw, "e1")
    conn = gw.connect("L1", 0.0)
    frame = b'{"action":"x"}'
    out_msg(gw, pb.GatewayOp(deliver=pb.Deliver(frame=frame, clients=[conn.id])), seq=2)
    out_msg(gw, pb.GatewayOp(deliver=pb.Deliver(frame=frame, clients=[conn.id])), seq=2)  # again
    out_msg(gw, pb.GatewayOp(deliver=pb.Deliver(frame=b'{"action":"y"}', clients=[conn.id])), seq=3)
    gw.flush()
    assert [f["action"] for f in out.frames_for("L1")] == ["client-connected", "x", "y"]
    assert gw.drops["duplicate-out"] == 1 and gw.link is Link.UP
    gw.check()


def test_a_processor_that_forgets_the_gateway_gets_a_hello() -> None:
    gw, out = make()
    welcome(gw, "e1")
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", acked={"gw9-other": 3}), 1.0)
    assert gw.link is Link.HELLO


def test_a_silent_processor_takes_the_link_down() -> None:
    gw, out = make(peer_timeout=3.0)
    welcome(gw)
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", acked={GW: 0}), 10.0)
    gw.heartbeat(12.0)
    assert gw.link is Link.UP
    gw.heartbeat(13.5)
    assert gw.link is Link.HELLO and "processor silent" in out.notices


def test_with_a_pair_a_silent_processor_sends_the_gateway_to_the_other() -> None:
    """Failover as the gateway sees it: after the silence it tries the other processor
    (and back, every silence, until one welcomes it); frames meanwhile are refused, those
    the old one never acknowledged are answered processor-restarted by the new welcome."""
    gw, out = make(peer_timeout=1.0, pair=True)
    c = gw.connect("L1", 0.0)
    welcome(gw, "e1")
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", acked={GW: 0}), 0.0)
    gw.client_frame(c, json.dumps({"action": "send-message", "target": "r", "id": "lost"}), 0.1)
    gw.flush()
    gw.heartbeat(0.5)
    assert (gw.link, out.switches) == (Link.UP, 0), "within the silence nothing changes"
    gw.heartbeat(1.5)
    gw.flush()
    assert (gw.link, out.switches) == (Link.HELLO, 1)
    assert out.batches[-1].items[-1].WhichOneof("kind") == "hello"
    gw.client_frame(c, json.dumps({"action": "send-message", "target": "r", "id": "during"}), 1.6)
    gw.flush()
    gw.heartbeat(2.0)
    assert out.switches == 1, "the other one gets the silence's length to answer"
    gw.heartbeat(2.6)
    assert out.switches == 2, "silent too: back to the first"
    welcome(gw, "e2")
    assert gw.link is Link.UP
    gw.flush()
    codes = [(f["message_body"]["code"], f.get("id")) for f in out.frames_for("L1")
             if f["action"] == "error"]
    assert codes == [("processor-unavailable", "during"), ("processor-restarted", "lost")]
    gw.check()


def test_without_a_pair_the_gateway_never_switches() -> None:
    gw, out = make(peer_timeout=1.0)
    welcome(gw, "e1")
    for t in range(1, 10):
        gw.heartbeat(float(t))
    assert (gw.link, out.switches) == (Link.HELLO, 0)


def test_a_refused_batch_answers_every_frame_in_it() -> None:
    gw, out = make()
    welcome(gw)
    conn = gw.connect("L1", 0.0)
    gw.flush()
    out.accept = False
    gw.client_frame(conn, '{"action":"a","id":1}', 0.0)
    gw.client_frame(conn, '{"action":"b","id":2}', 0.0)
    gw.flush()
    codes = [(f["message_body"]["code"], f["id"]) for f in out.frames_for("L1")[1:]]
    assert codes == [("processor-unavailable", 1), ("processor-unavailable", 2)]
    assert not gw.unacked and gw.drops == {"processor-unreachable": 2}  # one per client frame


def test_batches_wait_whole_for_a_logged_processor_that_is_unreachable() -> None:
    """A processor with a log (its beats say `logged`) that cannot be reached is restarting
    and comes back with its state: batches wait for it in order, their frames unanswered
    and unacknowledged; past KEPT_BATCH_BYTES the oldest are refused as usual."""
    gw, out = make()
    welcome(gw)
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r1", logged=True, acked={GW: 0}), 0.5)
    conn = gw.connect("L1", 0.0)
    gw.flush()
    out.accept = False
    for n in range(3):
        gw.client_frame(conn, json.dumps({"action": "a", "target": "r", "id": n}), 0.0)
        gw.flush()
    assert [f["action"] for f in out.frames_for("L1")] == ["client-connected"]  # none answered
    assert len(gw.kept) == 3 and [u.seq for u in gw.unacked] == [1, 2, 3]
    out.accept = True
    gw.client_frame(conn, json.dumps({"action": "a", "target": "r", "id": 3}), 0.0)
    gw.flush()
    assert [s for s, *_ in frames_of(out.batches)] == [1, 2, 3, 4] and not gw.kept  # in order
    out.accept = False
    big = json.dumps({"action": "a", "target": "r", "message_body": {"x": "y" * 60000}})
    for _ in range(KEPT_BATCH_BYTES // 60000 + 2):
        gw.client_frame(conn, big, 0.0)
        gw.flush()
    assert gw.kept_bytes <= KEPT_BATCH_BYTES and gw.drops["processor-unreachable"] >= 1
    assert out.frames_for("L1")[-1]["message_body"]["code"] == "processor-unavailable"
    gw.check()


def test_a_refused_hello_is_retried_not_counted_as_a_drop() -> None:
    # At start the PUSH refuses the first hello (ZMQ_IMMEDIATE: no processor connection yet);
    # no client frame was lost, and the next heartbeat says hello again.
    gw, out = make()
    out.accept = False
    gw.heartbeat(0.0)
    gw.flush()
    assert gw.drops == {} and out.batches == []
    out.accept = True
    gw.heartbeat(0.5)
    gw.flush()
    assert [b.items[0].WhichOneof("kind") for b in out.batches] == ["hello"]
    assert gw.drops == {}


def test_room_messages_fan_out_to_local_members_once_each() -> None:
    gw, out = make()
    welcome(gw)
    a, b, c = (gw.connect(f"L{i}", 0.0) for i in range(3))
    gw.flush()
    out.writes.clear()
    out_msg(gw, joined(a.id, "r"), joined(b.id, "r"), deliver(b'{"m":1}', room="r"),
            deliver(b'{"m":2}', room="r", exclude=(a.id,)), deliver(b'{"m":3}', room=LOBBY),
            deliver(b'{"m":4}', clients=(c.id, "gw2-x.1")))
    gw.flush()
    assert dict(out.writes) == {"L0": b'{"m":1}\n{"m":3}', "L1": b'{"m":1}\n{"m":2}\n{"m":3}',
                                "L2": b'{"m":3}\n{"m":4}'} and len(out.writes) == 3
    out.writes.clear()
    out_msg(gw, left(b.id, "r"), deliver(b'{"m":5}', room="r"))
    gw.flush()
    assert out.writes == [("L0", b'{"m":5}')]
    gw.disconnect(a)
    assert "r" not in gw.rooms
    gw.check()


def test_members_with_the_same_queue_share_one_payload_object() -> None:
    gw, out = make()
    welcome(gw)
    conns = [gw.connect(f"L{i}", 0.0) for i in range(4)]
    gw.flush()
    out.payloads.clear()
    out_msg(gw, *(joined(c.id, "r") for c in conns), deliver(b"x" * 10, room="r"),
            deliver(b"y" * 10, room="r"))
    gw.flush()
    assert len(out.payloads) == 4 and all(p is out.payloads[0] for p in out.payloads)


def test_a_sequence_gap_tells_every_client_messages_lost() -> None:
    gw, out = make()
    welcome(gw)
    conn = gw.connect("L1", 0.0)
    out_msg(gw, seq=2)
    out_msg(gw, seq=5)
    gw.flush()
    assert [f["message_body"]["code"] for f in out.frames_for("L1")[1:]] == ["messages-lost"]
    assert conn.pending == []


def test_the_rate_limit_refuses_then_closes_a_flood() -> None:
    gw, out = make(rate_limit=2.0, rate_burst=3)
    welcome(gw)
    conn = gw.connect("L1", 0.0)
    for _ in range(3):
        gw.client_frame(conn, '{"action":"a"}', 0.0)
    gw.client_frame(conn, '{"action":"a","id":9}', 0.0)
    gw.flush()
    last = out.frames_for("L1")[-1]
    assert (last["message_body"]["code"], last["id"]) == ("rate-limited", 9)
    gw.client_frame(conn, '{"action":"a"}', 1.0)  # the debt of one paid back: two tokens a second
    assert len(gw.unacked) == 4
    for _ in range(4):
        gw.client_frame(conn, '{"action":"a"}', 1.0)
    assert out.closes == [("L1", 1008, "flood: rate limit exceeded")]


def test_a_client_over_its_send_queue_is_closed_as_slow() -> None:
    gw, out = make(send_queue=100)
    welcome(gw)
    conn = gw.connect("L1", 0.0)
    out.buffered = 101
    gw.flush()
    assert out.closes == [("L1", 4000, "slow consumer: send queue full")] and conn.closing
    out_msg(gw, deliver(b"{}", clients=(conn.id,)))
    gw.flush()
    assert len(out.writes) == 1  # nothing more written to a closing connection


def test_a_processor_close_op_closes_that_client_once() -> None:
    gw, out = make()
    welcome(gw)
    conn = gw.connect("L1", 0.0)
    op = pb.GatewayOp(close=pb.CloseClient(client=conn.id, code=4001, reason="bye"))
    out_msg(gw, op)
    out_msg(gw, op)
    assert out.closes == [("L1", 4001, "bye")]


def test_keepalive_pings_then_closes_when_the_pong_is_late() -> None:
    gw, out = make()
    conn = gw.connect("L1", 1000.0)
    gw.keepalive_one(conn, 1001.0)
    assert out.pings == []  # too early: connected one second ago
    gw.keepalive_one(conn, 1000.0 + PING_INTERVAL)
    assert out.pings == ["L1"]
    gw.keepalive_one(conn, 1001.0 + PING_INTERVAL)  # waiting for the pong: no second ping
    assert out.pings == ["L1"] and not conn.closing
    gw.pong(conn)
    t = 1000.0 + 2 * PING_INTERVAL
    gw.keepalive_one(conn, t)
    assert out.pings == ["L1", "L1"]
    gw.keepalive_one(conn, t + PING_TIMEOUT)  # no pong this time
    assert out.closes == [("L1", 1011, "keepalive ping timeout")]


def test_keepalive_spreads_the_pings_over_the_interval() -> None:
    gw, out = make()
    for i in range(100):
        gw.connect(f"L{i}", 0.0)
    seen: list[str] = []
    for tick in range(int(PING_INTERVAL)):
        gw.keepalive(PING_INTERVAL + tick)
        seen += out.pings
        assert len(out.pings) <= 5
        out.pings.clear()
    assert sorted(seen) == sorted(f"L{i}" for i in range(100))


# ------------------------------------------------------------------ admission: IDs, limits, origins

def test_client_ids_are_the_gateway_id_and_64_random_bits() -> None:
    gw, _ = make()
    ids = [c.id for c in (gw.connect(f"L{i}", 0.0) for i in range(500))]
    assert len(set(ids)) == 500
    for client in ids:
        head, _, tail = client.partition(".")
        assert head == GW and len(tail) == 16 and int(tail, 16) >= 0  # the SUB prefix is "<gw>."
    # nothing to count on: neighbours are not one apart, and no ID is a small number
    tails = [int(c.partition(".")[2], 16) for c in ids]
    assert sum(b - a == 1 for a, b in zip(tails, tails[1:], strict=False)) == 0
    assert max(tails) > 2**60


def test_over_the_connection_limit_a_client_is_closed_1013_unannounced() -> None:
    gw, out = make(max_connections=2)
    welcome(gw)
    a, b = gw.connect("L1", 0.0), gw.connect("L2", 0.0)
    gw.flush()
    out.batches.clear()
    assert gw.connect("L3", 0.0) is None
    gw.flush()
    assert out.closes == [("L3", 1013, "too-many-connections")]
    assert out.frames_for("L3") == [] and out.batches == []  # no greeting, nothing to the processor
    assert len(gw.conns) == 2 and gw.closes[1013] == 1
    assert a is not None and b is not None
    gw.disconnect(a)
    assert gw.connect("L4", 0.0) is not None  # room again
    gw.check()


def test_the_per_address_limit_counts_each_source_address() -> None:
    gw, out = make(max_connections_per_ip=2)
    first = [gw.connect(f"A{i}", 0.0, peer="10.0.0.1") for i in range(2)]
    assert gw.connect("A2", 0.0, peer="10.0.0.1") is None
    assert gw.connect("B0", 0.0, peer="10.0.0.2") is not None  # another address is not affected
    assert out.closes == [("A2", 1013, "too-many-connections")]
    gw.check()
    assert first[0] is not None
    gw.disconnect(first[0])
    gw.disconnect(first[0])  # reported twice: counted once
    assert gw.per_peer == {"10.0.0.1": 1, "10.0.0.2": 1}
    assert gw.connect("A3", 0.0, peer="10.0.0.1") is not None
    gw.check()


def test_limits_of_zero_are_off() -> None:
    gw, out = make(max_connections=0, max_connections_per_ip=0)
    for i in range(50):
        gw.connect(f"L{i}", 0.0, peer="10.0.0.1")
    assert len(gw.conns) == 50 and out.closes == [] and not gw.per_peer


@pytest.mark.parametrize(("allowed", "origins", "ok"), [
    ("", ["https://evil.example"], True),  # no list: every Origin
    ("https://game.example", ["https://game.example"], True),
    ("https://game.example", ["HTTPS://Game.Example"], True),  # browsers lower-case it anyway
    ("https://game.example/, http://localhost:8765", ["http://localhost:8765"], True),
    ("https://game.example", ["https://evil.example"], False),
    ("https://game.example", ["https://game.example.evil.example"], False),
    ("https://game.example", ["http://game.example"], False),  # the scheme counts
    ("https://game.example", ["https://game.example:8443"], False),  # so does the port
    ("https://game.example", ["null"], False),  # sandboxed frames, file:// pages
    ("https://game.example", ["https://game.example", "https://evil.example"], False),
    ("https://game.example", [], True),  # no Origin: not a browser (docs/protocol.md)
])
def test_the_origin_check(allowed: str, origins: list[str], ok: bool) -> None:
    gw, _ = make(allowed_origins=allowed)
    assert gw.origin_allowed(origins) is ok


# ------------------------------------------------------------------ tokens

class Verifier:
    """The adapter's token check, played by a table: token -> Identity or TokenError."""

    def __init__(self, table: dict[str | None, Identity | TokenError]) -> None:
        self.table = table
        self.seen: list[str | None] = []

    def __call__(self, token: str | None) -> Identity | TokenError:
        self.seen.append(token)
        return self.table.get(token, TokenError.REQUIRED if not token else TokenError.BAD)


TOKENS: dict[str | None, Identity | TokenError] = {
    "ann-60": Identity("ann", 60.0), "ann-120": Identity("ann", 120.0),
    "ann-forever": Identity("ann", None), "bob-60": Identity("bob", 60.0),
    "old": TokenError.EXPIRED,
}


def with_tokens(**kw: Any) -> tuple[Gateway, Outbox]:
    return make(verify=Verifier(TOKENS), **kw)


@pytest.mark.parametrize(("token", "reason"), [(None, "token-required"), ("", "token-required"),
                                               ("forged", "bad-token"), ("old", "token-expired")])
def test_a_refused_token_closes_4003_before_any_frame(token: str | None, reason: str) -> None:
    gw, out = with_tokens()
    welcome(gw)
    assert gw.connect("L1", 0.0, token) is None
    gw.flush()
    assert out.closes == [("L1", 4003, reason)]
    assert out.writes == [] and out.batches == [] and not gw.conns
    assert gw.closes[4003] == 1


def test_the_connection_limit_is_checked_before_the_token() -> None:
    verify = Verifier(TOKENS)
    gw, out = make(verify=verify, max_connections=1)
    gw.connect("L1", 0.0, "ann-60")
    assert gw.connect("L2", 0.0, "forged") is None
    assert out.closes == [("L2", 1013, "too-many-connections")] and verify.seen == ["ann-60"]


def test_the_user_is_greeted_announced_and_resent_in_the_hello() -> None:
    gw, out = with_tokens()
    conn = gw.connect("L1", 0.0, "ann-60")
    assert conn is not None and (conn.user, conn.expires) == ("ann", 60.0)
    gw.flush()
    [greeting] = out.frames_for("L1")
    assert greeting["message_body"] == {"client": conn.id, "user": "ann", "epoch": "",
                                        "session": greeting["message_body"]["session"]}
    item = out.batches[0].items[-1]
    assert (item.connected.client, item.connected.user) == (conn.id, "ann")
    gw.heartbeat(1.0)  # the link is down: hello, with every client and its user
    gw.flush()
    hello = out.batches[-1].items[-1].hello
    assert [(c.client, c.user) for c in hello.clients] == [(conn.id, "ann")]
    assert hello.clients[0].session_hash == item.connected.session_hash == conn.session_hash
    gw.check()


def test_anonymous_clients_have_no_user_key_and_an_empty_user() -> None:
    gw, out = make()
    conn = gw.connect("L1", 0.0, "whatever")  # tokens off: a token is ignored
    assert conn is not None and conn.user == ""
    gw.flush()
    assert "user" not in out.frames_for("L1")[0]["message_body"]
    assert out.batches[0].items[-1].connected.user == ""


def test_a_connection_is_closed_when_its_token_expires() -> None:
    gw, out = with_tokens()
    ann = gw.connect("L1", 0.0, "ann-60")
    forever = gw.connect("L2", 0.0, "ann-forever")
    bob = gw.connect("L3", 0.0, "bob-60")
    assert ann and forever and bob
    gw.expire_tokens(59.9)
    assert out.closes == []
    gw.disconnect(bob)  # gone before its expiry: nothing to close
    gw.expire_tokens(60.0)
    assert out.closes == [("L1", 4003, "token-expired")]
    gw.expire_tokens(1e12)
    assert out.closes == [("L1", 4003, "token-expired")]  # once; a token with no exp never expires


def refresh(gw: Gateway, conn: Connection, token: object, rid: int = 1) -> None:
    body = {} if token is None else {"token": token}
    gw.client_frame(conn, json.dumps({"action": "refresh-token", "message_body": body, "id": rid}), 0.0)


def test_refresh_token_extends_the_connection() -> None:
    gw, out = with_tokens()
    conn = gw.connect("L1", 0.0, "ann-60")
    assert conn is not None
    refresh(gw, conn, "ann-120", rid=7)  # the link is down: answered here all the same
    gw.flush()
    reply = out.frames_for("L1")[-1]
    assert reply == {"action": "token-refreshed", "target": conn.id, "id": 7, "sender": "meshstream",
                     "message_body": {"user": "ann", "expires": 120}}
    gw.expire_tokens(100.0)
    assert out.closes == [] and conn.expires == 120.0
    gw.expire_tokens(120.0)
    assert out.closes == [("L1", 4003, "token-expired")]
    assert frames_of(out.batches) == []  # never forwarded
    gw.check()


def test_refresh_token_to_a_token_without_exp() -> None:
    gw, out = with_tokens()
    conn = gw.connect("L1", 0.0, "ann-60")
    assert conn is not None
    refresh(gw, conn, "ann-forever")
    gw.flush()
    assert out.frames_for("L1")[-1]["message_body"] == {"user": "ann"}
    gw.expire_tokens(1e12)
    assert out.closes == []


@pytest.mark.parametrize(("token", "code"), [
    ("forged", "bad-token"), ("old", "token-expired"), ("bob-60", "bad-token"),  # another user
    ("", "bad-token"), (None, "bad-token"), (42, "bad-token"), (["ann-120"], "bad-token"),
])
def test_a_refused_refresh_keeps_the_connection_and_its_old_token(token: object, code: str) -> None:
    gw, out = with_tokens()
    welcome(gw)
    conn = gw.connect("L1", 0.0, "ann-60")
    assert conn is not None
    refresh(gw, conn, token, rid=3)
    gw.flush()
    reply = out.frames_for("L1")[-1]
    assert (reply["action"], reply["message_body"]["code"], reply["message_body"]["action"],
            reply["id"]) == ("error", code, "refresh-token", 3)
    assert out.closes == [] and conn.expires == 60.0 and conn.user == "ann"
    assert frames_of(out.batches) == []
    gw.expire_tokens(60.0)
    assert out.closes == [("L1", 4003, "token-expired")]


def test_without_tokens_refresh_token_is_an_ordinary_action() -> None:
    gw, out = make()
    welcome(gw)
    conn = gw.connect("L1", 0.0)
    assert conn is not None
    refresh(gw, conn, "anything")
    gw.flush()
    assert frames_of(out.batches) == [(1, conn.id, "refresh-token", "")]


def test_refreshes_leave_a_bounded_expiry_heap() -> None:
    gw, _ = make(verify=lambda token: Identity("ann", float(token or 0)))
    conn = gw.connect("L1", 0.0, "10")
    assert conn is not None
    for i in range(1000):
        refresh(gw, conn, str(1000 + i))
    assert len(gw.expiries) <= 2 * len(gw.conns) + 65
    gw.check()


def test_a_refresh_counts_against_the_rate_limit() -> None:
    gw, out = with_tokens(rate_limit=1.0, rate_burst=1)
    conn = gw.connect("L1", 0.0, "ann-60")
    assert conn is not None
    refresh(gw, conn, "ann-120", rid=1)
    refresh(gw, conn, "ann-120", rid=2)
    gw.flush()
    assert [f["action"] for f in out.frames_for("L1")[1:]] == ["token-refreshed", "error"]
    assert out.frames_for("L1")[-1]["message_body"]["code"] == "rate-limited"


# ------------------------------------------------------------------ sessions and resume

def items_of(out: Outbox, kind: str) -> list[Any]:
    return [getattr(i, kind) for b in out.batches for i in b.items if i.WhichOneof("kind") == kind]


def resumed(gw: Gateway, link: str, client: str = "", reason: str = "", rooms: tuple[str, ...] = (),
            replay: tuple[bytes, ...] = (), epoch: str = "e1") -> pb.GatewayOp:
    return pb.GatewayOp(resumed=pb.ResumeResult(link=link, client=client, reason=reason,
                                                rooms=list(rooms), replay=list(replay), epoch=epoch))


def held(gw: Gateway, link: str = "L2", secret: str = "old-secret", epoch: str = "e1",
         seq: int = 7) -> tuple[Connection, pb.ResumeRequest]:
    conn = gw.connect(link, 0.0, resume=Resume(secret, ((epoch, seq), (f"{epoch}.2", 3))))
    assert conn is not None
    return conn, gw.batch.items[-1].resume


@pytest.mark.parametrize(("secret", "positions", "expected"), [
    (None, "e1:5", None),
    ("s", None, Resume("s")),
    ("s", "", Resume("s")),
    ("s", "e1:5", Resume("s", (("e1", 5),))),
    ("s", "a:b:12", Resume("s", (("a:b", 12),))),
    ("s", "e1:x", Resume("s")),  # a malformed position: best effort, not an error
    ("s", ":5", Resume("s")),
    ("s", "e1:-5", Resume("s")),
    ("s", "e1:²", Resume("s")),
    ("s", "e" * 65 + ":1", Resume("s")),  # an epoch longer than any of ours
    ("s" * 1000, "e1:1", Resume("s" * 256, (("e1", 1),))),
    ("s", "e1:0,e1.1:2,bad,:3,e1.2:9999999999999999999,e1.3:1",
     Resume("s", (("e1", 0), ("e1.1", 2), ("e1.3", 1)))),  # each malformed one alone ignored
    ("s", ",".join(f"e.{i}:1" for i in range(MAX_RESUME_POSITIONS + 5)),
     Resume("s", tuple((f"e.{i}", 1) for i in range(MAX_RESUME_POSITIONS)))),
])
def test_the_resume_query_is_parsed(secret: str | None, positions: str | None,
                                    expected: Resume | None) -> None:
    assert parse_resume(secret, positions) == expected


def test_a_held_connection_gets_nothing_until_the_answer_and_its_frames_wait() -> None:
    gw, out = make()
    welcome(gw)
    conn, request = held(gw, secret="old-secret")
    assert request.session_hash == hashlib.sha256(b"old-secret").digest()
    assert [(p.epoch, p.offset) for p in request.positions] == [("e1", 7), ("e1.2", 3)]
    assert request.link == conn.id[1:]
    assert request.new_session_hash and request.new_session_hash != request.session_hash
    gw.client_frame(conn, '{"action":"send-room","target":"r1","message_body":{"n":1}}', 0.0)
    gw.flush()
    assert out.frames_for("L2") == [] and frames_of(out.batches) == []
    assert not gw.conns and conn.held is not None
    gw.check()


def test_a_successful_resume_greets_with_the_old_id_then_the_replay_then_live_traffic() -> None:
    gw, out = make()
    welcome(gw)
    conn, request = held(gw)
    gw.client_frame(conn, '{"action":"send-room","target":"r1","message_body":{"n":1}}', 0.0)
    client = "gw9-old.0123456789abcdef"
    out_msg(gw, resumed(gw, request.link, client, rooms=("r1", LOBBY), replay=(b'{"m":1}', b'{"m":2}')),
            deliver(b'{"m":3}', room="r1"), deliver(b'{"m":4}', room=LOBBY))
    gw.flush()
    frames = out.frames_for("L2")
    greeting = frames[0]["message_body"]
    assert frames[0]["target"] == client and greeting["client"] == client
    assert greeting["resumed"] is True and greeting["epoch"] == "e1"
    assert hashlib.sha256(greeting["session"].encode()).digest() == request.new_session_hash
    assert frames[1:] == [{"m": 1}, {"m": 2}, {"m": 3}, {"m": 4}]
    assert gw.conns[client] is conn and conn.rooms == {"r1"} and conn.session_hash == request.new_session_hash
    # the frame it sent while held goes to the processor now, as its own
    assert frames_of(out.batches) == [(1, client, "send-room", "r1")]
    gw.heartbeat(0.0)
    gw.link = Link.HELLO
    gw.heartbeat(0.0)
    gw.flush()
    assert items_of(out, "hello")[-1].clients[0].session_hash == request.new_session_hash
    gw.check()


@pytest.mark.parametrize("reason", ["unknown-session", "expired", "history-lost", "user-mismatch"])
def test_a_refused_resume_is_a_new_client_told_why(reason: str) -> None:
    gw, out = make()
    welcome(gw)
    conn, request = held(gw)
    gw.client_frame(conn, '{"action":"a","target":"t"}', 0.0)
    out_msg(gw, resumed(gw, request.link, reason=reason))
    gw.flush()
    [greeting, *_] = out.frames_for("L2")
    body = greeting["message_body"]
    assert body["resumed"] is False and body["reason"] == reason
    assert body["client"] == conn.id and conn.id.startswith(GW + ".")
    [connected] = items_of(out, "connected")
    assert connected.client == conn.id
    assert connected.session_hash == hashlib.sha256(body["session"].encode()).digest()
    assert frames_of(out.batches) == [(1, conn.id, "a", "t")]
    gw.check()


def test_a_resume_is_asked_again_after_a_hello_and_a_duplicate_answer_is_dropped() -> None:
    gw, out = make()
    welcome(gw)
    conn, request = held(gw)
    gw.flush()
    gw.processor_beat(pb.ProcessorBeat(epoch="e2"), 0.0)  # a new processor: it never saw it
    gw.flush()
    kinds = [i.WhichOneof("kind") for i in out.batches[-1].items]
    assert kinds == ["hello", "resume"] and out.batches[-1].items[1].resume == request
    welcome(gw, "e2")
    out_msg(gw, resumed(gw, request.link, "gw9-old.1", epoch="e2"),
            resumed(gw, request.link, reason="unknown-session", epoch="e2"))
    gw.flush()
    assert gw.conns["gw9-old.1"] is conn and len(out.frames_for("L2")) == 1
    gw.check()


def test_more_than_the_held_bound_closes_1008() -> None:
    gw, out = make()
    welcome(gw)
    conn, _ = held(gw)
    for _ in range(HELD_FRAMES):
        gw.client_frame(conn, '{"action":"a"}', 0.0)
    assert out.closes == []
    gw.client_frame(conn, '{"action":"a"}', 0.0)
    assert out.closes == [("L2", 1008, "flood: too many frames before the resume")]
    gw.check()


def test_an_unanswered_resume_is_closed_1013_after_the_deadline() -> None:
    gw, out = make()
    welcome(gw)
    conn, request = held(gw)
    gw.keepalive(RESUME_TIMEOUT - 1)
    assert out.closes == []
    gw.keepalive(RESUME_TIMEOUT)
    assert out.closes == [("L2", 1013, "processor-unavailable")]
    gw.disconnect(conn, clean=False)
    # a late success for a connection that is gone: reported, so the processor keeps no ghost
    out_msg(gw, resumed(gw, request.link, "gw9-old.0123456789abcdef"))
    gw.flush()
    assert items_of(out, "away") == ["gw9-old.0123456789abcdef"]
    gw.check()


def test_a_late_answer_for_a_cleanly_closed_link_is_a_disconnect_and_a_refusal_nothing() -> None:
    gw, out = make()
    welcome(gw)
    a, ra = held(gw, "La")
    b, rb = held(gw, "Lb")
    gw.disconnect(a, clean=True)
    gw.disconnect(b, clean=False)
    out_msg(gw, resumed(gw, ra.link, "gw9-old.1"), resumed(gw, rb.link, reason="unknown-session"))
    gw.flush()
    assert items_of(out, "disconnected") == ["gw9-old.1"] and items_of(out, "away") == []
    assert not gw.orphans and not gw.waiting
    gw.check()


def test_a_resume_takes_over_a_connection_of_the_same_client_here() -> None:
    gw, out = make()
    welcome(gw)
    old = gw.connect("L1", 0.0)
    assert old is not None
    out_msg(gw, joined(old.id, "r1"))
    conn, request = held(gw)
    out_msg(gw, resumed(gw, request.link, old.id, rooms=("r1",)))
    assert out.closes == [("L1", 4002, "resumed elsewhere")]
    assert gw.conns[old.id] is conn and gw.rooms["r1"] == {conn}
    gw.disconnect(old, clean=False)  # the old link ends: nothing to report
    gw.flush()
    assert items_of(out, "away") == [] and items_of(out, "disconnected") == []
    gw.check()


@pytest.mark.parametrize(("how", "kind"), [
    ("client-close", "disconnected"),
    ("lost", "away"),
    ("flood", "disconnected"),
    ("slow", "disconnected"),
    ("processor-close", "disconnected"),
    ("keepalive", "away"),
    ("restart", "away"),
])
def test_clean_ends_leave_and_the_others_are_away(how: str, kind: str) -> None:
    gw, out = make(rate_limit=1.0, rate_burst=1)
    welcome(gw)
    conn = gw.connect("L1", 0.0)
    assert conn is not None
    clean = how == "client-close"
    if how == "flood":
        for _ in range(5):
            gw.client_frame(conn, '{"action":"a"}', 0.0)
    elif how == "slow":
        gw.send_queue = 0
        out.buffered = 1
        gw.flush()
    elif how == "processor-close":
        out_msg(gw, pb.GatewayOp(close=pb.CloseClient(client=conn.id, code=4001, reason="bye")))
    elif how == "keepalive":
        gw.keepalive_one(conn, PING_INTERVAL)
        gw.keepalive_one(conn, PING_INTERVAL + PING_TIMEOUT)
    elif how == "restart":
        gw.close_all(CloseCode.SERVICE_RESTART, "gateway restarting")
        assert out.closes == [("L1", 1012, "gateway restarting")]
    assert conn.closing == (how not in ("client-close", "lost"))
    gw.disconnect(conn, clean=clean)
    gw.flush()
    reported = {k: items_of(out, k) for k in ("disconnected", "away")}
    assert reported == {"disconnected": [], "away": [], kind: [conn.id]}
    gw.check()


@pytest.mark.parametrize("resumed", [True, False])
def test_a_gateway_restart_closes_held_connections_once_answered_greeting_first(resumed: bool) -> None:
    """The processor may have rotated the session already: the client must see its new
    secret before the 1012, or it could not resume again."""
    gw, out = make()
    welcome(gw)
    live = gw.connect("L1", 0.0)
    conn, request = held(gw, "L2")
    gw.close_all(CloseCode.SERVICE_RESTART, "gateway restarting")
    assert out.closes == [("L1", 1012, "gateway restarting")]
    assert live is not None and live.away_on_close
    result = pb.ResumeResult(link=request.link, client="gw1-abc.r" if resumed else "",
                             reason="" if resumed else "unknown-session", epoch="e1")
    out_msg(gw, pb.GatewayOp(resumed=result))
    gw.flush()
    assert out.closes[-1] == ("L2", 1012, "gateway restarting") and conn.away_on_close
    greeting = out.frames_for("L2")[0]
    assert greeting["action"] == "client-connected" and greeting["message_body"]["session"]
    assert greeting["message_body"]["resumed"] is resumed


def test_held_connections_count_against_the_limits() -> None:
    gw, out = make(max_connections=1, max_connections_per_ip=1)
    welcome(gw)
    conn = gw.connect("L1", 0.0, peer="p", resume=Resume("s"))
    assert conn is not None
    assert gw.connect("L2", 0.0, peer="q") is None
    gw.disconnect(conn, clean=False)
    assert gw.connect("L3", 0.0, peer="p") is not None
    gw.check()


# ------------------------------------------------------------------ a big replay, paced

def big(n: int, size: int = 20_000) -> bytes:
    return b'{"n":%d,"p":"%s"}' % (n, b"x" * size)


def paced_resume(send_queue: int = 100_000, replay: int = 10) -> tuple[Gateway, Outbox, Connection]:
    """A resume of a client of r1 whose transport fills (nothing read) with `replay` frames of
    20 KB: pace 50 KB, so a few frames go out, then the rest waits for `drained()`."""
    gw, out = make(send_queue=send_queue)
    welcome(gw)
    conn, request = held(gw)
    out.transports["L2"] = 0
    out_msg(gw, resumed(gw, request.link, "gw9-old.1", rooms=("r1",),
                        replay=tuple(big(i) for i in range(replay))))
    return gw, out, conn


def drain(gw: Gateway, out: Outbox, conn: Connection) -> None:
    """The client reads everything buffered; the adapter reports it."""
    out.transports[conn.link] = 0
    gw.drained(conn)


def test_a_replay_is_written_paced_as_ordinary_messages_after_the_greeting() -> None:
    gw, out, conn = paced_resume()
    gw.check()
    # the greeting and as many frames as one message of PACED_MESSAGE holds, then it waits
    [(_, first)] = out.writes
    assert len(first) <= PACED_MESSAGE and out.transports["L2"] > gw.pace
    greeting, *frames = out.frames_for("L2")
    assert greeting["action"] == "client-connected" and greeting["message_body"]["resumed"] is True
    assert [f["n"] for f in frames] == [0, 1, 2]
    assert gw.paced == {conn}
    # live frames meanwhile wait behind it, in order
    out_msg(gw, deliver(big(100), room="r1"))
    gw.flush()
    assert len(out.writes) == 1
    while conn.backlog is not None:
        drain(gw, out, conn)
        gw.check()
    assert all(len(p) <= PACED_MESSAGE for _, p in out.writes)
    assert [f["n"] for f in out.frames_for("L2")[1:]] == [*range(10), 100]
    # all written: frames go straight out again, one payload per tick
    writes = len(out.writes)
    out_msg(gw, deliver(b'{"n":101}', room="r1"), deliver(b'{"n":102}', room="r1"))
    gw.flush()
    assert out.writes[writes:] == [("L2", b'{"n":101}\n{"n":102}')] and not gw.paced
    gw.check()


def test_a_small_replay_goes_out_at_once_and_a_bigger_frame_alone() -> None:
    gw, out = make()
    welcome(gw)
    conn, request = held(gw)
    huge = big(1, PACED_MESSAGE)
    out_msg(gw, resumed(gw, request.link, "gw9-old.1", replay=(b'{"n":0}', huge, b'{"n":2}')))
    assert [p for _, p in out.writes][1:] == [huge, b'{"n":2}']
    assert out.writes[0][1].endswith(b'\n{"n":0}') and conn.backlog is None and not gw.paced
    gw.check()


def test_frames_behind_a_replay_past_the_send_queue_close_it_4000_and_it_leaves() -> None:
    gw, out, conn = paced_resume(replay=40)  # 800 KB of replay: not counted
    for i in range(4):  # 80 KB behind it: within the send queue (100 KB)
        out_msg(gw, deliver(big(100 + i), room="r1"))
        gw.flush()
    assert out.closes == []
    gw.check()
    out_msg(gw, deliver(big(200), room="r1"))  # past it
    gw.flush()
    assert out.closes == [("L2", 4000, "slow consumer: send queue full")]
    assert conn.backlog is None and not gw.paced  # what waited is dropped
    drain(gw, out, conn)  # a late drain writes nothing
    assert len(out.writes) == 1
    gw.disconnect(conn, clean=False)
    gw.flush()
    # closed for cause, like any slow consumer: removed, not away
    assert items_of(out, "disconnected") == ["gw9-old.1"] and items_of(out, "away") == []
    gw.check()


def test_a_paced_connection_lost_is_away_and_its_backlog_dropped() -> None:
    gw, out, conn = paced_resume()
    gw.disconnect(conn, clean=False)
    gw.flush()
    assert items_of(out, "away") == ["gw9-old.1"] and conn.backlog is None and not gw.paced
    gw.check()


def test_a_drain_reported_from_inside_a_write_changes_nothing() -> None:
    gw, out = make(send_queue=100_000)
    welcome(gw)
    conn, request = held(gw)
    out.transports["L2"] = 0
    write = out.write

    def write_and_drain(link: Any, payload: bytes) -> int:
        buffered = write(link, payload)
        gw.drained(conn)  # as if the transport resumed the protocol from inside its write
        return buffered

    out.write = write_and_drain  # type: ignore[method-assign]
    out_msg(gw, resumed(gw, request.link, "gw9-old.1", replay=tuple(big(i) for i in range(10))))
    assert len(out.writes) == 1 and gw.paced == {conn}
    gw.check()


# ------------------------------------------------------------------ failed resumes

def guess(gw: Gateway, out: Outbox, link: str, peer: str = "p", now: float = 0.0,
          reason: str = "unknown-session") -> Connection | None:
    """A resume with a secret that is no session: answered `reason` by the processor."""
    conn = gw.connect(link, now, peer=peer, resume=Resume("guessed"))
    if conn is not None:
        out_msg(gw, resumed(gw, conn.id[1:], reason=reason))
    return conn


def test_failed_resumes_are_limited_per_source_address() -> None:
    gw, out = make(resume_failures=1.0, resume_failure_burst=3)
    welcome(gw)
    assert all(guess(gw, out, f"L{i}", reason=r) for i, r in
               enumerate(["unknown-session", "expired", "unknown-session"]))
    gw.flush()
    resumes = len(items_of(out, "resume"))
    assert guess(gw, out, "L3") is None
    assert out.closes == [("L3", 1013, "too-many-failed-resumes")]
    assert gw.drops["failed-resumes"] == 1 and gw.closes[1013] == 1
    gw.flush()
    assert len(items_of(out, "resume")) == resumes  # the processor is not asked
    assert gw.connect("L4", 0.0, peer="p") is not None  # a new client is not a guess
    assert guess(gw, out, "L5", peer="q") is not None  # nor is another address limited
    assert guess(gw, out, "L6", now=1.0) is not None  # one more a second
    assert guess(gw, out, "L7", now=1.0) is None
    gw.check()


@pytest.mark.parametrize("reason", ["history-lost", "user-mismatch", ""])
def test_only_unknown_sessions_count_as_failed_resumes(reason: str) -> None:
    gw, out = make(resume_failures=1.0, resume_failure_burst=1)
    welcome(gw)
    for i in range(3):
        conn = gw.connect(f"L{i}", 0.0, peer="p", resume=Resume("s"))
        assert conn is not None
        out_msg(gw, resumed(gw, conn.id[1:], client=f"gw9-old.{i}" if not reason else "",
                            reason=reason))
    assert out.closes == [] and not gw.failed_resumes.buckets
    gw.check()


def test_a_failed_resume_of_a_connection_gone_still_counts() -> None:
    gw, out = make(resume_failures=1.0, resume_failure_burst=1)
    welcome(gw)
    conn = gw.connect("L1", 0.0, peer="p", resume=Resume("guessed"))
    assert conn is not None
    gw.disconnect(conn, clean=True)  # it does not wait for the answer
    out_msg(gw, resumed(gw, conn.id[1:], reason="unknown-session"))
    assert guess(gw, out, "L2") is None
    gw.check()


def test_the_failed_resume_limit_is_on_by_default_and_its_map_bounded() -> None:
    gw, _ = make()
    assert (gw.failed_resumes.rate, gw.failed_resumes.burst) == (RESUME_FAILURES, RESUME_FAILURE_BURST)
    limit = ResumeFailures(1.0, 2, addresses=3)
    for i in range(10):
        limit.failed(f"a{i}", 0.0)
        limit.check()
    assert list(limit.buckets) == ["a7", "a8", "a9"]
    limit.failed("a9", 0.0)
    assert not limit.allowed("a9", 0.5) and limit.allowed("a9", 1.0)
    assert limit.allowed("a8", 1.0) and "a8" not in limit.buckets  # full again: forgotten
    off = ResumeFailures(0.0, 0)
    off.failed("a", 0.0)
    assert off.allowed("a", 0.0) and not off.buckets


# ------------------------------------------------------------------ properties

ROOMS = ["r1", "r2", "r3"]


class GatewayMachine(RuleBasedStateMachine):
    """Random connects, memberships, deliveries, frames, link changes, lost connections and
    resumes against a model: every room message reaches exactly the room's local members at
    that moment (minus the excluded), in order, and a resumed client gets what it missed
    (the processor's replay) before anything newer, also when its transport fills and
    drains while the replay is written; frames are numbered without gaps; the core's
    invariants hold."""

    STALLED = (1 << 39) + 1  # a transport above the pace (half the send queue), far below the queue

    def __init__(self) -> None:
        super().__init__()
        self.gw, self.out = make(send_queue=1 << 40)  # the slow-consumer bound: tested above
        self.conns: list[Connection] = []
        self.members: dict[str, set[str]] = {r: set() for r in ROOMS}
        self.expected: dict[str, list[bytes]] = {}
        self.n = 0
        self.epoch = 1
        self.away: dict[str, tuple[set[str], list[bytes]]] = {}  # client -> its rooms, missed
        welcome(self.gw, "e1")

    @rule()
    def connect(self) -> None:
        conn = self.gw.connect(f"L{len(self.conns)}", 0.0)
        self.conns.append(conn)
        self.expected[conn.id] = []

    def live(self) -> list[Connection]:
        return [c for c in self.conns if self.gw.conns.get(c.id) is c]

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.live()))
        self.gw.disconnect(conn)
        for m in self.members.values():
            m.discard(conn.id)
        del self.expected[conn.id]

    @precondition(lambda self: any(c.backlog is None for c in self.live()))
    @rule(data=st.data())
    def lose(self, data: st.DataObject) -> None:
        """The connection ends uncleanly: the client is away (kept by the processor; a real
        one would replay what a lost backlog held too: not modelled here)."""
        conn = data.draw(st.sampled_from([c for c in self.live() if c.backlog is None]))
        self.gw.disconnect(conn, clean=False)
        rooms = {r for r, m in self.members.items() if conn.id in m}
        for m in self.members.values():
            m.discard(conn.id)
        self.away[conn.id] = (rooms, [])

    @precondition(lambda self: self.away)
    @rule(data=st.data(), stalled=st.booleans())
    def resume(self, data: st.DataObject, stalled: bool) -> None:
        """It comes back on a new connection; the processor replays what it missed (into a
        transport that fills at the first write when `stalled`)."""
        client = data.draw(st.sampled_from(sorted(self.away)))
        rooms, missed = self.away.pop(client)
        if stalled:  # direct messages held for it too: more than one paced write holds
            for _ in range(data.draw(st.integers(1, 3))):
                self.n += 1
                missed.append(b'{"n":%d,"p":"%s"}' % (self.n, b"x" * 70_000))
        conn = self.gw.connect(f"L{len(self.conns)}", 0.0, resume=Resume("s"))
        assert conn is not None
        if stalled:
            self.out.transports[conn.link] = self.STALLED
        self.conns.append(conn)
        out_msg(self.gw, pb.GatewayOp(resumed=pb.ResumeResult(
            link=conn.id[1:], client=client, rooms=sorted(rooms), replay=missed, epoch="e")))
        assert conn.id == client
        self.expected[client] += missed
        for room in rooms:
            self.members[room].add(client)

    @precondition(lambda self: self.live())
    @rule(data=st.data(), room=st.sampled_from(ROOMS), join=st.booleans())
    def membership(self, data: st.DataObject, room: str, join: bool) -> None:
        conn = data.draw(st.sampled_from(self.live()))
        out_msg(self.gw, joined(conn.id, room) if join else left(conn.id, room))
        (self.members[room].add if join else self.members[room].discard)(conn.id)

    @precondition(lambda self: self.live())
    @rule(data=st.data(), size=st.sampled_from([0, 70_000]))
    def direct_message(self, data: st.DataObject, size: int) -> None:
        conn = data.draw(st.sampled_from(sorted(self.live(), key=lambda c: c.backlog is None)))
        self.n += 1
        frame = b'{"n":%d,"p":"%s"}' % (self.n, b"x" * size)
        out_msg(self.gw, deliver(frame, clients=(conn.id,)))
        self.expected[conn.id].append(frame)

    @precondition(lambda self: bool(self.gw.paced))
    @rule(data=st.data(), again=st.booleans())
    def drain(self, data: st.DataObject, again: bool) -> None:
        """A paced connection's client reads: its transport drains (and fills again at the
        next write if `again`)."""
        conn = data.draw(st.sampled_from([c for c in self.conns if c in self.gw.paced]))
        if not again:
            del self.out.transports[conn.link]
        self.gw.drained(conn)

    @rule(room=st.sampled_from(ROOMS), data=st.data(), size=st.sampled_from([0, 70_000]))
    def room_message(self, room: str, data: st.DataObject, size: int) -> None:
        self.n += 1
        frame = b'{"n":%d,"p":"%s"}' % (self.n, b"x" * size)  # a big one: a paced write of its own
        exclude = data.draw(st.lists(st.sampled_from(sorted(self.members[room]) or [""]), max_size=2))
        out_msg(self.gw, deliver(frame, room=room, exclude=tuple(e for e in exclude if e)))
        for client in self.members[room] - set(exclude):
            self.expected[client].append(frame)
        for client, (rooms, missed) in self.away.items():
            if room in rooms and client not in exclude:
                missed.append(frame)  # expected once it resumes

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def client_frame(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(self.live()))
        self.gw.client_frame(conn, '{"action":"x"}', 0.0)

    @rule()
    def new_processor(self) -> None:
        self.epoch += 1
        self.gw.processor_beat(pb.ProcessorBeat(epoch=f"e{self.epoch}"), 0.0)
        welcome(self.gw, f"e{self.epoch}")

    @rule()
    def flush(self) -> None:
        self.gw.flush()

    @invariant()
    def consistent(self) -> None:
        self.gw.check()
        assert {r: {c.id for c in m} for r, m in self.gw.rooms.items()} == \
            {r: m for r, m in self.members.items() if m}

    def teardown(self) -> None:
        self.gw.flush()
        for conn in list(self.gw.paced):
            del self.out.transports[conn.link]
            self.gw.drained(conn)
        self.gw.check()
        # a client's frames: those of each of its connections in turn (a lost one's last
        # frames may be written after its resume began on the next: no client sees both)
        per_link: dict[str, list[bytes]] = {c.link: [] for c in self.conns}
        for link, payload in self.out.writes:
            per_link[link] += [f for f in payload.split(b"\n") if f.startswith(b'{"n"')]
        got: dict[str, list[bytes]] = {c: [] for c in self.expected}
        for conn in self.conns:
            if conn.id in got:
                got[conn.id] += per_link[conn.link]
        assert got == self.expected
        seqs = [row[0] for row in frames_of(self.out.batches)]
        assert seqs == list(range(1, len(seqs) + 1))


TestGatewayMachine = GatewayMachine.TestCase
TestGatewayMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@pytest.mark.parametrize("resume", [None, Resume("secret", (("e1", 5),))])
def test_a_connect_that_fails_keeps_nothing_and_takes_no_slot(resume: Resume | None,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug while connecting (the adapter answers 500): the address's slot is not taken,
    and the connection is neither a client nor a held resume."""
    gw, _ = make(max_connections_per_ip=1)
    welcome(gw)

    def broken(*args: Any) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(gw, "_hold" if resume else "_greet", broken)
    for _ in range(3):
        with pytest.raises(ValueError):
            gw.connect("a", 0.0, peer="10.0.0.1", resume=resume)
    assert not gw.per_peer and not gw.conns and not gw.waiting
    monkeypatch.undo()
    assert gw.connect("b", 0.0, peer="10.0.0.1") is not None  # the address is not locked out


def test_a_logged_processor_silent_keeps_frames_and_its_standby_takes_them_in_order() -> None:
    """Failover on a log (Link.WAIT): after the silence the gateway takes frames on, keeps
    them, and only probes the processor it tries with a heartbeat; the other processor's beat
    (the same epoch, us acknowledged) brings the link up: a Resent with what the old one
    never acknowledged, then what was kept, in order; nobody gets an error."""
    gw, out = make(peer_timeout=1.0, pair=True)
    c = gw.connect("L1", 0.0)
    welcome(gw, "e1")
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r1", logged=True, acked={GW: 0}), 0.0)
    gw.client_frame(c, json.dumps({"action": "a", "target": "r", "id": "sent"}), 0.1)
    gw.flush()
    gw.heartbeat(1.5)
    assert (gw.link, out.switches) == (Link.WAIT, 1)
    assert "processor silent: keeping frames for it" in out.notices
    gw.client_frame(c, json.dumps({"action": "b", "target": "r", "id": "kept"}), 1.6)
    gw.flush()
    assert [i.WhichOneof("kind") for i in out.batches[-1].items] == ["heartbeat"]  # a probe only
    sent = len(out.batches)
    gw.heartbeat(1.8)
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r2", logged=True, acked={GW: 0}), 2.0,
                      other=True)  # from the processor we are not talking to: it took over
    assert gw.link is Link.UP and out.switches == 2
    gw.flush()
    resent, kept = out.batches[sent + 1:sent + 3]
    assert resent.items[0].HasField("resent") and frames_of([resent]) == [(1, c.id, "a", "r")]
    assert frames_of([kept]) == [(2, c.id, "b", "r")]
    assert [f["action"] for f in out.frames_for("L1")] == ["client-connected"]  # no error
    gw.check()


def test_a_beat_of_the_other_processor_is_heeded_only_while_waiting() -> None:
    gw, out = make(peer_timeout=1.0, pair=True)
    welcome(gw, "e1")
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r1", logged=True, acked={GW: 0}), 0.0)
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r2", logged=True, acked={GW: 0}), 0.5,
                      other=True)
    assert (gw.link, out.switches, gw.processor_run) == (Link.UP, 0, "r1")
    gw.heartbeat(1.5)
    gw.processor_beat(pb.ProcessorBeat(epoch="e9", run="r2", logged=True, acked={GW: 0}), 1.6,
                      other=True)  # another epoch: not the same state
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r1", logged=True, acked={GW: 0}), 1.7,
                      other=True)  # the run we wait for, from the other socket: made before
    assert (gw.link, out.switches) == (Link.WAIT, 1)


def test_waiting_for_a_logged_processor_gives_up_after_a_while() -> None:
    gw, out = make(peer_timeout=1.0)
    c = gw.connect("L1", 0.0)
    welcome(gw, "e1")
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r1", logged=True, acked={GW: 0}), 0.0)
    gw.heartbeat(1.5)
    assert gw.link is Link.WAIT
    gw.client_frame(c, json.dumps({"action": "a", "target": "r", "id": "x"}), 1.6)
    gw.flush()
    t = 1.5
    while gw.link is Link.WAIT:
        t += 1.1
        gw.heartbeat(t)
        assert t < 1.5 + (WAIT_TIMEOUTS + 2) * 1.0
    assert gw.link is Link.HELLO and t > 1.5 + WAIT_TIMEOUTS * 1.0
    gw.flush()
    assert out.batches[-1].items[-1].WhichOneof("kind") == "hello"
    welcome(gw, "e1")
    gw.flush()
    codes = [f["message_body"]["code"] for f in out.frames_for("L1") if f["action"] == "error"]
    assert codes == ["processor-restarted", "messages-lost"]  # the frame, and the wait said so
    gw.check()


def test_gatewayouts_past_a_missing_one_wait_for_it_from_a_logged_processor() -> None:
    """After a restart or a takeover the processor sends again what we did not apply;
    newer ones may come first: they are held and applied in order; one never sent again is
    a gap after two heartbeats."""
    gw, out = make()
    c = gw.connect("L1", 0.0)
    welcome(gw, "e1")
    gw.processor_beat(pb.ProcessorBeat(epoch="e1", run="r1", logged=True, acked={GW: 0}), 0.0)
    first = gw.out_seq
    frame = lambda n: deliver(json.dumps({"action": "chat", "n": n}).encode(), clients=(c.id,))  # noqa: E731
    out_msg(gw, frame(3), seq=first + 3)
    out_msg(gw, frame(2), seq=first + 2)
    assert gw.out_seq == first and not gw.drops["processor-gap"]
    out_msg(gw, frame(1), seq=first + 1)
    out_msg(gw, frame(2), seq=first + 2)  # sent again
    gw.flush()
    assert [f.get("n") for f in out.frames_for("L1") if f["action"] == "chat"] == [1, 2, 3]
    assert gw.out_seq == first + 3 and not gw.early
    out_msg(gw, frame(5), seq=first + 5)  # 4 never comes
    for t in (1.0, 2.0, 3.0):
        gw.heartbeat(t)
    gw.flush()
    assert gw.drops["processor-gap"] == 1 and gw.out_seq == first + 5
    assert [f.get("n") for f in out.frames_for("L1") if f["action"] == "chat"] == [1, 2, 3, 5]
    gw.check()
