"""The client protocol end to end: real gateways, a real processor, real WebSockets.

One cluster (2 gateways) serves the whole module; every test uses its own rooms.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.conftest import Client, Cluster
from tests.integration import support
from tests.integration.support import DEADLINE, join, sync, uid

spread = support.spread  # fixture: clients on distinct gateways
shared_cluster, cluster = support.shared_cluster, support.cluster  # fixtures: one cluster per module

LOBBY = "mesh-global"


def of(action: str, **fields: Any):  # noqa: ANN201
    def match(m: dict[str, Any]) -> bool:
        return m.get("action") == action and all(m.get(k) == v for k, v in fields.items())
    return match


async def all_join(room: str, clients: list[Client]) -> None:
    """Join one by one; each joiner and every earlier member hears of it."""
    for i, c in enumerate(clients):
        notice = await join(c, room)
        assert notice["sender"] == c.id and notice["target"] == room
        assert notice["message_body"] == {"client": c.id, "room": room}
        for earlier in clients[:i]:
            seen = await earlier.expect("client-joined-room", sender=c.id, target=room)
            assert "id" not in seen, "another client's request id must not leak"


async def test_room_across_two_gateways_many_clients(spread) -> None:
    (a1, a2), (b1, b2) = await spread(2, 2)
    assert a1.gateway == a2.gateway != b1.gateway == b2.gateway
    members = [a1, b1, a2, b2]
    room = uid("room")
    await all_join(room, members)

    for sender in members:
        for n in range(3):
            await sender.send({"action": "chat", "target": room, "sender": "spoofed",
                               "message_body": {"n": n, "from": sender.id}})
    for c in members:
        for sender in members:
            for n in range(3):  # per sender, in order
                got = await c.next(lambda m, s=sender: m["action"] == "chat"
                                   and m["message_body"]["from"] == s.id)
                assert got["sender"] == sender.id
                assert got["target"] == room
                assert got["message_body"] == {"n": n, "from": sender.id}
    for c in members:  # exactly once: nothing else arrived after a round trip
        await sync(c)
        assert not [m for m in c.inbox if m["action"] == "chat"], c.inbox

    members_reply = await a1.request({"action": "list-members", "target": room, "id": 1},
                                     "member-list")
    assert sorted(members_reply["message_body"]["members"]) == sorted(c.id for c in members)


async def test_direct_message_reaches_only_its_target(spread) -> None:
    (a1, a2), (b1, b2) = await spread(2, 2)
    everyone = [a1, a2, b1, b2]
    # across gateways, and within one gateway
    for src, dst in ((a1, b2), (b1, a2), (a1, a2)):
        token = uid("dm")
        await src.send({"action": "whisper", "target": dst.id, "IsTargetClient": True,
                        "message_body": {"token": token}, "sender": "spoofed"})
        got = await dst.expect("whisper")
        assert got["message_body"] == {"token": token}
        assert got["sender"] == src.id
        assert got["target"] == dst.id
        assert got.get("IsTargetClient") is True
        for c in everyone:
            await sync(c)
            assert not [m for m in c.inbox if m["action"] == "whisper"], (c.id, c.inbox)

    # a direct message with an id, to a client sharing no room with the sender
    await a1.send({"action": "whisper", "target": b1.id, "IsTargetClient": True, "id": "dm-1"})
    got = await b1.expect("whisper")
    assert got["sender"] == a1.id


async def test_presence_room_list_and_member_list(spread) -> None:
    (a, c), (b, _) = await spread(2, 2)
    room1, room2 = uid("pres"), uid("pres")
    await all_join(room1, [a, b, c])
    await all_join(room2, [b])

    reply = await a.request({"action": "list-rooms", "id": "rooms-1"}, "room-list")
    assert reply["id"] == "rooms-1"
    counts = {r["name"]: r["members"] for r in reply["message_body"]["rooms"]}
    assert counts[room1] == 3
    assert counts[room2] == 1
    assert LOBBY in counts and counts[LOBBY] >= 3
    for r in reply["message_body"]["rooms"]:
        assert set(r) == {"name", "members"}

    reply = await b.request({"action": "list-members", "target": room1, "id": 5}, "member-list")
    assert reply["target"] == room1 and reply["id"] == 5
    assert sorted(reply["message_body"]["members"]) == sorted([a.id, b.id, c.id])
    # presence of a room one does not belong to is public, like list-rooms
    reply = await a.request({"action": "list-members", "target": room2}, "member-list")
    assert reply["message_body"]["members"] == [b.id]
    # ... but not of the lobby, which lists every client (forbidden since issue 9)
    reply = await a.request({"action": "list-members", "target": LOBBY, "id": "lobby"}, "error")
    assert reply["message_body"]["code"] == "forbidden"


async def test_leave_room_and_empty_room_is_deleted(spread) -> None:
    (a,), (b,) = await spread(2, 1)
    room = uid("leave")
    await all_join(room, [a, b])

    left = await a.request({"action": "leave-room", "target": room, "id": "bye"},
                           "client-left-room")
    assert left["sender"] == a.id and left["id"] == "bye"
    assert left["message_body"] == {"client": a.id, "room": room}
    notice = await b.expect("client-left-room", sender=a.id, target=room)
    assert "id" not in notice
    # a no longer receives the room's traffic; b does
    await b.send({"action": "chat", "target": room, "message_body": {"x": 1}})
    await b.expect("chat", sender=b.id)
    await sync(a)
    assert not [m for m in a.inbox if m["action"] == "chat"]
    reply = await b.request({"action": "list-members", "target": room}, "member-list")
    assert reply["message_body"]["members"] == [b.id]

    await b.request({"action": "leave-room", "target": room}, "client-left-room")
    rooms = await a.request({"action": "list-rooms", "id": 1}, "room-list")
    assert room not in {r["name"] for r in rooms["message_body"]["rooms"]}
    err = await a.request({"action": "list-members", "target": room, "id": 2}, "error")
    assert err["message_body"]["code"] == "unknown-room"

    # the name is free again: joining re-creates it, with a fresh member list
    await join(a, room)
    reply = await a.request({"action": "list-members", "target": room}, "member-list")
    assert reply["message_body"]["members"] == [a.id]


async def test_disconnect_cleans_up(cluster: Cluster, spread) -> None:
    (a,), (b,) = await spread(2, 1)
    c = await Client.connect(cluster.url)
    shared, solo = uid("disc"), uid("solo")
    await all_join(shared, [a, b, c])
    await all_join(solo, [c])
    await c.close()

    for member in (a, b):
        notice = await member.expect("client-left-room", sender=c.id, target=shared)
        assert notice["message_body"] == {"client": c.id, "room": shared}

    reply = await a.request({"action": "list-members", "target": shared}, "member-list")
    assert sorted(reply["message_body"]["members"]) == sorted([a.id, b.id])
    rooms = await b.request({"action": "list-rooms"}, "room-list")
    names = {r["name"]: r["members"] for r in rooms["message_body"]["rooms"]}
    assert solo not in names, "a room emptied by a disconnect is deleted"
    assert names[shared] == 2
    err = await a.request({"action": "hi", "target": c.id, "IsTargetClient": True, "id": 3},
                          "error")
    assert err["message_body"]["code"] == "unknown-client"

    # the last members disconnecting delete the room too (d may sit on another gateway
    # than b, so b's disconnect can reach the processor after d's query: poll)
    d = await Client.connect(cluster.url)
    try:
        await a.close()
        await b.expect("client-left-room", sender=a.id, target=shared)
        await b.close()
        deadline = time.monotonic() + DEADLINE
        while True:
            rooms = await d.request({"action": "list-rooms"}, "room-list")
            if shared not in {r["name"] for r in rooms["message_body"]["rooms"]}:
                break
            assert time.monotonic() < deadline, "the emptied room was never deleted"
            await asyncio.sleep(0.05)
    finally:
        await d.close()


@pytest.mark.parametrize("rid", ["abc", "", "ünï-😀", 0, 42, -7, 3.5, 2**53])
async def test_request_id_echoed_on_replies_and_errors(spread, rid: object) -> None:
    (a,), (b,) = await spread(2, 1)
    room = uid("ids")

    joined = await a.request({"action": "join-room", "target": room, "id": rid},
                             "client-joined-room")
    assert joined["id"] == rid and type(joined["id"]) is type(rid)
    got = await a.request({"action": "list-rooms", "id": rid}, "room-list")
    assert got["id"] == rid
    got = await a.request({"action": "list-members", "target": room, "id": rid}, "member-list")
    assert got["id"] == rid

    # errors: from the processor (routing) and from the gateway (validation)
    for bad in ({"action": "chat", "target": uid("nowhere"), "id": rid},
                {"action": "join-room", "target": room, "id": rid},
                {"action": "chat", "target": "x" * 65, "id": rid},
                {"action": "chat", "target": room, "message_body": [1], "id": rid},
                {"action": "", "target": room, "id": rid},
                {"target": room, "id": rid},
                {"action": "chat", "target": 5, "id": rid},
                {"action": "w", "target": "nobody", "IsTargetClient": True, "id": rid}):
        await a.send(bad)
        err = await a.expect("error")
        assert err.get("id") == rid and type(err["id"]) is type(rid), (bad, err)

    # b's reply carries b's id, never a's
    await b.send({"action": "list-rooms", "id": "from-b"})
    got = await b.expect("room-list")
    assert got["id"] == "from-b"
    left = await a.request({"action": "leave-room", "target": room, "id": rid}, "client-left-room")
    assert left["id"] == rid
    await sync(a)
    assert not [m for m in a.inbox if m.get("id") == "from-b"]
    assert not [m for m in b.inbox if "id" in m and m["id"] == rid]
