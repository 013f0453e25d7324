"""Every limit in docs/security.md's table has the outcome the table says, on a running cluster.

The table's `outcome` column is read from the doc; each row is triggered here against
real processes with small limits (so that reaching them is quick). A row added to the
table without a check here fails `test_every_documented_limit_is_checked`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import jwt
import pytest
import websockets

from tests.conftest import ROOT, Client, Cluster
from tests.integration.support import close_code, join, uid

SECRET = "limits-test-secret-" + "x" * 16
DOC = ROOT / "docs" / "security.md"


def documented() -> dict[str, str]:
    """limit (first column) -> outcome (last column), from docs/security.md's Limits table."""
    text = DOC.read_text()
    table = text[text.index("| limit | default | flag | outcome |"):].split("\n\n")[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[-1]
    return rows


def token(sub: str = "ann", **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": time.time() + 300, **claims}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One gateway, JWT on, everything small."""
    c = Cluster(tmp_path_factory.mktemp("strict"), gateways=1,
                args=["--rate-limit", "5", "--rate-burst", "5", "--max-frame", "2048",
                      "--max-rooms-per-client", "2", "--max-connections-per-ip", "4",
                      "--direct-messages", "off", "--allowed-origins", "https://ok.example"],
                env={"MESHSTREAM_JWT_SECRET": SECRET})
    yield c
    c.stop()


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One gateway, no rate limit, a small send queue and three connections at most."""
    c = Cluster(tmp_path_factory.mktemp("roomy"), gateways=1,
                args=["--rate-limit", "0", "--send-queue", "16384", "--max-connections", "3"])
    yield c
    c.stop()


async def connect(cluster: Cluster, sub: str = "ann", **kw: Any) -> Client:
    c = Client(await websockets.connect(f"{cluster.url}?token={token(sub)}", max_size=2**24, **kw))
    hello = await c.expect("client-connected")
    c.id = hello["target"]
    return c


async def refused(url: str, **kw: Any) -> tuple[int | None, str | None]:
    """Connect and read until closed: the close code and reason, with no frame before it."""
    async with websockets.connect(url, **kw) as ws:
        try:
            frame = await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError(f"a frame before the close: {frame!r}")
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, ws.close_reason


async def error_code(c: Client, frame: dict[str, Any]) -> str:
    rid = uid("e")
    await c.send({**frame, "id": rid})
    reply = await c.next(lambda m: m.get("id") == rid)
    assert reply["action"] == "error", reply
    return str(reply["message_body"]["code"])


# ------------------------------------------------------------------ one check per row

async def frames_per_connection(strict: Cluster, roomy: Cluster) -> str:
    c = await connect(strict)
    for _ in range(5):
        await c.send({"action": "list-rooms"})
    code = await error_code(c, {"action": "list-rooms"})
    await c.close()
    return f"error `{code}`"


async def flood(strict: Cluster, roomy: Cluster) -> str:
    c = await connect(strict)
    for _ in range(40):
        await c.send({"action": "list-rooms"})
    return f"close `{await close_code(c)}`"


async def frame_size(strict: Cluster, roomy: Cluster) -> str:
    c = await connect(strict)
    await c.send({"action": "say", "target": "r", "message_body": {"x": "y" * 4096}})
    return f"close `{await close_code(c)}`"


async def send_queue(strict: Cluster, roomy: Cluster) -> str:
    """A reader that stops reading (a small receive window fills the kernel's buffers
    fast) while another member floods their room: the gateway closes it with 4000."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", roomy.port))
    slow = Client(await websockets.connect(roomy.url, sock=sock, max_size=2**24, max_queue=1))
    slow.id = (await slow.expect("client-connected"))["target"]
    room = uid("slow")
    await join(slow, room)
    fast = await Client.connect(roomy.url)
    await join(fast, room)
    body = {"x": "y" * 60_000}
    for _ in range(150):
        await fast.send({"action": "say", "target": room, "message_body": body})
    code = await close_code(slow, timeout=30)
    await fast.close()
    return f"close `{code}`"


async def rooms_per_client(strict: Cluster, roomy: Cluster) -> str:
    c = await connect(strict)
    for _ in range(2):
        await join(c, uid("cap"))
    code = await error_code(c, {"action": "join-room", "target": uid("cap")})
    await c.close()
    return f"error `{code}`"


async def connections_per_gateway(strict: Cluster, roomy: Cluster) -> str:
    held = [await Client.connect(roomy.url) for _ in range(3)]
    code, reason = await refused(roomy.url)
    assert reason == "too-many-connections"
    for c in held:
        await c.close()
    return f"close `{code}`"


async def connections_per_address(strict: Cluster, roomy: Cluster) -> str:
    held = [await connect(strict, f"u{i}") for i in range(4)]
    code, reason = await refused(f"{strict.url}?token={token()}")
    assert reason == "too-many-connections"
    for c in held:
        await c.close()
    return f"close `{code}`"


async def origin(strict: Cluster, roomy: Cluster) -> str:
    ok = await connect(strict, origin="https://ok.example")  # the listed one is let in
    await ok.close()
    with pytest.raises(websockets.InvalidStatus) as refusal:
        await websockets.connect(f"{strict.url}?token={token()}", origin="https://evil.example")
    return f"HTTP `{refusal.value.response.status_code}`"


async def connection_token(strict: Cluster, roomy: Cluster) -> str:
    code, reason = await refused(strict.url)
    assert reason == "token-required"
    code2, reason2 = await refused(f"{strict.url}?token=not-a-token")
    assert (code2, reason2) == (code, "bad-token")
    return f"close `{code}`"


async def private_room(strict: Cluster, roomy: Cluster) -> str:
    c = await connect(strict)
    room = "private-" + uid()
    good = token("ann", room=room)
    code = await error_code(c, {"action": "join-room", "target": room,
                                "message_body": {"token": token("bob", room=room)}})
    await join(c, room, message_body={"token": good})  # the right pass lets ann in
    await c.close()
    return f"error `{code}`"


async def direct_messages(strict: Cluster, roomy: Cluster) -> str:
    a, b = await connect(strict, "a"), await connect(strict, "b")
    code = await error_code(a, {"action": "hi", "target": b.id, "IsTargetClient": True})
    await a.close()
    await b.close()
    return f"error `{code}`"


async def one_error(cluster: Cluster, frame: dict[str, Any]) -> str:
    """A fresh client sends one frame; the error it gets, as the table writes it."""
    c = await connect(cluster)
    code = await error_code(c, frame)
    await c.close()
    return f"error `{code}`"


async def lobby_members(strict: Cluster, roomy: Cluster) -> str:
    return await one_error(strict, {"action": "list-members", "target": "mesh-global"})


async def list_page(strict: Cluster, roomy: Cluster) -> str:
    c = await Client.connect(roomy.url)
    for _ in range(3):
        await join(c, uid("page"))
    reply = await c.request({"action": "list-rooms", "message_body": {"limit": 2}, "id": 1},
                            "room-list")
    assert len(reply["message_body"]["rooms"]) == 2 and reply["message_body"]["next"]
    await c.close()
    return "reply `next`"


async def action_chars(strict: Cluster, roomy: Cluster) -> str:
    return await one_error(strict, {"action": "say\u202e", "target": "r"})


async def room_chars(strict: Cluster, roomy: Cluster) -> str:
    return await one_error(strict, {"action": "join-room", "target": "r\u2066oom"})


async def token_length(strict: Cluster, roomy: Cluster) -> str:
    """Longer than an HTTP line may be: refused by the upgrade's parser, in the URL (414)
    or in a header (431), before any token check."""
    long = token("ann", pad="p" * 9000)
    with pytest.raises(websockets.InvalidStatus) as header:
        await websockets.connect(strict.url, additional_headers={"Authorization": f"Bearer {long}"})
    assert header.value.response.status_code == 431
    with pytest.raises(websockets.InvalidStatus) as url:
        await websockets.connect(f"{strict.url}?token={long}")
    return f"HTTP `{url.value.response.status_code}`"


async def request_head(strict: Cluster, roomy: Cluster) -> str:
    """A head past --max-header-bytes (16 KiB) that has not ended: refused at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", strict.port)
    writer.write(b"GET /wsmesh HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20)))
    status = (await asyncio.wait_for(reader.readline(), 10)).split()[1].decode()
    writer.close()
    return f"HTTP `{status}`"


CHECKS: dict[str, Callable[[Cluster, Cluster], Awaitable[str]]] = {
    "frames per connection": frames_per_connection,
    "flood (a burst past the limit in debt)": flood,
    "frame or fragmented message size": frame_size,
    "bytes waiting to be written to one client": send_queue,
    "rooms per client (the lobby not counted; a client's own joins)": rooms_per_client,
    "connections per gateway process": connections_per_gateway,
    "connections per source address and gateway process": connections_per_address,
    "`Origin` of an upgrade (when set; none is allowed)": origin,
    "connection token (when a key is set)": connection_token,
    "joining a `private-` room without a room pass": private_room,
    "direct messages": direct_messages,
    "`list-members` of the lobby": lobby_members,
    "`list-rooms` / `list-members` page": list_page,
    "action: 1–64 characters, no control, line-separator or bidi formatting characters": action_chars,
    "room name: 1–64 characters, the same characters refused": room_chars,
    "request line or header longer than 8 KiB (a token too)": token_length,
    "request head (the request line and every header)": request_head,
}
# Checked by unit tests with the time passed in (waiting 20 s or 10 s, or filling 128 MiB,
# here would only be slow):
TIMED = {
    "room history held by the processor (all rooms)":
        "tests/unit/test_resume_core.py byte budget",
    "direct messages held by the processor (all clients, connected or away)":
        "tests/unit/test_direct_history.py",
    "keepalive: no pong within 20 s of a ping": "tests/unit/test_gateway_core.py keepalive",
    "bytes waiting behind a resume's replay (the replay, bounded by the history, is written "
    "paced: half the send queue at a time)": "tests/integration/test_resume_backlog.py",
    "failed resumes (`unknown-session`, `expired`) per source address and gateway process":
        "tests/unit/test_gateway_core.py failed resumes",
    "handshake not completed": "tests/unit/test_gateway_frames.py open deadline",
    # and elsewhere on clusters of their own (64 MiB of heads; an admin token)
    "request heads held at once per gateway process (every connection still in its handshake)":
        "tests/integration/test_http.py heads held at once",
    "wrong admin tokens per address and gateway process": "tests/integration/test_admin.py guesses",
    # the server API's, on a cluster with a key (tests/integration/test_api*.py)
    "wrong server API keys per address and gateway process": "tests/integration/test_api.py wrong keys",
    "server API request body": "tests/integration/test_api.py oversize",
    "server API requests per kept connection; idle between two":
        "tests/integration/test_api_keepalive.py max requests, idle timeout",
    "server API batch, broadcast": "tests/integration/test_api.py batch of 101, tests/unit/test_api.py",
    "idempotency keys remembered (the processor's)": "tests/unit/test_core_api.py bounded table",
}


def test_every_documented_limit_is_checked() -> None:
    assert set(documented()) == set(CHECKS) | set(TIMED)


@pytest.mark.parametrize("limit", sorted(CHECKS))
async def test_limit_outcome_is_what_the_docs_say(limit: str, strict: Cluster, roomy: Cluster) -> None:
    assert await CHECKS[limit](strict, roomy) == documented()[limit]
