"""The Python client (meshstream_zmq.client) against real clusters: requests answered by
id, error replies raised, timeouts, and automatic reconnection that resumes the session
with nothing lost and nothing twice after its gateway is killed or restarted; tokens."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import jwt
import pytest

from meshstream_zmq.client import (
    Client,
    ClientClosed,
    Connected,
    ConnectError,
    Disconnected,
    Event,
    Message,
    Reconnecting,
    RequestError,
    Resumed,
    ServerError,
    TokenRefreshed,
)
from tests.conftest import Cluster
from tests.integration.support import DEADLINE, module_cluster, shared_cluster, uid  # noqa: F401

SECRET = "client-test-secret-" + "x" * 16


async def next_event(c: Client, pred: Callable[[Event], bool],
                     timeout: float = DEADLINE) -> tuple[Event, list[Event]]:
    """The first event matching `pred`, and every event before it."""
    before: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in c:
            if pred(event):
                return event, before
            before.append(event)
    raise AssertionError(f"the client stopped; events: {before}")


def chat(n: Any) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, Message) and e.action == "chat" and e.body.get("n") == n


def gateway(c: Client) -> str:
    return c.id.partition("-")[0]  # 'gw2-…' → 'gw2'


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[Callable[..., Any]]:
    made: list[Client] = []

    async def make(**kw: Any) -> Client:
        c = await Client.connect(cluster.url, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


async def on_two_gateways(make: Callable[..., Any], **kw: Any) -> tuple[Client, Client]:
    first = await make(**kw)
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        other = await make(**kw)
        if gateway(other) != gateway(first):
            return first, other
        await other.close()
    raise AssertionError("no second gateway")


# ------------------------------------------------------------------ requests


async def test_a_request_is_answered_by_the_frame_carrying_its_id(clients: Any) -> None:
    seen: list[Event] = []
    a, b = await clients(on_event=seen.append), await clients()
    assert seen == [Connected(a.id)]  # callbacks see every event, from the first
    room = uid("req")
    joined = await a.join(room)
    assert joined["action"] == "client-joined-room" and joined["sender"] == a.id
    await b.join(room)
    own = await a.request("chat", room, {"n": 1})  # a relay's reply: your own copy
    assert own["action"] == "chat" and own["sender"] == a.id and own["message_body"] == {"n": 1}
    event, _ = await next_event(b, chat(1))
    assert isinstance(event, Message) and event.frame["sender"] == a.id
    assert "id" not in event.frame  # the id goes back to its sender only
    page = await a.request("list-members", room)
    assert sorted(page["message_body"]["members"]) == sorted([a.id, b.id])


async def test_a_raising_callback_does_not_stop_the_client(clients: Any) -> None:
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("a bug in the application's handler")

    async def broken_later(event: Event) -> None:
        raise RuntimeError("a bug in an async handler")

    a, b = await clients(on_event=broken), await clients()
    a.on(broken_later)
    a.on(seen.append)
    room = uid("cb")
    await a.join(room)
    await b.join(room)
    await b.request("chat", room, {"n": 1})
    await next_event(a, chat(1))  # the reader went on past both broken callbacks
    assert any(isinstance(e, Message) and e.body == {"n": 1} for e in seen)
    assert (await a.request("list-members", room))["action"] == "member-list"


async def test_an_error_reply_raises_and_an_unasked_error_is_an_event(clients: Any) -> None:
    c = await clients()
    with pytest.raises(RequestError) as caught:
        await c.request("chat", uid("not-in"), {"n": 1})
    assert caught.value.code == "unknown-room" and caught.value.frame["action"] == "error"
    await c.send("chat", uid("not-in"))  # no id: the error comes as an event
    event, _ = await next_event(c, lambda e: isinstance(e, ServerError))
    assert isinstance(event, ServerError) and event.code == "unknown-room"


async def test_a_request_with_no_reply_times_out(clients: Any) -> None:
    a, b = await clients(), await clients()
    with pytest.raises(TimeoutError):  # a direct message has no reply
        await a.request("poke", b.id, {"n": 1}, direct=True, timeout=0.5)
    event, _ = await next_event(b, lambda e: isinstance(e, Message) and e.action == "poke")
    assert isinstance(event, Message) and event.frame["IsTargetClient"] is True
    assert event.frame["sender"] == a.id


async def test_a_burst_arrives_whole_and_in_order(clients: Any) -> None:
    a, b = await clients(), await clients()
    room = uid("burst")
    await a.join(room)
    await b.join(room)
    for n in range(300):  # the gateway joins what queues up into "\n"-separated frames
        await a.send("chat", room, {"n": n})
    got = []
    while len(got) < 300:
        event, _ = await next_event(b, lambda e: isinstance(e, Message) and e.action == "chat")
        assert isinstance(event, Message)
        got.append(event.body["n"])
    assert got == list(range(300))


# ------------------------------------------------------------------ reconnect and resume


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "restarted"])
async def test_a_client_whose_gateway_goes_resumes_with_nothing_lost_or_twice(
        cluster: Cluster, clients: Any, sig: int) -> None:
    a, b = await on_two_gateways(clients)
    room = uid("resume")
    await a.join(room)
    await b.join(room)
    await a.request("chat", room, {"n": "before"})  # its reply is a's own copy: not an event
    first_id = a.id

    cluster.kill(f"gateway {gateway(a)[2:]}", sig)
    for n in range(5):  # while a is away, or after it is back: either way, each once
        await b.request("chat", room, {"n": n})
        await b.send("dm", a.id, {"n": n}, direct=True)
    await b.request("chat", room, {"n": "last"})

    _, before = await next_event(a, lambda e: isinstance(e, Resumed))
    assert any(isinstance(e, Disconnected) and e.reconnecting for e in before)
    assert any(isinstance(e, Reconnecting) for e in before)
    _, got = await next_event(a, chat("last"))
    assert a.id == first_id
    received = [(e.action, e.body["n"]) for e in before + got
                if isinstance(e, Message) and e.action in ("chat", "dm")]
    assert received == [x for n in range(5) for x in (("chat", n), ("dm", n))]
    # still in the room, on the same identity
    await a.request("chat", room, {"n": "back"})
    event, _ = await next_event(b, chat("back"))
    assert isinstance(event, Message) and event.frame["sender"] == first_id
    cluster.wait_healthy()  # the supervisor has brought the gateway back for the next test


# ------------------------------------------------------------------ tokens and refusals


def token(sub: str = "ann", ttl: float = 600.0) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl)}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def jwt_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = module_cluster(tmp_path_factory, env={"MESHSTREAM_JWT_SECRET": SECRET})
    yield c
    c.stop()


async def test_a_bad_token_is_refused_with_its_reason(jwt_cluster: Cluster) -> None:
    with pytest.raises(ConnectError) as caught:
        await Client.connect(jwt_cluster.url, token="not.a.jwt")
    assert (caught.value.code, caught.value.reason) == (4003, "bad-token")


async def test_the_token_is_refreshed_before_it_expires(jwt_cluster: Cluster) -> None:
    issued: list[str] = []

    def fresh_token() -> str:  # a short-lived token each time the client asks
        issued.append(token(ttl=3))
        return issued[-1]

    c = await Client.connect(jwt_cluster.url, token=fresh_token)
    try:
        assert c.user == "ann"
        # two refreshes: the second comes after the first token's exp, on the same connection
        for _ in range(2):
            event, before = await next_event(c, lambda e: isinstance(e, TokenRefreshed))
            assert not [e for e in before if isinstance(e, Disconnected)]
            assert isinstance(event, TokenRefreshed) and event.expires is not None
        assert len(issued) == 3
        room = uid("tok")
        assert (await c.join(room))["sender"] == c.id
    finally:
        await c.close()


async def test_a_refused_resume_starts_a_new_client_and_says_why(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    cluster = module_cluster(tmp_path_factory, args=["--resume-window", "1"])
    try:
        c = await Client.connect(cluster.url, backoff_base=6)  # back only after the window
        first_id = c.id
        hello, _ = await next_event(c, lambda e: isinstance(e, Connected))
        assert hello == Connected(first_id)  # anonymous: no user, nothing refused
        cluster.kill(f"gateway {gateway(c)[2:]}")
        event, before = await next_event(c, lambda e: isinstance(e, (Connected, Resumed)),
                                         timeout=30)
        assert isinstance(event, Connected)
        assert event.refused in ("expired", "unknown-session") and event.client != first_id
        assert c.id == event.client
        assert any(isinstance(e, Disconnected) and e.reconnecting for e in before)
        await c.close()
    finally:
        cluster.stop()


async def test_a_close_that_means_do_not_come_back_stops_the_client(
        cluster: Cluster, clients: Any) -> None:
    a = await clients()
    # another connection resumes a's session (another tab, say): a is closed with 4002
    thief = await Client.connect(a.session.url(cluster.url))
    try:
        event, _ = await next_event(thief, lambda e: isinstance(e, Resumed))
        assert thief.id == a.id
        closed = await asyncio.wait_for(a.wait_closed(), DEADLINE)
        assert closed is not None and (closed.code, closed.reconnecting) == (4002, False)
        with pytest.raises(ClientClosed):
            await a.send("chat", "r")
    finally:
        await thief.close()
