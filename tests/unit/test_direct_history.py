"""Held direct messages are bounded like room history (docs/protocol.md, "History";
docs/security.md, Limits): per client by `--direct-history`, for everyone by age
(`--direct-history-age`, connected recipients' too) and by one processor-wide budget
(`--direct-history-bytes`), trimmed at each expire (every heartbeat), the oldest held for
anyone first, each drop counted; a resume that needed a dropped one is `history-lost`.
"""

from __future__ import annotations

import hashlib
import time
import tracemalloc
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path

from prometheus_client import REGISTRY

from meshstream_zmq import protocol
from meshstream_zmq.commands import SendClients
from meshstream_zmq.config import Config
from meshstream_zmq.core import HELD_OVERHEAD, Delivery, EventKind, Mesh, RoomView
from meshstream_zmq.errors import ErrorCode
from meshstream_zmq.history import Held
from services.processor import Processor

from .outbox import RecordingOutbox, new_mesh, send

EPOCH = "e1"
A, B, C = "g1.1", "g2.1", "g2.2"


def h(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def connect(mesh: Mesh, *clients: str) -> None:
    for client in clients:
        mesh.client_connected(client, 0.0, session_hash=h(f"s-{client}"))


def held_for(mesh: Mesh, client: str) -> deque[Held] | None:
    """The direct messages held for `client` (None: none)."""
    stream = mesh.history.direct.streams.get(client)
    return None if stream is None else stream.held


def whisper(mesh: Mesh, sender: str, to: str, n: int, size: int = 100) -> None:
    send(mesh, sender, "whisper", to, {"n": n, "pad": "x" * size}, to_client=True)


def resumed_reason(mesh: Mesh, out: RecordingOutbox, client: str, offset: int) -> str:
    """How a resume of `client` having had its direct messages up to `offset` is answered."""
    out.clear()
    mesh.resume("g3", "L", h(f"s-{client}"), h(f"new-{client}"), "", {EPOCH: offset}, mesh.now)
    (call,) = out.of("resumed")
    return str(call[4]) or "resumed"


def test_the_budget_keeps_the_newest_held_for_anyone_and_counts_each_drop() -> None:
    mesh, out = new_mesh(epoch=EPOCH, resume_window=60.0,
                         direct_history_bytes=3 * (HELD_OVERHEAD + 300))
    connect(mesh, A, B, C)
    mesh.client_away(B, 0.0, "g2")
    for n in range(6):
        whisper(mesh, A, (B, C)[n % 2], n)
    assert mesh.history.direct.held > mesh.history.direct.budget  # counted as they come ...
    mesh.expire(1.0)
    assert 0 < mesh.history.direct.held <= mesh.history.direct.budget  # ... trimmed at the beat
    held = sorted(d[0] for c in (B, C) for d in held_for(mesh, c) or ())
    assert held == list(range(mesh.seq - len(held) + 1, mesh.seq + 1))  # the newest, anyone's
    assert mesh.take_drops() == {"direct-history": 6 - len(held)}
    assert mesh.take_drops() == {}  # taken once
    assert resumed_reason(mesh, out, B, 0) == ErrorCode.HISTORY_LOST.value  # never a silent gap
    mesh.check()


def test_held_direct_messages_age_out_connected_recipients_too() -> None:
    mesh, out = new_mesh(epoch=EPOCH, resume_window=600.0, direct_history_age=10.0)
    connect(mesh, A, B, C)
    mesh.client_away(C, 0.0, "g2")
    whisper(mesh, A, B, 1)  # B is connected and got it: its copy is held only for a resume
    whisper(mesh, A, C, 2)
    mesh.gateway_seen("g1", 8.0)
    whisper(mesh, A, B, 3)
    for gateway in ("g1", "g2"):
        mesh.gateway_seen(gateway, 12.0)
    mesh.expire(12.0)
    assert [d[0] for d in held_for(mesh, B) or ()] == [3]
    assert held_for(mesh, C) is None  # nothing left: the deque goes too
    assert mesh.history.direct.held == len(held_for(mesh, B)[0][1]) + HELD_OVERHEAD  # type: ignore[index]
    assert mesh.take_drops() == {}  # age is housekeeping, not a budget drop
    assert resumed_reason(mesh, out, C, 0) == ErrorCode.HISTORY_LOST.value
    mesh.check()


def test_a_client_that_leaves_gives_its_held_bytes_back() -> None:
    mesh, out = new_mesh(epoch=EPOCH)
    connect(mesh, A, B)
    whisper(mesh, A, B, 1)
    mesh.watcher_hello("w", "bot", [], ["w-"], 0.0)
    mesh.command("w", 1, SendClients((A, B), protocol.encode("s", "", b"{}")))  # one copy each
    assert set(mesh.history.direct.holding) == {A, B}
    mesh.client_disconnected(B)
    mesh.client_disconnected(A)
    assert mesh.history.direct.held == 0 and not mesh.history.direct.holding
    mesh.check()


def test_without_direct_history_nothing_is_held_and_a_resume_after_one_is_history_lost() -> None:
    mesh, out = new_mesh(epoch=EPOCH, resume_window=60.0, direct_history=0)
    connect(mesh, A, B)
    mesh.client_away(B, 0.0, "g2")
    whisper(mesh, A, B, 1)
    assert held_for(mesh, B) is None and mesh.history.direct.held == 0
    assert resumed_reason(mesh, out, B, 0) == ErrorCode.HISTORY_LOST.value
    mesh.check()


class Discard:
    """An Outbox that keeps nothing (the memory test measures the core alone)."""

    def deliver(self, gateway: str, frame: bytes, clients: Sequence[str] = (), room: str = "",
                exclude: Sequence[str] = ()) -> None:
        pass

    def broadcast(self, gateways: Iterable[str], room: str, frame: bytes,
                  exclude: Sequence[str] = ()) -> None:
        pass

    def membership(self, gateway: str, client: str, room: str, joined: bool) -> None:
        pass

    def close(self, gateway: str, client: str, code: int, reason: str) -> None:
        pass

    def event(self, seq: int, kind: EventKind, client: str, room: str, watcher: str,
              user: str = "") -> None:
        pass

    def to_watcher(self, watcher: str, seq: int, client: str, action: str, target: str,
                   body: bytes, is_target_client: bool, request_id: bytes,
                   user: str = "") -> Delivery:
        return Delivery.SENT

    def reply(self, watcher: str, command: int, error: ErrorCode | None = None, detail: str = "",
              rooms: Sequence[RoomView] = (), answer: object = None) -> None:
        pass

    def welcome(self, watcher: str, rooms: Sequence[RoomView]) -> None:
        pass

    def resumed(self, gateway: str, link: str, client: str = "", reason: str = "",
                rooms: Sequence[str] = (), replay: Sequence[bytes] = (), epoch: str = "") -> None:
        pass


def test_400_clients_sending_100_direct_messages_of_30_kb_stay_within_the_budget() -> None:
    """Issue 20, item 4: 400 clients each send 100 direct messages of 30 KB (200 recipients
    away, 200 connected): 1.2 GB sent. Before, all of it stayed held (the processor grew
    by 1.2 GB); now what is held, by the core's own count and as tracemalloc measures it,
    stays within --direct-history-bytes plus what arrives between two heartbeats."""
    budget = 8 << 20  # the default is 32 MiB: a smaller one keeps the test quick
    mesh = Mesh(Discard(), epoch=EPOCH, resume_window=600.0, direct_history_bytes=budget)
    clients = [f"g{1 + i % 2}.{i}" for i in range(400)]
    for client in clients:
        mesh.client_connected(client, 0.0, session_hash=h(client))
    for client in clients[:200]:
        mesh.client_away(client, 0.0)
    body = protocol.encode_body({"text": "x" * 30_000})
    per_beat = 200  # direct messages between two heartbeats (0.5 s): 6 MB
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        sent = 0
        now = 0.0
        for round_ in range(100):
            for i, client in enumerate(clients):
                mesh.client_frame(client, "whisper", clients[(i + round_ + 1) % 400], body, True)
                sent += 1
                if sent % per_beat == 0:
                    now += 0.5
                    for gateway in ("g1", "g2"):
                        mesh.gateway_seen(gateway, now)
                    mesh.expire(now)
                    assert mesh.history.direct.held <= budget
        traced, peak = (m - base for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert sent == 40_000
    # A held message costs what the estimate says or less (HELD_OVERHEAD is generous): the
    # memory after a beat is the budget (and the clients' own state); at most one beat's
    # messages more before it.
    slack = 1 << 20
    assert traced <= budget + slack, traced
    assert peak <= budget + per_beat * len(body) + slack, peak
    assert mesh.take_drops()["direct-history"] > 35_000  # for drops{reason="direct-history"}
    mesh.check()


def test_the_processor_exports_budget_drops_at_each_beat(tmp_path: Path) -> None:
    """drops{reason="direct-history"} (and "history") on the processor's metrics."""
    processor = Processor(Config(run_dir=str(tmp_path / "run"), metrics_port=0))
    try:
        def exported(reason: str) -> float:
            return REGISTRY.get_sample_value("meshstream_drops_total", {"reason": reason}) or 0.0

        before = exported("direct-history"), exported("history")
        processor.mesh.history.drops.update({"direct-history": 3, "history": 2})
        processor.beat(time.monotonic())
        assert (exported("direct-history"), exported("history")) == (before[0] + 3, before[1] + 2)
        processor.beat(time.monotonic())  # taken once
        assert exported("direct-history") == before[0] + 3
    finally:
        processor.close()
