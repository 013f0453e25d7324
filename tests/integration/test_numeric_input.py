"""Numbers from clients on a real cluster (docs/protocol.md, Frames, "Numbers"; issue 20,
items 1 and 2): out-of-range numbers are answered with their documented error and harm
nothing else. One `history` frame with `since` ≥ 2^63 used to crash the processor (every
room's history and every away session gone); a resume position above 2^64 − 1 got no HTTP
answer and left its address's connection count raised for good.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import websockets

from tests.conftest import Client, Cluster
from tests.integration.support import DEADLINE, join, sync, uid

BAD_SINCE = [9223372036854775808, 10**30, -1, True, 1.5, "5"]


async def answer(c: Client, text: str, rid: str) -> dict[str, Any]:
    """Send one raw frame (its numbers exactly as written); the reply carrying `rid`."""
    await c.send(text)
    return await c.next(lambda m: m.get("id") == rid)


async def test_out_of_range_numbers_are_bad_body_and_the_processor_keeps_its_state(
        cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(gateways=1)
    processor = cluster.roles("processor")["processor"]
    keeper = await Client.connect(cluster.url)
    kept = uid("kept")
    await join(keeper, kept)
    await keeper.send({"action": "say", "target": kept, "message_body": {"n": 1}})
    await keeper.expect("say")
    # an away session (its connection lost, no close): it must survive too
    away = websockets.connect(cluster.url)
    ws = await away
    hello = json.loads(await ws.recv())["message_body"]
    ws.transport.abort()

    prober = await Client.connect(cluster.url)
    room = uid("probe")
    await join(prober, room)
    for i, since in enumerate(BAD_SINCE):
        rid = f"h{i}"
        reply = await answer(prober, '{"action":"history","target":"%s","message_body":'
                             '{"since":%s},"id":"%s"}' % (room, json.dumps(since), rid), rid)
        assert reply["action"] == "error", reply
        assert reply["message_body"]["code"] == "bad-body", reply
        assert reply["message_body"]["action"] == "history"
    for i, (action, target) in enumerate((("list-rooms", ""), ("list-members", room),
                                          ("history", room))):
        rid = f"l{i}"
        reply = await answer(prober, '{"action":"%s","target":"%s","message_body":{"limit":%d},'
                             '"id":"%s"}' % (action, target, 2**64, rid), rid)
        assert reply["message_body"]["code"] == "bad-body", reply
    await prober.send('{"action":"list-rooms","id":9223372036854775808}')
    assert (await prober.error("bad-id"))["message_body"]["code"] == "bad-id"
    # the largest position is a valid one: an empty page
    reply = await answer(prober, '{"action":"history","target":"%s","message_body":'
                         '{"since":9223372036854775807},"id":"max"}' % room, "max")
    assert reply["action"] == "history" and reply["message_body"]["messages"] == []

    # The same processor, its state whole: the room's history, the away session.
    assert cluster.roles("processor")["processor"] == processor
    await sync(keeper)
    assert not [m for m in keeper.inbox if m.get("action") == "error"], keeper.inbox
    page = await keeper.request({"action": "history", "target": kept, "id": "k"}, "history")
    assert [m["message_body"] for m in page["message_body"]["messages"]
            if m["action"] == "say"] == [{"n": 1}]
    back = Client(await websockets.connect(
        f"{cluster.url}?resume={quote(hello['session'])}&positions={quote(hello['epoch'])}:0"))
    greeting = await back.expect("client-connected")
    assert greeting["message_body"]["resumed"] is True, greeting
    assert greeting["target"] == hello["client"]
    for c in (keeper, prober, back):
        await c.close()


async def test_an_overflowing_resume_position_is_answered_and_frees_its_connection(
        cluster_factory: Callable[..., Cluster]) -> None:
    """Six upgrades whose positions overflow the uint64 behind them, from one address
    limited to three connections: each is answered (such a position is ignored: a resume
    from when the session went away, here an unknown one), and a normal connection still
    gets in."""
    cluster = cluster_factory(gateways=1, args=["--max-connections-per-ip", "3"])
    seqs = ["e:99999999999999999999"] * 6 + ["e:18446744073709551616", "e:²", "e:-1"]
    for seq in seqs:
        c, greeting = await admitted(f"{cluster.url}?resume=abc&positions={quote(seq)},{quote(seq)}")
        assert greeting["message_body"]["resumed"] is False
        assert greeting["message_body"]["reason"] == "unknown-session"
        await c.close()
    held = [(await admitted(cluster.url))[0] for _ in range(3)]  # the whole allowance
    for c in held:
        await c.close()


async def admitted(url: str) -> tuple[Client, dict[str, Any]]:
    """A connection that got its `client-connected`. A 1013 `too-many-connections` is tried
    again until DEADLINE: the gateway lowers an address's count when it sees the previous
    connection's TCP close, which may come just after our next upgrade; a count that is
    never lowered is refused to the end."""
    deadline = time.monotonic() + DEADLINE
    while True:
        c = Client(await websockets.connect(url, open_timeout=5))
        try:
            return c, await c.expect("client-connected")
        except websockets.ConnectionClosed:
            assert c.ws.close_code == 1013 and c.ws.close_reason == "too-many-connections"
            assert time.monotonic() < deadline, "this address stays locked out"
            await asyncio.sleep(0.05)
