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


async def test_default_policies_without_tokens(cluster: Cluster) -> None:
    """JWT off (the default): no client joins a private room by itself, whatever it sends;
    list-members of the lobby is forbidden; list-rooms is one bounded page with a cursor;
    direct messages work as before (--direct-messages on)."""
    (a,), (b,) = await clients_on(cluster.url, 2)
    try:
        for frame in ({"action": "join-room", "target": "private-x", "id": 1,
                       "message_body": {"token": "eyJhbGciOiJub25lIn0.e30."}},
                      {"action": "join-room", "target": "mesh-global", "id": 2,
                       "message_body": {"roomname": "private-x"}},
                      {"action": "list-members", "target": "mesh-global", "id": 3}):
            await a.send(frame)
            err = await a.expect("error", id=frame["id"])
            assert err["message_body"]["code"] == "forbidden", frame
        await a.request({"action": "join-room", "target": "r2", "id": 4}, "client-joined-room")
        listed = await a.request({"action": "list-rooms", "id": 5}, "room-list")
        assert listed["message_body"] == {
            "rooms": [{"name": "mesh-global", "members": 2}, {"name": "r2", "members": 1}],
            "next": None}
        await a.send({"action": "psst", "target": b.id, "IsTargetClient": True})
        assert (await b.expect("psst"))["sender"] == a.id
    finally:
        await a.close()
        await b.close()
