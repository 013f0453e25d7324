"""Snapshots (meshstream_zmq/snapshot.py): a state dumped and loaded into fresh objects
behaves as the original does.

The property tests' random runs are reused: the core's (MeshMachine, on two meshes:
test_core_parts.py's TwinMeshMachine, and its SessionsMachine of sessions, resumes and
tight history bounds) and the link harness's (a real processor and gateway cores through
the real codec: test_link_harness.py). Here the second of the twins is, at any step,
replaced by its own snapshot loaded into fresh objects; from then on both get the same
inputs and must make the same outputs (every outbox call, every message on the XPUB) and
keep equal `snapshot()`s, and a loaded state dumps to the very bytes it was loaded from.
A snapshot that does not decode, is cut short or altered, of an unknown version, or whose
state fails a check raises `BadSnapshot`, and nothing else.
"""

from __future__ import annotations

import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from meshstream_zmq import LOBBY, protocol, snapshot
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.commands import Disconnect, Query, QueryWhat, SendRoom, Settings
from meshstream_zmq.config import Config
from meshstream_zmq.core import Mesh
from meshstream_zmq.link import GatewayOutput
from meshstream_zmq.snapshot import BadSnapshot, ProcessorFields
from services.processor import ROOM_TOPIC, Processor

from .outbox import RecordingOutbox, new_mesh, send
from .test_core_parts import SessionsMachine, Twin, TwinMeshMachine, drive, h
from .test_link_harness import LinkMachine, Network

# ====================================================================== the core alone


def configured_as(mesh: Mesh, **changes: Any) -> dict[str, Any]:
    """The Mesh arguments `mesh` was made with (its configuration: not in a snapshot)."""
    rooms, direct = mesh.history.rooms, mesh.history.direct
    return {"gateway_timeout": mesh.gateway_timeout, "watcher_timeout": mesh.watcher_timeout,
            "room_pass": mesh.room_pass, "max_rooms_per_client": mesh.max_rooms_per_client,
            "direct_messages": mesh.direct_messages, "resume_window": mesh.resume_window,
            "history_size": rooms.size, "history_age": rooms.age, "history_bytes": rooms.budget,
            "direct_history": direct.size, "direct_history_age": direct.age,
            "direct_history_bytes": direct.budget, **changes}


def reloaded(mesh: Mesh) -> tuple[Mesh, RecordingOutbox]:
    """`mesh`'s snapshot loaded into a fresh mesh of the same configuration (another epoch:
    the snapshot's must win), which dumps to the same bytes."""
    data = snapshot.dump(mesh)
    fresh, out = new_mesh(**configured_as(mesh, epoch="fresh"))
    snapshot.load(data, fresh)
    assert snapshot.dump(fresh) == data
    assert repr(fresh.snapshot()) == repr(mesh.snapshot())
    return fresh, out


class ReloadingTwin(Twin):
    """Twin (test_core_parts.py) whose second mesh `reload()` replaces with its snapshot
    loaded into a fresh one; every call then gives both the same outbox calls and result."""

    def __getattr__(self, name: str) -> Any:
        first = getattr(self._first, name)
        if not callable(first) or name in ("check", "snapshot"):
            return first
        second = getattr(self._second, name)
        outs = (self._out, self._other)

        def both(*args: Any, **kwargs: Any) -> Any:
            args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
            self._other.watcher_accepts = self._out.watcher_accepts
            marks = [(len(o.calls), len(o.seqs), len(o.users)) for o in outs]
            for o in outs:
                o.answers.clear()
            result = first(*args, **kwargs)
            assert second(*args, **kwargs) == result, name
            made = [(o.calls[c:], o.seqs[s:], o.users[u:], o.answers)
                    for o, (c, s, u) in zip(outs, marks, strict=True)]
            assert made[0] == made[1], (name, args)
            return result
        return both

    def reload(self) -> None:
        self._second, self._other = reloaded(self._second)

    def agree(self) -> None:
        """Both pass their checks, with equal snapshots, which dump to the same bytes. (Not
        Twin's plainness check: `Mesh.snapshot()` gives an idempotency key as a tuple.)"""
        for mesh in (self._first, self._second):
            mesh.check()
        assert repr(self._first.snapshot()) == repr(self._second.snapshot())
        assert snapshot.dump(self._first) == snapshot.dump(self._second)


class ReloadedMeshMachine(TwinMeshMachine):
    """The core's property tests' random traffic; at any step the twin is reloaded."""

    def __init__(self) -> None:
        super().__init__()
        t = self.twin
        self.twin = ReloadingTwin(t._first, t._second, t._out, t._other)
        self.mesh = self.twin  # type: ignore[assignment]

    @rule()
    def reload(self) -> None:
        self.twin.reload()


class ReloadedSessionsMachine(SessionsMachine):
    """Sessions, away clients, resumes and tight history bounds; at any step reloaded."""

    def __init__(self) -> None:
        super().__init__()
        t = self.mesh
        self.mesh = ReloadingTwin(t._first, t._second, t._out, t._other)  # type: ignore[assignment]

    @rule()
    def reload(self) -> None:
        self.mesh.reload()  # type: ignore[attr-defined]


ReloadedMeshMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=35, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestReloadedMesh = ReloadedMeshMachine.TestCase
ReloadedSessionsMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestReloadedSessions = ReloadedSessionsMachine.TestCase


def twins(**config: Any) -> ReloadingTwin:
    (first, out), (second, other) = new_mesh(**config), new_mesh(**config)
    return ReloadingTwin(first, second, out, other)


def test_what_the_random_runs_do_not_reach_is_kept_too() -> None:
    """Idempotency keys and their answers (rooms with settings in order, history pages),
    closes asked for, expired sessions, budget drops not yet taken, a watcher's unacked
    frames and its owner cache: kept, and the same later inputs give the same outputs."""
    mesh = twins(epoch="e", resume_window=30.0, history_size=3, history_bytes=900,
                 gateway_timeout=100.0, watcher_timeout=100.0)
    drive(mesh)  # type: ignore[arg-type]
    mesh.command("w", 4, Settings("w-1", {"z": "1", "a": "2"}), "k-settings")
    mesh.command("w", 5, SendRoom("r", protocol.encode("n", "r", b"{}")), "k-send")
    mesh.command("w", 6, Query(QueryWhat.ROOM, room="w-1", limit=5), "k-room")
    mesh.command("w", 7, Query(QueryWhat.HISTORY, room="r", limit=1), "k-history")
    mesh.command("w", 8, Disconnect("g1.1"))  # asked, not done: kept as a close to ask again
    mesh.client_connected("g1.9", 6.0, session_hash=h("nine"))
    mesh.client_away("g1.9", 6.0)
    for n in range(4):
        send(mesh, "g1.1", "say", "r", {"pad": "x" * 200, "n": n})  # type: ignore[arg-type]
    for gateway in ("g1", "g2", "g3"):
        mesh.gateway_seen(gateway, 40.0)
    mesh.watcher_seen("w", 40.0)
    mesh.expire(40.0)  # g1.9's window passed: its hash is kept, to answer `expired`
    second = mesh._second
    assert second.presence.expired and second.history.drops and second.idempotent["k-history"][1]
    assert second.gateways["g1"].closing and any(w.unacked for w in second.watchers.values())
    mesh.reload()
    assert list(mesh._second.rooms["w-1"].settings) == ["k", "z", "a"]
    for key in ("k-settings", "k-send", "k-room", "k-history"):  # answered again, as remembered
        mesh.command("w", 9, Settings("w-1", {"b": "3"}) if key == "k-settings" else
                     Query(QueryWhat.ROOMS), key)
    mesh.gateway_sync("g1")
    mesh.resume("g2", "L2", h("nine"), h("ten"), "", {}, 41.0)  # expired
    send(mesh, "g1.1", "say", "r", {"n": 9}, rid=4)  # type: ignore[arg-type]
    mesh.expire(41.0)
    mesh.agree()


def test_sets_are_walked_in_one_order_whatever_their_history() -> None:
    """A client's rooms and a gateway's clients are sets: a set that grew and shrank iterates
    otherwise than one built afresh with the same members (and than one in a process with
    another hash seed, as a replay of the log is). Leaving every room, and a gateway's
    clients going away, must come out in the same order either way."""
    mesh = twins(epoch="e", resume_window=30.0)
    clients = [f"g1.{n}" for n in range(80)]
    for client in clients:
        mesh.client_connected(client, 0.0, session_hash=h(client))
    for n in range(80):
        send(mesh, clients[0], "join-room", f"room-{n}")  # type: ignore[arg-type]
    for n in range(70):
        send(mesh, clients[0], "leave-room", f"room-{n}")  # type: ignore[arg-type]
    for client in clients[10:]:
        mesh.client_disconnected(client)
    mesh.reload()
    mesh.client_disconnected(clients[0])  # leaves room-70..79: notices, events, seqs
    mesh.drop_gateway("g1")  # the others go away: events in one order
    mesh.agree()


# ====================================================================== the processor


class Recorder:
    """The processor's XPUB as seen from outside: every message it sends, kept (and passed
    on to `then`, the harness's wire)."""

    def __init__(self, then: Any = None) -> None:
        self.sent: list[list[bytes]] = []
        self.then = then

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.sent.append(list(frames))
        if self.then is not None:
            self.then.send_multipart(frames, flags)


def take(proc: Processor) -> bytes:
    """What services/processor.py would store (its fields as its replay leaves them)."""
    return snapshot.dump(proc.mesh, proc.out, proc.peers, ProcessorFields(
        proc.applied, proc.last_time, proc.acked, proc.recovering, proc.resend))


def start_from(proc: Processor, data: bytes) -> None:
    """A processor starting from a snapshot: fresh parts with its own configuration, then
    the snapshot's state (the lines services/processor.py needs)."""
    proc.fresh_state()
    fields = snapshot.load(data, proc.mesh, proc.out, proc.peers)
    proc.epoch = proc.mesh.epoch
    proc.applied, proc.last_time = fields.log_seq, fields.last_time
    proc.acked, proc.recovering, proc.resend = fields.acked, fields.recovering, fields.resend
    proc.out.rooms_observed = any(t.startswith(ROOM_TOPIC) for t in proc.peers.subscriptions)


class TwinProcessors:
    """The harness's processor, and a second one fed the same inputs and, at any step,
    replaced by a new process started from its snapshot: every input must make the same
    messages on both XPUBs."""

    INPUTS = frozenset(("on_gateway", "on_subscription", "beat", "flush"))

    def __init__(self, first: Processor) -> None:
        self.first = first
        self.dirs: list[tempfile.TemporaryDirectory[str]] = []
        self.second = self.started(take(first))

    def started(self, data: bytes) -> Processor:
        tmp = tempfile.TemporaryDirectory()
        self.dirs.append(tmp)
        proc = Processor(Config(run_dir=str(Path(tmp.name) / "run"), metrics_port=0))
        proc.pub = Recorder()  # type: ignore[assignment]
        proc.failed = self.first.failed  # type: ignore[method-assign]
        proc.run_id = self.first.run_id  # (a new process has its own: beats and welcomes say it)
        start_from(proc, data)
        assert take(proc) == data
        return proc

    def reload(self) -> None:
        old, self.second = self.second, self.started(take(self.second))
        old.close()

    def __getattr__(self, name: str) -> Any:
        first = getattr(self.first, name)
        if name not in self.INPUTS:
            return first

        def both(*args: Any) -> None:
            a: Recorder = self.first.out.pub  # type: ignore[assignment]
            b: Recorder = self.second.out.pub  # type: ignore[assignment]
            marks = len(a.sent), len(b.sent)
            first(*args)
            getattr(self.second, name)(*args)
            assert a.sent[marks[0]:] == b.sent[marks[1]:], name
        return both

    def fresh_state(self) -> None:  # the harness's processor restart (a new epoch)
        self.first.fresh_state()  # (its outbox is then instrumented: TwinNetwork)
        old, self.second = self.second, self.started(take(self.first))
        old.close()

    def agree(self) -> None:
        one, two = self.first, self.second
        two.mesh.check()
        two.out.check()
        assert repr(two.mesh.snapshot()) == repr(one.mesh.snapshot())
        assert two.out.snapshot() == one.out.snapshot()
        assert two.peers.snapshot() == one.peers.snapshot()
        assert take(two) == take(one)

    def close(self) -> None:
        self.first.close()
        self.second.close()
        for tmp in self.dirs:
            tmp.cleanup()


class TwinNetwork(Network):
    def __init__(self) -> None:
        super().__init__()
        self.proc = TwinProcessors(self.proc)  # type: ignore[assignment]

    def instrument(self) -> None:
        super().instrument()
        self.proc.out.pub = Recorder(then=self.wire)  # type: ignore[assignment]

    def check(self) -> None:
        super().check()
        if isinstance(self.proc, TwinProcessors):
            self.proc.agree()


class ReloadedLinkMachine(LinkMachine):
    """The link harness's random network; at any step the twin processor is reloaded."""

    def __init__(self) -> None:  # LinkMachine's start, on a TwinNetwork
        super(LinkMachine, self).__init__()
        self.net = net = TwinNetwork()
        for node in net.nodes:
            for room in ("r1", "r2"):
                net.send(net.connect(node), "join-room", room)
        net.settle()

    @rule()
    def reload(self) -> None:
        self.net.proc.reload()  # type: ignore[attr-defined]


TestReloadedLink = ReloadedLinkMachine.TestCase
TestReloadedLink.settings = settings(max_examples=30, stateful_step_count=40, deadline=None)


def test_a_processor_started_from_a_snapshot_keeps_its_fields() -> None:
    """What the log's replay builds beside the parts: acked, recovering, resend, the clock,
    the log's sequence, a room observer's subscription."""
    net = TwinNetwork()
    try:
        net.send(net.connect(net.nodes[0]), "join-room", "r1")
        net.settle()
        twin = net.proc
        assert isinstance(twin, TwinProcessors)
        first = twin.first
        first.recovering, first.resend = {"gw1-1"}, {"gw1-1", "gw2-2"}
        first.last_time, first.applied = 1234.5, 77
        first.on_subscription(b"\x01" + ROOM_TOPIC + b"r1")
        twin.second.on_subscription(b"\x01" + ROOM_TOPIC + b"r1")
        twin.second.recovering, twin.second.resend = set(first.recovering), set(first.resend)
        twin.second.last_time, twin.second.applied = first.last_time, first.applied
        twin.reload()
        second = twin.second
        assert (second.recovering, second.resend) == ({"gw1-1"}, {"gw1-1", "gw2-2"})
        assert (second.last_time, second.applied, second.epoch) == (1234.5, 77, first.epoch)
        assert second.acked == first.acked and first.acked
        assert second.out.rooms_observed and second.out.epoch == first.epoch
        twin.agree()
    finally:
        net.close()


# ====================================================================== bad snapshots


@pytest.fixture(scope="module")
def good() -> bytes:
    mesh, _ = new_mesh(epoch="e", resume_window=30.0, history_size=3)
    drive(mesh)
    return snapshot.dump(mesh)


def fresh() -> Mesh:
    return new_mesh(epoch="x")[0]


def test_a_snapshot_cut_short_anywhere_is_refused(good: bytes) -> None:
    for n in range(len(good)):
        with pytest.raises(BadSnapshot):
            snapshot.load(good[:n], fresh())
    snapshot.load(good, fresh())


def test_a_snapshot_altered_anywhere_is_refused(good: bytes) -> None:
    for n in range(len(good)):
        altered = bytearray(good)
        altered[n] ^= 0x5A
        with pytest.raises(BadSnapshot):
            snapshot.load(bytes(altered), fresh())


def test_a_version_not_read_here_is_refused(good: bytes) -> None:
    envelope = pb.ProcessorSnapshot.FromString(good)
    assert envelope.version == snapshot.VERSION and snapshot.VERSION in snapshot.READS
    for version in (0, snapshot.VERSION + 1, 1000):
        envelope.version = version
        with pytest.raises(BadSnapshot, match=f"version {version}: this release reads"):
            snapshot.load(envelope.SerializeToString(), fresh())


def sealed_body(body: bytes) -> bytes:
    """A snapshot of these state bytes, with a right version and CRC."""
    return pb.ProcessorSnapshot(version=snapshot.VERSION, crc32=zlib.crc32(body),
                                state=body).SerializeToString()


def sealed(state: pb.ProcessorState) -> bytes:
    return sealed_body(state.SerializeToString())


def test_a_well_formed_snapshot_of_an_inconsistent_state_is_refused(good: bytes) -> None:
    state = pb.ProcessorState.FromString(pb.ProcessorSnapshot.FromString(good).state)
    (member,) = (r for r in state.mesh.rooms.rooms if r.name == "r")
    member.members.append("g9.9")  # a member no client entry knows
    member.marks.append(1)
    with pytest.raises(BadSnapshot, match="inconsistent"):
        snapshot.load(sealed(state), fresh())
    state = pb.ProcessorState.FromString(pb.ProcessorSnapshot.FromString(good).state)
    state.mesh.sessions.clients[0].gateway = "nowhere"  # on a gateway not known
    with pytest.raises(BadSnapshot, match="KeyError"):
        snapshot.load(sealed(state), fresh())
    with pytest.raises(BadSnapshot, match="no output part"):  # a core alone, for a processor
        snapshot.load(good, fresh(), GatewayOutput("x"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.builds(sealed_body, st.binary(max_size=400)))
def test_any_bytes_load_or_raise_bad_snapshot(data: bytes) -> None:
    """Sealed or not, no other exception escapes, and what loads passes its checks."""
    mesh = fresh()
    try:
        snapshot.load(data, mesh)
    except BadSnapshot:
        return
    mesh.check()


# ====================================================================== size


def test_a_hundred_thousand_held_messages_round_trip() -> None:
    """100k room and direct messages (docs/design.md, "Snapshots", has the timings)."""
    mesh, _ = new_mesh(epoch="e", history_size=1000, direct_history=100)
    clients = [f"g{n % 4}.{n}" for n in range(200)]
    for client in clients:
        mesh.client_connected(client, 0.0)
    for n, client in enumerate(clients[:100]):
        send(mesh, client, "join-room", f"room-{n}")
    body = protocol.encode_body({"text": "x" * 100})
    for _ in range(900):
        for room in range(100):
            mesh.client_frame(clients[room], "say", f"room-{room}", body)
    for _ in range(100):
        for client in clients[100:]:
            mesh.client_frame(clients[0], "dm", client, body, True)
    held = sum(len(s.held or ()) for p in (mesh.history.rooms, mesh.history.direct)
               for s in p.streams.values())
    assert held >= 100_000
    started = time.perf_counter()
    data = snapshot.dump(mesh)
    dumped = time.perf_counter()
    loaded = new_mesh(epoch="x", history_size=1000, direct_history=100)[0]
    snapshot.load(data, loaded)
    done = time.perf_counter()
    print(f"{held} held, {len(data) >> 20} MiB: dump {dumped - started:.3f} s, "
          f"load (checked) {done - dumped:.3f} s")
    assert snapshot.dump(loaded) == data
    assert loaded.rooms[LOBBY].members == mesh.rooms[LOBBY].members
