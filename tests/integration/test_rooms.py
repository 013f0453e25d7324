"""Rooms across gateways: real processes, real ZeroMQ, real WebSockets."""

from __future__ import annotations

from tests.conftest import Cluster, clients_on


async def test_room_broadcast_across_gateways(cluster: Cluster) -> None:
    (a,), (b,) = await clients_on(cluster.url, 2)
    assert a.gateway != b.gateway
    joined = await a.request({"action": "join-room", "target": "r1", "id": 7}, "client-joined-room")
    assert joined["sender"] == a.id and joined["target"] == "r1"
    await b.send({"action": "join-room", "target": "mesh-global", "message_body": {"roomname": "r1"}})
    await b.expect("client-joined-room", sender=b.id)
    notice = await a.expect("client-joined-room", sender=b.id)
    assert notice["message_body"] == {"client": b.id, "room": "r1"}

    await b.send({"action": "send-message", "target": "r1", "message_body": {"text": "hi"},
                  "sender": "someone-else"})
    for c in (a, b):
        got = await c.expect("send-message")
        assert got["sender"] == b.id
        assert got["message_body"] == {"text": "hi"}
    for c in (a, b):
        await c.close()
