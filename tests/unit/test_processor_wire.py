"""The hand-encoded GatewayOut ops (meshstream_zmq.wire) are exactly what protobuf would produce."""

from __future__ import annotations

from typing import Any

import pytest

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.wire import deliver_op, varint
from services.processor import ZmqOutbox


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
    out.flush()
    out.deliver("gw1-x", frame, room="r")
    out.flush()
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
