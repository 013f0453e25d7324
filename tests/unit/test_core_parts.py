"""The core's parts, each alone (rooms, sessions, history, claims: each keeps its own state
and checks it), and `Mesh` over them: state that is plain data a snapshot takes, and
equal in two meshes given the same inputs (what replaying a log needs), under the
property tests' random traffic and under random sessions, resumes and history bounds.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from meshstream_zmq import LOBBY, protocol
from meshstream_zmq.claims import Claims
from meshstream_zmq.commands import CreateRoom, DeleteRoom, SendClients, SendRoom
from meshstream_zmq.core import Mesh
from meshstream_zmq.history import HELD_OVERHEAD, History
from meshstream_zmq.rooms import Rooms
from meshstream_zmq.sessions import EXPIRED_KEPT, Sessions

from .outbox import RecordingOutbox, new_mesh, send
from .test_core_properties import TIMEOUT, WATCHER_NAME, MeshMachine, room_pass

A, B, C = "g1.1", "g2.1", "g3.1"
FRAME = b'{"action":"say","target":"r","message_body":{}}'


def h(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


PLAIN = (str, int, float, bool, bytes, type(None))


def assert_plain(value: Any, where: str = "snapshot") -> None:
    """Only dicts (str keys), lists and scalars: nothing that refers to live state."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), (where, key)
            assert_plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            assert_plain(item, f"{where}[{n}]")
    else:
        assert isinstance(value, PLAIN), (where, type(value))


# ====================================================================== rooms


def test_rooms_number_each_incarnation_into_its_epoch() -> None:
    rooms = Rooms("e")
    rooms.create(LOBBY, keep=True)
    first = rooms.create("r", maker=A).epoch
    Rooms.add(rooms.rooms["r"], A, "g1", 0)
    rooms.check()
    assert rooms.delete("r") and not rooms.delete("r")
    again = rooms.create("r", maker=B)
    Rooms.add(again, B, "g2", 0)
    assert (first, again.epoch) == ("e.2", "e.3")  # a room made again has a new epoch
    rooms.check()


def test_rooms_count_present_members_per_gateway_and_pass_the_maker_on() -> None:
    rooms = Rooms("e")
    rooms.create(LOBBY, keep=True)
    room = rooms.create("r", maker=A)
    for client, gateway in ((A, "g1"), (B, "g2"), (C, "")):  # C is away: on no gateway
        Rooms.add(room, client, gateway, 5)
    assert room.gateways == {"g1": 1, "g2": 1} and room.members == {A: 5, B: 5, C: 5}
    rooms.detach(["r"], "g1")
    assert room.gateways == {"g2": 1}
    rooms.attach(["r"], "g3")
    assert room.gateways == {"g2": 1, "g3": 1}
    rooms.detach(["r"], "g3")
    Rooms.remove(room, A, "")
    assert room.maker == B  # the next member in join order
    Rooms.remove(room, B, "g2")
    Rooms.remove(room, C, "")
    assert room.maker == "" and room.gateways == {}


def test_rooms_check_catches_an_empty_room_and_a_count_with_no_member() -> None:
    rooms = Rooms("e")
    rooms.create(LOBBY, keep=True)
    rooms.create("r", maker=A)
    with pytest.raises(AssertionError):
        rooms.check()  # empty and not kept
    Rooms.add(rooms.rooms["r"], A, "g1", 0)
    rooms.rooms["r"].gateways["g2"] += 1
    with pytest.raises(AssertionError):
        rooms.check()  # two counted, one member


# ====================================================================== sessions


def test_sessions_keep_an_away_client_until_its_window_passes() -> None:
    sessions = Sessions()
    gw = sessions.gateway("g1", 0.0, 1)
    state = sessions.connect(gw, A, "alice", h("s"))
    state.rooms.add(LOBBY)
    sessions.go_away(state, 60.0, 7)
    assert (state.gateway, state.away_seq, sessions.away) == ("", 7, {A: 60.0})
    assert A not in gw.clients and sessions.sessions == {h("s"): A}
    sessions.check()
    assert sessions.due(59.0) is None and sessions.due(60.0) is state
    sessions.back(state, sessions.gateway("g2", 1.0))
    assert state.gateway == "g2" and not sessions.away and sessions.due(100.0) is None
    sessions.set_session(state, h("rotated"))
    assert sessions.sessions == {h("rotated"): A}
    sessions.check()
    sessions.end(state)
    assert not sessions.clients and not sessions.sessions and not sessions.gateways["g2"].clients


def test_sessions_remember_a_bounded_number_of_expired_hashes() -> None:
    sessions = Sessions()
    for n in range(EXPIRED_KEPT + 2):
        sessions.remember_expired(n.to_bytes(4, "big"))
    sessions.remember_expired(b"")  # no session: nothing to remember
    assert len(sessions.expired) == EXPIRED_KEPT
    assert (0).to_bytes(4, "big") not in sessions.expired  # the oldest go first
    sessions.check()


def test_sessions_check_catches_a_client_its_gateway_does_not_list() -> None:
    sessions = Sessions()
    state = sessions.connect(sessions.gateway("g1", 0.0), A, "", b"")
    state.rooms.add(LOBBY)
    sessions.check()
    sessions.gateways["g1"].clients.clear()
    with pytest.raises(AssertionError):
        sessions.check()


# ====================================================================== history


def test_history_numbers_each_stream_by_offset_and_all_in_one_internal_sequence() -> None:
    history = History("e")
    r, s = history.open("r", "e.1"), history.open("s", "e.2")
    assert history.position(r) == protocol.position(1, "e.1")
    assert history.append(r, b"{}", (), 0.0) == 1
    assert history.position(s) == protocol.position(1, "e.2")  # its own offsets, one seq
    assert history.append(s, b"{}", (), 0.0) == 2
    dm = b'{"action":"dm"}'
    assert history.append_direct([A, B], dm, 0.0) == [(A, b'{"action":"dm","offset":1,"epoch":"e"}'),
                                                      (B, b'{"action":"dm","offset":1,"epoch":"e"}')]
    assert history.append_direct([A], dm, 0.0) == [(A, b'{"action":"dm","offset":2,"epoch":"e"}')]
    assert history.seq == 4 and history.position(r) == protocol.position(2, "e.1")
    assert history.bounds("r") == (1, 1) and history.bounds("s") == (1, 1)
    history.check()


def test_a_clients_position_becomes_the_seq_its_replay_starts_after() -> None:
    history = History("e", history_size=3)
    r = history.open("r", "e.1")
    history.append_direct([B], b"{}", 0.0)  # seq 1: not in r
    for _ in range(4):  # offsets 1..4 at seqs 2..5; the ring keeps offsets 2, 3, 4
        history.append(r, b"{}", (), 0.0)
    rooms = history.rooms
    assert [rooms.after("r", n) for n in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert rooms.after("r", 0) is None  # offset 1 is gone: never a silent gap
    assert rooms.after("r", 5) is None  # never reached: not a position of ours
    assert rooms.after("nowhere", 0) == 0 and rooms.after("nowhere", 1) is None
    assert history.direct.after(B, 1) == 1 and history.direct.after(A, 0) == 0
    assert rooms.since("r", rooms.after("r", 2) or 0, A) == [(4, b"{}"), (5, b"{}")]


def test_since_gives_what_a_client_missed_or_none_once_a_message_is_gone() -> None:
    history = History("e", history_size=3)
    r = history.open("r", "e.1")
    for n in range(1, 5):  # the ring keeps 2, 3, 4
        history.append(r, b'{"n":%d}' % n, (B,) if n == 3 else (), 0.0)
    assert history.rooms.since("r", 2, A) == [(3, b'{"n":3}'), (4, b'{"n":4}')]
    assert history.rooms.since("r", 2, B) == [(4, b'{"n":4}')]  # excluded from 3
    assert history.rooms.since("r", 0, A) is None  # 1 is gone: never a silent gap
    assert history.rooms.since("r", 4, A) == []
    assert history.page("r", 1, 10, B) == ([b'{"n":2}', b'{"n":4}'], None)
    assert history.page("r", 1, 1, A) == ([b'{"n":2}'], 2)
    history.check()


def test_trim_drops_by_age_then_the_oldest_anywhere_over_the_budget() -> None:
    frame = b"x" * 100
    cost = len(frame) + HELD_OVERHEAD
    history = History("e", history_age=10.0, history_bytes=2 * cost)
    r, s = history.open("r", "e.1"), history.open("s", "e.2")
    history.append(r, frame, (), 0.0)  # seq 1: too old at 20
    for seq in range(2, 6):
        history.append(r if seq % 2 else s, frame, (), 15.0)
    assert history.rooms.held == 5 * cost  # counted as they come
    history.trim(20.0)
    assert history.rooms.held == 2 * cost
    assert [h[0] for h in r.held or ()] == [5] and [h[0] for h in s.held or ()] == [4]
    assert history.take_drops() == {"history": 2}  # 2 and 3 for the budget; 1 by age is not counted
    assert history.take_drops() == {}
    history.trim(30.0)  # all too old: the streams let their rings go, and remember
    assert r.held is None and s.held is None and (r.dropped, s.dropped) == (5, 4)
    assert history.rooms.held == 0 and not history.rooms.holding
    history.check()


def test_a_direct_message_to_several_clients_is_a_copy_per_client_counted_per_client() -> None:
    frame = b"y" * 50
    history = History("e", direct_history=2)
    history.append_direct([A, B], frame, 0.0)
    a, b = history.direct.streams[A], history.direct.streams[B]
    assert a.held is not None and b.held is not None and a.held[0][0] == b.held[0][0]
    copy = len(frame) - 1 + len(protocol.position(1, "e")) + 1  # each copy has its offset
    assert history.direct.held == 2 * (copy + HELD_OVERHEAD)
    for _ in range(2):
        history.append_direct([A], frame, 0.0)
    assert [m[0] for m in a.held] == [2, 3] and a.dropped == 1  # at most 2 per client
    history.forget(A)
    assert history.direct.held == copy + HELD_OVERHEAD and A not in history.direct.streams
    history.check()


def test_replay_merges_a_clients_streams_in_seq_order() -> None:
    history = History("e")
    r, s = history.open("r", "e.1"), history.open("s", "e.2")
    history.append(r, b"1", (), 0.0)
    history.append_direct([A], b'{"n":2}', 0.0)
    history.append(s, b"3", (), 0.0)
    history.append(r, b"4", (A,), 0.0)  # not for A
    history.append(r, b"5", (), 0.0)
    two = b'{"n":2,"offset":1,"epoch":"e"}'
    assert history.replay(A, [("r", 0), ("s", 0)], 0) == [b"1", two, b"3", b"5"]
    assert history.replay(A, [("r", 2), ("s", 0)], 1) == [two, b"3", b"5"]  # joined r at 2
    assert history.replay(A, [("r", 0)], 2) == [b"1", b"5"]


def test_history_check_catches_a_miscount() -> None:
    history = History("e")
    history.append(history.open("r", "e.1"), b"{}", (), 0.0)
    history.check()
    history.rooms.frames += 1
    with pytest.raises(AssertionError):
        history.check()


# ====================================================================== claims


def test_the_owner_is_the_exact_claim_then_the_longest_prefix_a_live_one_first() -> None:
    claims = Claims()
    short, _ = claims.register("w1", "short", [], ["g-"], 0.0, (), ())
    long, _ = claims.register("w2", "long", [], ["g-x"], 0.0, (), ())
    exact, _ = claims.register("w3", "exact", ["g-xy"], [], 0.0, (), ())
    assert claims.owner("g-1") is short and claims.owner("g-x1") is long
    assert claims.owner("g-xy") is exact and claims.owner("other") is None
    claims.gone("w3")  # a dead claim still counts (watcher-unavailable) until replaced
    assert claims.owner("g-xy") is exact and claims.owner_id("g-xy") == ""
    claims.assign(short, "solo")
    assert claims.owner("solo") is short
    claims.room_deleted("solo")
    assert claims.owner("solo") is None  # the cache follows every claim change
    claims.check()


def test_a_restart_takes_over_its_rooms_and_hands_back_what_was_never_confirmed() -> None:
    claims = Claims()
    old, _ = claims.register("w1", "game", [], ["g-"], 0.0, (), ())
    claims.assign(old, "lobby-1")
    claims.assign(old, "deleted")
    for n in range(3):
        Claims.forwarded(old, A, "move", "g-1", b"%d" % n)
    assert claims.seen("w1", 1.0, acked=1) and [u[0] for u in old.unacked] == [2, 3]
    assert claims.conflict("w2", "other", frozenset(), ["g-"]) is old  # a live claim
    new, unconfirmed = claims.register("w2", "game", [], ["g-"], 2.0, (), {"lobby-1"})
    assert [u[0] for u in unconfirmed] == [2, 3] and set(claims.watchers) == {"w2"}
    assert new.assigned == {"lobby-1"}  # the rooms that still exist
    assert claims.gone("w2") == [] and not claims.seen("w2", 3.0, None)
    claims.check()


# ====================================================================== the whole mesh


def drive(mesh: Mesh) -> None:
    """A bit of everything: sessions, rooms, watcher commands, history bounds."""
    for client in (A, B, C):
        mesh.client_connected(client, 0.0, user=f"u-{client}", session_hash=h(client))
    mesh.watcher_hello("w", "bot", [], ["w-"], 0.0)
    mesh.command("w", 1, CreateRoom("w-1", settings={"k": "v"}))
    send(mesh, A, "join-room", "r")
    send(mesh, B, "join-room", "r", rid=1)
    send(mesh, A, "say", "r", {"n": 1}, rid=2)
    send(mesh, A, "whisper", B, {"n": 2}, to_client=True)
    mesh.command("w", 2, SendRoom("r", protocol.encode("notice", "r", b"{}"), exclude=(A,)))
    mesh.command("w", 3, SendClients((A, C), protocol.encode("dm", "", b"{}")))
    send(mesh, C, "move", "w-1", {"x": 1}, rid=3)
    mesh.client_away(B, 1.0, "g2")
    send(mesh, A, "say", "r", {"n": 3})
    mesh.resume("g3", "L", h(B), h("B2"), f"u-{B}", {"e": 0, "e.2": 1}, 2.0)
    mesh.gateway_seen("g1", 5.0)
    mesh.expire(5.0)


def test_two_meshes_given_the_same_inputs_have_equal_plain_snapshots() -> None:
    meshes = [new_mesh(epoch="e", resume_window=30.0, history_size=3)[0] for _ in range(2)]
    for mesh in meshes:
        drive(mesh)
        mesh.check()
    one, two = (m.snapshot() for m in meshes)
    assert_plain(one)
    assert one == two and repr(one) == repr(two)  # the same, in the same order
    assert one["history"]["seq"] > 0 and one["sessions"]["away"] == []


def test_a_snapshot_shares_nothing_with_the_live_state() -> None:
    mesh, _ = new_mesh(epoch="e", resume_window=30.0)
    drive(mesh)
    snapshot = mesh.snapshot()
    kept = copy.deepcopy(snapshot)
    mesh.command("w", 9, DeleteRoom("w-1"))
    send(mesh, A, "say", "r", {"n": 4})
    mesh.client_disconnected(C)
    assert snapshot == kept and mesh.snapshot() != kept


@pytest.mark.parametrize("size", [0, 2, 1000])
def test_the_relays_inlined_append_is_history_append(size: int) -> None:
    """Mesh.client_frame holds a relay with a copy of History.position and append (the hot
    path): it must leave what the generic path (a room notice without exclusions) leaves."""
    meshes = [new_mesh(epoch="e", history_size=size, history_bytes=6 * (HELD_OVERHEAD + 60))
              for _ in range(2)]
    for mesh, _ in meshes:
        for client in (A, B):
            mesh.client_connected(client, 0.0)
            send(mesh, client, "join-room", "r")
        mesh.command("w", 1, CreateRoom("r2"))  # no watcher: refused alike
    (relayed, out), (generic, out2) = meshes
    for n in range(9):
        body = protocol.encode_body({"n": n, "pad": "z" * n})
        relayed.client_frame(A, "say", "r", body)
        generic._room_message(generic.rooms["r"], "say", body, A)
        if n % 4 == 3:  # the budget's trim
            for mesh in (relayed, generic):
                for gateway in ("g1", "g2"):
                    mesh.gateway_seen(gateway, float(n))
                mesh.expire(float(n))
    assert out.calls == out2.calls  # the same frames, with the same positions
    assert repr(relayed.snapshot()) == repr(generic.snapshot())
    relayed.check()


class Twin:
    """Every call to both meshes (iterators made lists first, so both see them); reads
    from the first. The second has its own outbox, answering as the first's does."""

    def __init__(self, first: Mesh, second: Mesh, out: RecordingOutbox, other: RecordingOutbox) -> None:
        self._first, self._second, self._out, self._other = first, second, out, other

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._first, name)
        if not callable(value) or name in ("check", "snapshot"):
            return value
        twin = getattr(self._second, name)

        def both(*args: Any, **kwargs: Any) -> Any:
            args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
            self._other.watcher_accepts = self._out.watcher_accepts
            result = value(*args, **kwargs)
            twin(*args, **kwargs)
            return result
        return both

    def agree(self) -> None:
        self._first.check()
        self._second.check()
        snapshot = self._first.snapshot()
        assert_plain(snapshot)
        assert repr(snapshot) == repr(self._second.snapshot())


class TwinMeshMachine(MeshMachine):
    """The property tests' random runs (MeshMachine, with its model), on two meshes at once:
    every part's check() holds in both, and their snapshots stay equal."""

    def __init__(self) -> None:
        super().__init__()
        second, other = new_mesh(gateway_timeout=TIMEOUT, watcher_timeout=TIMEOUT,
                                 room_pass=room_pass, max_rooms_per_client=1)
        second.watcher_hello(self.watcher_id, WATCHER_NAME, [], ["w-"], self.now)
        self.twin = Twin(self.mesh, second, self.out, other)
        self.mesh = self.twin  # type: ignore[assignment]

    @invariant()
    def twins_agree(self) -> None:
        self.twin.agree()


TwinMeshMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestTwinMesh = TwinMeshMachine.TestCase


CLIENTS = [f"g{g}.{n}" for g in (1, 2) for n in (1, 2, 3)]
clients = st.sampled_from(CLIENTS)
room_names = st.sampled_from(["r", "s", "w-1"])


class SessionsMachine(RuleBasedStateMachine):
    """Sessions, away clients, resumes at any position and tight history bounds, on two
    meshes: every part's check() holds, snapshots stay equal, and every replay is in
    seq order."""

    def __init__(self) -> None:
        super().__init__()
        make: Callable[[], tuple[Mesh, RecordingOutbox]] = lambda: new_mesh(  # noqa: E731
            epoch="e", resume_window=5.0, history_size=3, history_age=4.0,
            history_bytes=3 * (HELD_OVERHEAD + 150), direct_history=2, direct_history_age=4.0,
            direct_history_bytes=2 * (HELD_OVERHEAD + 150), gateway_timeout=100.0)
        (first, self.out), (second, other) = make(), make()
        self.mesh = Twin(first, second, self.out, other)
        self.mesh.watcher_hello("w", "bot", [], ["w-"], 0.0)
        self.now = 0.0
        self.secret: dict[str, int] = {}  # client -> generation of its session secret

    def session(self, client: str) -> bytes:
        return h(f"{client}/{self.secret.get(client, 0)}")

    @rule(client=clients)
    def connect(self, client: str) -> None:
        self.mesh.client_connected(client, self.now, f"u-{client}", self.session(client))

    @rule(client=clients, room=room_names)
    def join(self, client: str, room: str) -> None:
        send(self.mesh, client, "join-room", room)  # type: ignore[arg-type]
        self.mesh.command("w", 1, CreateRoom(room))

    @rule(client=clients, room=room_names, rid=st.booleans())
    def say(self, client: str, room: str, rid: bool) -> None:
        send(self.mesh, client, "say", room, {"t": "x" * 40}, rid=1 if rid else None)  # type: ignore[arg-type]
        self.mesh.command("w", 2, SendRoom(room, protocol.encode("n", room, b"{}"), exclude=(client,)))

    @rule(client=clients, to=st.lists(clients, min_size=1, max_size=3))
    def whisper(self, client: str, to: list[str]) -> None:
        send(self.mesh, client, "w", to[0], {"t": "y" * 40}, to_client=True)  # type: ignore[arg-type]
        self.mesh.command("w", 3, SendClients(tuple(to), protocol.encode("dm", "", b"{}")))

    @rule(client=clients, room=room_names)
    def leave_or_delete(self, client: str, room: str) -> None:
        send(self.mesh, client, "leave-room", room)  # type: ignore[arg-type]
        self.mesh.command("w", 4, DeleteRoom(room))

    @rule(client=clients, clean=st.booleans())
    def connection_ends(self, client: str, clean: bool) -> None:
        if clean:
            self.mesh.client_disconnected(client)
        else:
            self.mesh.client_away(client, self.now)

    @rule(client=clients, gateway=st.sampled_from(["g1", "g2"]), back=st.integers(0, 4),
          epoch=st.sampled_from(["e", "old", None]), rooms=st.booleans())
    def resume(self, client: str, gateway: str, back: int, epoch: str | None, rooms: bool) -> None:
        old = self.session(client)
        self.secret[client] = self.secret.get(client, 0) + 1
        self.out.clear()
        mesh = self.mesh
        stream = mesh.history.direct.streams.get(client)
        named = {} if epoch is None else {epoch: max(0, (stream.offset if stream else 0) - back)}
        if rooms and client in mesh.clients:  # each room back a little from its newest
            for name in mesh.clients[client].rooms:
                named[mesh.rooms[name].epoch] = max(0, mesh.room_streams[name].offset - back)
        mesh.resume(gateway, "L", old, self.session(client), f"u-{client}", named, self.now)
        for call in self.out.of("resumed"):
            streams: dict[tuple[str, str], list[int]] = {}
            for frame in call[6]:
                f = protocol.decode_body(frame)
                streams.setdefault((f["epoch"], f["target"]), []).append(f["offset"])
            for offsets in streams.values():  # per stream in order, each once
                assert offsets == sorted(set(offsets)), offsets

    @rule(dt=st.sampled_from([0.5, 1.5, 3.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        for gateway in ("g1", "g2"):
            self.mesh.gateway_seen(gateway, self.now)
        self.mesh.watcher_seen("w", self.now)
        self.mesh.expire(self.now)

    @invariant()
    def twins_agree(self) -> None:
        self.mesh.agree()


SessionsMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestSessionsAndHistory = SessionsMachine.TestCase
