"""The processor's room policies on real processes: private rooms with room passes (JWTs
made here), the user seen by watchers, list-members and paged list-rooms, direct messages
limited to a shared room, rooms per client, and room names with bidi characters.

One cluster for the module: `meshstream run` with the Words Battle watchers (so the lobby
is claimed, as under `make run`), JWT on, --direct-messages shared-room and
--max-rooms-per-client 3, on free ports with a private run directory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from meshstream_zmq.aio import AsyncWatcher, Event, Message
from meshstream_zmq.config import Config
from meshstream_zmq.core import EventKind
from tests.conftest import Client, Cluster, clients_on
from tests.integration.support import DEADLINE, join, module_cluster, sync, uid, wait_for

SECRET = "rooms-security-secret-" + "y" * 16
MAX_ROOMS = 3


def token(sub: str, ttl: float = 600.0, key: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl), **claims}, key, algorithm="HS256")


def room_pass(sub: str, room: str, ttl: float = 600.0, key: str = SECRET) -> str:
    return token(sub, ttl, key, room=room)


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = module_cluster(tmp_path_factory, watchers=True, env={
        "MESHSTREAM_JWT_SECRET": SECRET, "MESHSTREAM_DIRECT_MESSAGES": "shared-room",
        "MESHSTREAM_MAX_ROOMS_PER_CLIENT": str(MAX_ROOMS)})
    yield c
    c.stop()


@pytest.fixture
async def user(secure_cluster: Cluster) -> AsyncIterator[Callable[..., Any]]:
    """`await user("ann")`: a client connected with a token whose `sub` is "ann"."""
    opened: list[Client] = []

    async def make(sub: str) -> Client:
        c = await Client.connect(f"{secure_cluster.url}?token={token(sub)}")
        opened.append(c)
        return c

    yield make
    for c in opened:
        await c.close()


async def lobby_claimed(cluster: Cluster) -> None:
    """Wait until the Words Battle lobby watcher (started beside the gateways) is welcomed:
    from then on it claims mesh-global. Its log line is the only outside sign (it answers
    stray lobby frames as the unclaimed lobby would)."""
    log = Path(cluster.log.name)

    def welcomed() -> bool:
        cluster.log.flush()
        return any('"welcomed"' in line and "words-battle-lobby" in line
                   for line in log.read_text(errors="replace").splitlines())

    await wait_for(welcomed, what="the lobby watcher's welcome")


async def error_of(c: Client, frame: dict[str, Any]) -> dict[str, Any]:
    rid = uid("req")
    await c.send({**frame, "id": rid})
    reply = await c.next(lambda m: m.get("id") == rid)
    assert reply["action"] == "error", reply
    return reply


# ------------------------------------------------------------------ private rooms


async def test_a_private_room_admits_only_its_pass_holders(user: Callable[..., Any]) -> None:
    ann, bob, eve = await user("ann"), await user("bob"), await user("eve")
    room = uid("private-r")
    joined = await join(ann, room, message_body={"token": room_pass("ann", room)})
    assert joined["sender"] == ann.id
    for frame in (
        {"action": "join-room", "target": room},  # no pass
        {"action": "join-room", "target": room, "message_body": {"token": room_pass("ann", room)}},
        {"action": "join-room", "target": room,
         "message_body": {"token": room_pass("eve", uid("private-other"))}},
        {"action": "join-room", "target": room,
         "message_body": {"token": room_pass("eve", room, key="another-key-" + "z" * 20)}},
        {"action": "join-room", "target": room,
         "message_body": {"token": room_pass("eve", room, ttl=-5)}},  # expired
    ):
        err = await error_of(eve, frame)
        assert err["message_body"]["code"] == "forbidden", (frame, err)
    # bob, with his own pass: in, and ann hears of it
    await join(bob, room, message_body={"token": room_pass("bob", room)})
    notice = await ann.expect("client-joined-room", sender=bob.id)
    assert notice["message_body"] == {"client": bob.id, "room": room}
    # eve is not told whether it exists: relays and leaves get not-member, lists forbidden
    for frame, code in (({"action": "chat", "target": room}, "not-member"),
                        ({"action": "leave-room", "target": room}, "not-member"),
                        ({"action": "list-members", "target": room}, "forbidden"),
                        ({"action": "list-members", "target": uid("private-none")}, "forbidden")):
        assert (await error_of(eve, frame))["message_body"]["code"] == code, frame
    members = await ann.request({"action": "list-members", "target": room, "id": 1}, "member-list")
    assert sorted(members["message_body"]["members"]) == sorted([ann.id, bob.id])
    await sync(eve)
    assert not [m for m in eve.inbox if m.get("target") == room and m["action"] != "error"]


async def test_the_lobby_form_through_the_claimed_lobby_needs_the_pass_too(
        secure_cluster: Cluster, user: Callable[..., Any]) -> None:
    """Under make run the lobby watcher claims mesh-global: gomeshstream's form must not let
    a client into a private room without its pass."""
    ann, eve = await user("ann"), await user("eve")
    await lobby_claimed(secure_cluster)
    room = uid("private-l")
    err = await error_of(eve, {"action": "join-room", "target": "mesh-global",
                               "message_body": {"roomname": room}})
    assert err["message_body"]["code"] == "forbidden"
    await ann.send({"action": "join-room", "target": "mesh-global", "id": "lf",
                    "message_body": {"roomname": room, "token": room_pass("ann", room)}})
    joined = await ann.expect("client-joined-room", id="lf")
    assert joined["target"] == room
    members = await ann.request({"action": "list-members", "target": room, "id": 2}, "member-list")
    assert members["message_body"]["members"] == [ann.id]


# ------------------------------------------------------------------ the user, for watchers


async def test_watchers_see_the_user_with_frames_and_events(secure_cluster: Cluster,
                                                            user: Callable[..., Any]) -> None:
    bot = AsyncWatcher("vault", prefixes=["private-vault-"],
                       config=Config(run_dir=secure_cluster.run_dir, port=secure_cluster.port))

    @bot.on("join-room")
    async def let_in(msg: Message) -> None:  # the watcher decides: users named "ann" only
        if msg.user == "ann":
            await bot.join(msg.client, msg.room)
        else:
            await bot.send_clients([msg.client], "refused", {"user": msg.user})

    @bot.on("whoami")
    async def whoami(msg: Message) -> None:
        await bot.send_clients([msg.client], "you-are", {"user": msg.user})

    @bot.on_event(EventKind.CLIENT_JOINED_ROOM)
    async def joined(ev: Event) -> None:
        await bot.send_room(ev.room, "joined-as", {"client": ev.client, "user": ev.user})

    await bot.start()
    try:
        await bot.wait_welcomed(DEADLINE)
        ann, bob = await user("ann"), await user("bob")
        room = uid("private-vault")
        await bob.send({"action": "join-room", "target": room})  # no pass: the watcher decides
        assert (await bob.expect("refused"))["message_body"] == {"user": "bob"}
        await ann.send({"action": "join-room", "target": room})
        assert (await ann.expect("joined-as"))["message_body"] == {"client": ann.id, "user": "ann"}
        await ann.send({"action": "whoami", "target": room})
        assert (await ann.expect("you-are"))["message_body"] == {"user": "ann"}
    finally:
        await bot.close()


# ------------------------------------------------------------------ enumeration


async def test_list_members_of_the_lobby_is_forbidden(user: Callable[..., Any]) -> None:
    ann = await user("ann")
    err = await error_of(ann, {"action": "list-members", "target": "mesh-global"})
    assert err["message_body"]["code"] == "forbidden"


async def test_list_rooms_pages_by_name_and_hides_private_rooms(user: Callable[..., Any]) -> None:
    ann = await user("ann")
    prefix = uid("page")
    mine = [f"{prefix}-{i}" for i in range(MAX_ROOMS - 1)]  # and one private room
    for name in mine:
        await join(ann, name)
    secret = uid("private-hidden")
    await join(ann, secret, message_body={"token": room_pass("ann", secret)})
    names: list[str] = []
    after: str | None = None
    for page in range(1000):
        body: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        reply = await ann.request({"action": "list-rooms", "id": f"p{page}", "message_body": body},
                                  "room-list")
        rooms = reply["message_body"]["rooms"]
        assert len(rooms) <= 2
        names += [r["name"] for r in rooms]
        after = reply["message_body"]["next"]
        if after is None:
            break
        assert after == names[-1]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert [n for n in names if n.startswith(prefix)] == mine
    assert not [n for n in names if n.startswith("private-")]
    assert "mesh-global" in names
    bad = await error_of(ann, {"action": "list-rooms", "message_body": {"limit": "all"}})
    assert bad["message_body"]["code"] == "bad-body"


# ------------------------------------------------------------------ direct messages, limits, names


async def test_direct_messages_need_a_shared_room(secure_cluster: Cluster) -> None:
    groups = await clients_on(f"{secure_cluster.url}?token={token('dm')}", 2)
    (a,), (b,) = groups
    try:
        err = await error_of(a, {"action": "psst", "target": b.id, "IsTargetClient": True})
        assert err["message_body"]["code"] == "forbidden"  # they share only the lobby
        room = uid("dm")
        await join(a, room)
        await join(b, room)
        await a.send({"action": "psst", "target": b.id, "IsTargetClient": True,
                      "message_body": {"n": 1}})
        got = await b.expect("psst")
        assert got["sender"] == a.id and got["message_body"] == {"n": 1}
    finally:
        await a.close()
        await b.close()


async def test_rooms_per_client_is_bounded(user: Callable[..., Any]) -> None:
    ann = await user("ann")
    for _ in range(MAX_ROOMS):
        await join(ann, uid("many"))
    err = await error_of(ann, {"action": "join-room", "target": uid("many")})
    assert err["message_body"]["code"] == "too-many-rooms"


@pytest.mark.parametrize("name", ["evil\u202eroom", "bell\u0007", "iso\u2066late"])
async def test_room_names_with_control_or_bidi_characters_are_refused(
        user: Callable[..., Any], name: str) -> None:
    ann = await user("ann")
    err = await error_of(ann, {"action": "join-room", "target": name})
    assert err["message_body"]["code"] == "bad-room-name"
