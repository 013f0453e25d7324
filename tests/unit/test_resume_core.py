"""Sessions, away, resume, positions and history in the core (docs/protocol.md, "Sessions
and resume"): every promise of issue 10 on the processor's side, with no clock and no I/O.

Clients connect with a session hash (what the gateway sends: SHA-256 of the secret it
gave the client); `lost` is a connection ending without a clean close, `resume` a new
connection presenting the session on some gateway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from meshstream_zmq import LOBBY, protocol
from meshstream_zmq.client import Session
from meshstream_zmq.commands import CreateRoom, Join, Remove, SendClients, SendRoom
from meshstream_zmq.core import RESUMED_ELSEWHERE, EventKind, Mesh
from meshstream_zmq.errors import ErrorCode

from .outbox import RecordingOutbox, new_mesh, send

A, A2 = "g1.1", "g1.2"
B = "g2.1"
C = "g3.1"
EPOCH = "e1"
WINDOW = 60.0
W = "w-1"

Make = Callable[..., tuple[Mesh, RecordingOutbox]]


def h(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@pytest.fixture
def make() -> Iterator[Make]:
    """A mesh with a resume window and these clients connected at t=0, each with the session
    'secret-<client>'; invariants checked after each test."""
    meshes: list[Mesh] = []

    def factory(*clients: str, **kwargs: Any) -> tuple[Mesh, RecordingOutbox]:
        kwargs.setdefault("epoch", EPOCH)
        kwargs.setdefault("resume_window", WINDOW)
        mesh, out = new_mesh(**kwargs)
        for client in clients:
            mesh.client_connected(client, 0.0, user=f"u-{client}", session_hash=h(f"secret-{client}"))
        out.clear()
        meshes.append(mesh)
        return mesh, out

    yield factory
    for mesh in meshes:
        mesh.check()




def say(mesh: Mesh, client: str, room: str, n: int, rid: Any = None) -> None:
    send(mesh, client, "chat", room, {"n": n}, rid=rid)


def resume(mesh: Mesh, gateway: str, client: str, *, new: str = "",
           seen: dict[str, int] | None = None, user: str | None = None, secret: str = "",
           link: str = "L1", now: float = 1.0) -> None:
    """A connection on `gateway` presenting `client`'s session (or `secret`), with its
    positions `seen` (None: none given)."""
    mesh.resume(gateway, link, h(secret or f"secret-{client}"), h(new or f"new-{client}"),
                f"u-{client}" if user is None else user, seen or {}, now)


def result(out: RecordingOutbox) -> dict[str, Any]:
    (call,) = out.of("resumed")
    _, gateway, link, client, reason, rooms, replay, epoch = call
    return {"gateway": gateway, "link": link, "client": client, "reason": reason,
            "rooms": list(rooms), "replay": [json.loads(f) for f in replay], "epoch": epoch}


def positions(out: RecordingOutbox, client: str) -> dict[str, int]:
    """What `client` resumes with, having received what `out` sent it: as the client
    library keeps them (meshstream_zmq.client.Session)."""
    session = Session(epoch=EPOCH, positions={EPOCH: 0}, client=client)
    for frame in out.stream(client):
        session.accept(frame)
    return session.positions


def texts(frames: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [(f["action"], f["target"], f["message_body"].get("n")) for f in frames]


# ------------------------------------------------------------ positions


def test_room_messages_carry_their_rooms_offset_and_epoch_direct_ones_their_recipients(
        make: Make) -> None:
    mesh, out = make(A, B)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    say(mesh, A, "r", 1, rid=9)
    send(mesh, B, "whisper", A, {"n": 2}, to_client=True)
    send(mesh, B, "whisper", A, {"n": 3}, to_client=True)
    stream = out.stream(A)
    assert [(m["action"], m["offset"]) for m in stream] == [
        ("client-joined-room", 1), ("client-joined-room", 2), ("chat", 3), ("whisper", 1), ("whisper", 2)]
    assert {m["epoch"] for m in stream[:3]} == {mesh.rooms["r"].epoch}
    assert mesh.rooms["r"].epoch.startswith(EPOCH + ".")
    assert stream[3]["epoch"] == EPOCH  # a client's direct messages: the processor's epoch
    assert stream[2]["id"] == 9  # the sender's own copy: same position, with its id
    assert out.stream(B)[-1]["offset"] == 3 and "id" not in out.stream(B)[-1]
    assert not any("seq" in m for m in stream + out.stream(B))  # no processor-wide number


def test_offsets_are_per_room_a_new_room_has_a_new_epoch(make: Make) -> None:
    mesh, out = make(A)
    send(mesh, A, "join-room", "r")
    send(mesh, A, "join-room", "s")
    say(mesh, A, "r", 1)
    say(mesh, A, "s", 2)
    say(mesh, A, "r", 3)
    got = [(m["target"], m["offset"]) for m in out.stream(A)]
    assert got == [("r", 1), ("s", 1), ("r", 2), ("s", 2), ("r", 3)]
    first = mesh.rooms["r"].epoch
    send(mesh, A, "leave-room", "r")  # the last member: the room is gone
    out.clear()
    send(mesh, A, "join-room", "r")
    (notice,) = out.stream(A)
    assert notice["offset"] == 1 and notice["epoch"] != first


def test_watcher_messages_are_numbered_too(make: Make) -> None:
    mesh, out = make(A, B)
    mesh.watcher_hello(W, "game", [], ["w-"], 0.0)
    mesh.command(W, 1, CreateRoom("w-g"))
    mesh.command(W, 2, Join(A, "w-g"))
    mesh.command(W, 3, SendRoom("w-g", protocol.encode("state", "w-g", b'{"n":1}')))
    mesh.command(W, 4, SendClients((A, B), protocol.encode("hint", "", b'{"n":2}')))
    a = out.stream(A)
    assert [(m["action"], m["offset"], m["epoch"]) for m in a] == [
        ("state", 1, mesh.rooms["w-g"].epoch), ("hint", 1, EPOCH)]
    assert (out.stream(B)[0]["offset"], out.stream(B)[0]["epoch"]) == (1, EPOCH)


# ------------------------------------------------------------ away


def test_a_lost_client_is_away_the_others_are_not_told_its_watchers_are(make: Make) -> None:
    mesh, out = make(A, B)
    mesh.watcher_hello(W, "game", [], ["w-"], 0.0)
    mesh.command(W, 1, CreateRoom("w-g"))
    mesh.command(W, 2, Join(A, "w-g"))
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    out.clear()
    mesh.client_away(A, 5.0, "g1")
    assert out.inbox(B) == [] and out.of("membership") == []
    assert sorted(out.events()) == sorted([(EventKind.CLIENT_AWAY, A, LOBBY, ""),
                                           (EventKind.CLIENT_AWAY, A, "r", ""),
                                           (EventKind.CLIENT_AWAY, A, "w-g", W)])
    assert {u for kind, c, u in out.users if c == A} == {f"u-{A}"}
    assert A in mesh.rooms["r"].members and "g1" not in mesh.rooms["r"].gateways
    assert mesh.clients[A].gateway == ""
    out.clear()
    say(mesh, B, "r", 1)  # broadcast to present members' gateways only
    assert [d[1] for d in out.deliveries()] == ["g2"]
    send(mesh, B, "whisper", A, {"n": 2}, to_client=True)  # held, answered as sent
    assert out.errors(B) == [] and out.inbox(A) == []


def test_the_window_passing_is_a_full_leave(make: Make) -> None:
    mesh, out = make(A, B)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    mesh.client_away(A, 5.0, "g1")
    out.clear()
    mesh.gateway_seen("g2", 5.0 + WINDOW - 1)  # B's gateway is alive throughout
    mesh.expire(5.0 + WINDOW - 1)
    assert out.inbox(B) == [] and A in mesh.clients
    mesh.gateway_seen("g2", 5.0 + WINDOW)
    mesh.expire(5.0 + WINDOW)
    assert [m["action"] for m in out.inbox(B)] == ["client-left-room"]
    assert out.inbox(B)[0]["message_body"] == {"client": A, "room": "r"}
    assert (EventKind.CLIENT_DISCONNECTED, A, "", "") in out.events()
    assert A not in mesh.clients and mesh.sessions == {h(f"secret-{B}"): B}
    out.clear()
    resume(mesh, "g3", A, now=100.0)
    assert result(out)["reason"] == "expired" and result(out)["client"] == ""


def test_a_clean_close_leaves_at_once(make: Make) -> None:
    mesh, out = make(A, B)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    out.clear()
    mesh.client_disconnected(A, "g1")
    assert [m["action"] for m in out.inbox(B)] == ["client-left-room"]
    resume(mesh, "g2", A)
    assert result(out)["reason"] == "unknown-session"


def test_without_a_window_or_a_session_lost_is_left(make: Make) -> None:
    mesh, out = make(A, B, resume_window=0.0)
    mesh.client_away(A, 1.0)
    assert A not in mesh.clients
    mesh2, _ = make(resume_window=WINDOW)
    mesh2.client_connected(C, 0.0)  # an old gateway: no session hash
    mesh2.client_away(C, 1.0)
    assert C not in mesh2.clients


def test_a_dead_gateway_s_clients_are_away_and_its_hello_brings_them_back(make: Make) -> None:
    mesh, out = make(A, A2, B)
    mesh.gateway_seen("g2", 10.0)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    out.clear()
    assert mesh.expire(10.0) == ["g1"]  # g1 silent since 0
    assert mesh.clients[A].gateway == "" and mesh.clients[A2].gateway == ""
    assert out.inbox(B) == []
    assert {e[0] for e in out.events()} == {EventKind.CLIENT_AWAY}
    out.clear()
    # g1 was only paused: its hello lists its clients, which are back (no notice to anyone)
    mesh.gateway_hello("g1", 1, [(A, ["r"]), (A2, [])], 11.0,
                       sessions={A: h(f"secret-{A}"), A2: h(f"secret-{A2}")})
    assert mesh.clients[A].gateway == "g1" and mesh.rooms["r"].gateways["g1"] == 1
    assert out.inbox(B) == [] and {e[0] for e in out.events()} == {EventKind.CLIENT_BACK}
    assert not mesh.away


def test_a_new_gateway_in_the_slot_makes_the_old_one_s_clients_away(make: Make) -> None:
    mesh, out = make(A, B)
    mesh.gateway_hello("g1", 1, [(A, [])], 0.0, sessions={A: h(f"secret-{A}")})
    mesh.gateway_hello("g1x", 1, [], 1.0)
    assert mesh.clients[A].gateway == "" and A in mesh.away


# ------------------------------------------------------------ resume


def test_resume_on_another_gateway_keeps_identity_rooms_and_replays_what_was_missed(make: Make) -> None:
    mesh, out = make(A, B, C)
    for client in (A, B, C):
        send(mesh, client, "join-room", "r")
    send(mesh, A, "join-room", "s")
    send(mesh, B, "join-room", "s")
    say(mesh, B, "r", 0)
    seen = positions(out, A)
    mesh.client_away(A, 2.0, "g1")
    say(mesh, B, "r", 1)
    say(mesh, C, "r", 2, rid=5)
    say(mesh, B, "s", 3)
    send(mesh, C, "whisper", A, {"n": 4}, to_client=True)
    say(mesh, B, "r", 5)
    out.clear()
    resume(mesh, "g3", A, seen=seen, link="L7", now=3.0)
    r = result(out)
    assert (r["gateway"], r["link"], r["client"], r["reason"], r["epoch"]) == ("g3", "L7", A, "", EPOCH)
    assert sorted(r["rooms"]) == ["r", "s"]
    assert texts(r["replay"]) == [("chat", "r", 1), ("chat", "r", 2), ("chat", "s", 3),
                                  ("whisper", A, 4), ("chat", "r", 5)]
    assert "id" not in r["replay"][1]  # C's own copy carried its id, the replay does not
    assert out.inbox(B) == [] and out.inbox(C) == []  # nobody is told
    assert [e[0] for e in out.events()] == [EventKind.CLIENT_BACK] * 3
    assert mesh.clients[A].gateway == "g3" and mesh.rooms["r"].gateways["g3"] == 2
    out.clear()
    say(mesh, B, "r", 6)  # live traffic reaches it on g3
    assert texts(out.inbox(A)) == [("chat", "r", 6)]
    assert {d[1] for d in out.deliveries()} == {"g2", "g3"}


def test_replay_honours_exclude_lists_and_starts_at_the_join(make: Make) -> None:
    mesh, out = make(A, B)
    mesh.watcher_hello(W, "game", [], ["w-"], 0.0)
    mesh.command(W, 1, CreateRoom("w-g"))
    mesh.command(W, 2, Join(A, "w-g"))
    seen = positions(out, A)
    mesh.client_away(A, 1.0, "g1")
    mesh.command(W, 3, SendRoom("w-g", protocol.encode("state", "w-g", b'{"n":1}'), exclude=(A,)))
    mesh.command(W, 4, SendRoom("w-g", protocol.encode("state", "w-g", b'{"n":2}')))
    send(mesh, B, "join-room", "later")
    say(mesh, B, "later", 3)
    mesh.command(W, 5, Join(A, "later"))  # joined while away: it gets the notice, not what came before
    say(mesh, B, "later", 4)
    mesh.command(W, 6, Remove(A, "later"))  # left while away: nothing of that room
    out.clear()
    resume(mesh, "g2", A, seen=seen)
    r = result(out)
    assert texts(r["replay"]) == [("state", "w-g", 2)]
    assert r["rooms"] == ["w-g"]


def test_resume_without_a_position_replays_from_when_it_went_away(make: Make) -> None:
    mesh, out = make(A, B)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    mesh.client_away(A, 1.0, "g1")
    say(mesh, B, "r", 1)
    out.clear()
    resume(mesh, "g2", A)
    assert texts(result(out)["replay"]) == [("chat", "r", 1)]


def test_the_secret_rotates_the_old_one_is_useless(make: Make) -> None:
    mesh, out = make(A)
    mesh.client_away(A, 1.0, "g1")
    resume(mesh, "g2", A, new="second")
    out.clear()
    resume(mesh, "g3", A, new="third")  # the leaked first secret
    assert result(out)["reason"] == "unknown-session"
    assert mesh.clients[A].gateway == "g2" and mesh.clients[A].session == h("second")
    mesh.client_away(A, 2.0, "g2")
    out.clear()
    resume(mesh, "g3", A, secret="second", new="third")
    assert result(out)["client"] == A


def test_two_racing_resumes_one_wins_the_other_is_unknown_session(make: Make) -> None:
    mesh, out = make(A)
    mesh.client_away(A, 1.0, "g1")
    resume(mesh, "g2", A, new="x", link="first")
    resume(mesh, "g3", A, new="y", link="second")
    first, second = out.of("resumed")
    assert (first[2], first[3]) == ("first", A)
    assert (second[2], second[3], second[4]) == ("second", "", "unknown-session")
    assert mesh.clients[A].gateway == "g2"


def test_unknown_session_and_user_mismatch_leave_the_session_as_it_is(make: Make) -> None:
    mesh, out = make(A)
    mesh.client_away(A, 1.0, "g1")
    resume(mesh, "g2", A, secret="never-given")
    resume(mesh, "g2", A, user="someone-else")
    assert [c[4] for c in out.of("resumed")] == ["unknown-session", "user-mismatch"]
    assert A in mesh.away and mesh.sessions[h(f"secret-{A}")] == A
    out.clear()
    resume(mesh, "g2", A)
    assert result(out)["client"] == A


def test_a_still_connected_session_is_taken_over_and_stale_reports_ignored(make: Make) -> None:
    mesh, out = make(A, B)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    out.clear()
    resume(mesh, "g3", A, seen=positions(out, A))
    assert out.of("close") == [("close", "g1", A, RESUMED_ELSEWHERE, "resumed elsewhere")]
    assert [c[0] for c in out.calls if c[0] in ("close", "resumed")] == ["close", "resumed"]
    assert result(out)["client"] == A
    assert mesh.rooms["r"].gateways == {"g2": 1, "g3": 1}
    out.clear()
    mesh.client_away(A, 2.0, "g1")  # the old gateway notices its dead connection: stale
    mesh.client_disconnected(A, "g1")
    assert mesh.clients[A].gateway == "g3" and out.calls == []


def test_a_take_over_on_the_same_gateway_is_left_to_the_gateway(make: Make) -> None:
    mesh, out = make(A)
    resume(mesh, "g1", A)
    assert out.of("close") == [] and result(out)["client"] == A


def test_a_position_of_a_stream_it_does_not_have_is_ignored(make: Make) -> None:
    """An epoch none of its streams has (a room made again since, or it left): as if not
    named, so that stream is replayed from when it went away."""
    mesh, out = make(A, B)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    mesh.client_away(A, 1.0, "g1")
    say(mesh, B, "r", 1)
    out.clear()
    resume(mesh, "g2", A, seen={f"{EPOCH}.77": 9})
    assert result(out)["client"] == A and texts(result(out)["replay"]) == [("chat", "r", 1)]


def test_a_position_of_another_processor_is_history_lost_and_ends_the_session(make: Make) -> None:
    """It had messages of a processor that is gone (a restart while it stayed connected,
    its gateway listing it to the new one): they are lost with it, never a silent gap."""
    mesh, out = make(A, B)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    mesh.client_away(A, 1.0, "g1")
    out.clear()
    resume(mesh, "g2", A, seen={EPOCH: 0, "an-older-processor.2": 3})
    assert result(out)["reason"] == "history-lost" and result(out)["epoch"] == EPOCH
    assert A not in mesh.clients
    assert [m["action"] for m in out.inbox(B)] == ["client-left-room"]


def test_a_missed_message_no_longer_held_is_history_lost(make: Make) -> None:
    mesh, out = make(A, B, history_size=2)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    seen = positions(out, A)
    mesh.client_away(A, 1.0, "g1")
    for n in range(3):
        say(mesh, B, "r", n)
    out.clear()
    resume(mesh, "g2", A, seen=seen)
    assert result(out)["reason"] == "history-lost" and A not in mesh.clients


def test_direct_history_is_bounded_too(make: Make) -> None:
    mesh, out = make(A, B, direct_history=1)
    mesh.client_away(A, 1.0, "g1")
    send(mesh, B, "whisper", A, {"n": 1}, to_client=True)
    send(mesh, B, "whisper", A, {"n": 2}, to_client=True)
    out.clear()
    resume(mesh, "g2", A, seen={EPOCH: 0})
    assert result(out)["reason"] == "history-lost"


def test_a_position_this_epoch_never_reached_is_history_lost(make: Make) -> None:
    mesh, out = make(A)
    mesh.client_away(A, 1.0, "g1")
    resume(mesh, "g2", A, seen={EPOCH: 10_000})
    assert result(out)["reason"] == "history-lost"


def test_history_older_than_its_age_is_dropped(make: Make) -> None:
    mesh, out = make(A, B, history_age=10.0)
    send(mesh, A, "join-room", "r")
    mesh.gateway_seen("g1", 1.0)
    say(mesh, A, "r", 1)
    mesh.gateway_seen("g1", 20.0)
    say(mesh, A, "r", 2)
    mesh.gateway_seen("g2", 20.0)
    mesh.expire(20.0)
    assert [f[0] for f in mesh.room_streams["r"].held or ()] == [3]  # join notice and n=1 are gone
    assert mesh.room_streams["r"].dropped == 2


# ------------------------------------------------------------ the history action


def history(mesh: Mesh, out: RecordingOutbox, client: str, room: str, **body: Any) -> dict[str, Any]:
    out.clear()
    send(mesh, client, "history", room, body or None, rid=1)
    (reply,) = out.stream(client)
    return reply


def test_history_pages_through_a_room(make: Make) -> None:
    mesh, out = make(A, B)
    send(mesh, A, "join-room", "r")
    for n in range(5):
        say(mesh, A, "r", n)
    page = history(mesh, out, B, "r", limit=2)  # not a member: a public room is readable
    assert page["action"] == "history" and page["target"] == "r" and page["id"] == 1
    body = page["message_body"]
    assert body["epoch"] == mesh.rooms["r"].epoch
    assert [m["offset"] for m in body["messages"]] == [1, 2] and body["next"] == 2
    assert body["messages"][0]["action"] == "client-joined-room"
    page = history(mesh, out, B, "r", since=2, limit=100, epoch=mesh.rooms["r"].epoch)
    assert [m["message_body"]["n"] for m in page["message_body"]["messages"]] == [1, 2, 3, 4]
    assert page["message_body"]["next"] is None
    assert history(mesh, out, B, "r", since=6)["message_body"] == {
        "epoch": mesh.rooms["r"].epoch, "messages": [], "next": None}
    assert len(history(mesh, out, B, "r", limit=0)["message_body"]["messages"]) == 1  # clamped


def test_history_lost_when_trimmed_or_another_epoch(make: Make) -> None:
    mesh, out = make(A, history_size=2)
    send(mesh, A, "join-room", "r")
    for n in range(3):
        say(mesh, A, "r", n)
    reply = history(mesh, out, A, "r", since=0)
    assert reply["message_body"]["code"] == "history-lost"
    assert [m["offset"] for m in history(mesh, out, A, "r", since=2)["message_body"]["messages"]] == [3, 4]
    assert history(mesh, out, A, "r", epoch="e0.1")["message_body"]["code"] == "history-lost"
    assert history(mesh, out, A, "r", since="x")["message_body"]["code"] == "bad-body"


def test_history_of_private_rooms_claimed_rooms_and_unknown_ones(make: Make) -> None:
    mesh, out = make(A, B)
    mesh.watcher_hello(W, "game", [], ["w-", "private-"], 0.0)
    mesh.command(W, 1, CreateRoom("private-p"))
    mesh.command(W, 2, Join(A, "private-p"))
    mesh.command(W, 3, CreateRoom("w-g"))
    mesh.command(W, 4, SendRoom("private-p", protocol.encode("s", "private-p", b"{}")))
    assert history(mesh, out, B, "private-p")["message_body"]["code"] == ErrorCode.FORBIDDEN.value
    assert history(mesh, out, B, "private-nope")["message_body"]["code"] == ErrorCode.FORBIDDEN.value
    assert history(mesh, out, B, "w-g")["message_body"]["code"] == ErrorCode.FORBIDDEN.value
    assert history(mesh, out, B, "nope")["message_body"]["code"] == ErrorCode.UNKNOWN_ROOM.value
    assert [m["action"] for m in history(mesh, out, A, "private-p")["message_body"]["messages"]] == ["s"]
    assert out.of("to_watcher") == []  # the core answers, the watcher is not asked


def test_history_leaves_out_what_the_client_was_excluded_from(make: Make) -> None:
    mesh, out = make(A, B)
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r")
    mesh.watcher_hello(W, "bot", [], ["zz-"], 0.0)
    mesh.command(W, 1, SendRoom("r", protocol.encode("secret", "r", b"{}"), exclude=(B,)))
    actions = [m["action"] for m in history(mesh, out, B, "r")["message_body"]["messages"]]
    assert actions == ["client-joined-room", "client-joined-room"]
    assert "secret" in [m["action"] for m in history(mesh, out, A, "r")["message_body"]["messages"]]


def test_all_histories_together_stay_within_the_byte_budget(make: Make) -> None:
    """--history-bytes bounds the memory of every room's history together: at each expire
    (every heartbeat) the oldest messages held anywhere go first, whatever room they are
    in, and a resume that needed one is history-lost, never a silent gap."""
    from meshstream_zmq.core import HELD_OVERHEAD

    mesh, out = make(A, B)
    mesh.history.rooms.budget = 3 * (HELD_OVERHEAD + 200)  # about three messages
    for room in ("r", "s"):
        send(mesh, A, "join-room", room)
        send(mesh, B, "join-room", room)
    seen = positions(out, A)
    mesh.client_away(A, 1.0, "g1")
    for n in range(6):
        say(mesh, B, "rs"[n % 2], n)
    assert mesh.history.rooms.held > mesh.history.rooms.budget  # counted as they come ...
    mesh.expire(2.0)
    assert 0 < mesh.history.rooms.held <= mesh.history.rooms.budget  # ... trimmed at the beat
    held = [(name, [h[0] for h in s.held]) for name, s in mesh.room_streams.items() if s.held]
    newest = sorted(seq for _, seqs in held for seq in seqs)
    assert newest == list(range(mesh.seq - len(newest) + 1, mesh.seq + 1))  # the newest, in any room
    assert {name for name, _ in held} == {"r", "s"}
    out.clear()
    resume(mesh, "g2", A, seen=seen)
    assert result(out)["reason"] == "history-lost"
    mesh.check()


def test_a_deleted_room_gives_its_history_bytes_back(make: Make) -> None:
    mesh, out = make(A)
    send(mesh, A, "join-room", "r")
    say(mesh, A, "r", 1)
    assert mesh.history.rooms.held > 0
    send(mesh, A, "leave-room", "r")  # the room empties and is deleted
    assert "r" not in mesh.rooms
    assert mesh.history.rooms.held == 0
    mesh.check()  # the count equals what the remaining rooms hold


def test_a_gateways_hello_keeps_what_the_processor_knows_and_resumes_answered_since(
        make: Make) -> None:
    """Mesh.gateway_listed: a hello lists what the gateway had applied when it sent it. A
    client the processor knows keeps its rooms (ops may have been on their way); one that
    resumed on that gateway after the hello was sent, not listed, stays (its resume, asked
    again in the same batch, names the session in force) and is answered again."""
    mesh, out = make(A, A2)
    send(mesh, A, "join-room", "r")
    mesh.client_away(A2, 1.0, "g1")
    resume(mesh, "g1", A2, new="second")  # answered; the answer is on its way
    out.clear()
    mesh.gateway_listed("g1", 1, [(A, [], f"u-{A}", h(f"secret-{A}"))], [h("second")], 2.0)
    assert mesh.clients[A].rooms == {LOBBY, "r"}  # not left: the hello was older than the join
    assert mesh.clients[A2].gateway == "g1" and out.inbox(A) == []
    out.clear()
    resume(mesh, "g1", A2, secret="secret-" + A2, new="second")  # asked again after the hello
    assert result(out)["client"] == A2  # answered again, the session in force
