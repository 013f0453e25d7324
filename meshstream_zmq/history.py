"""Held messages: the core's history part, a port as centrifuge's Broker is.

Every room, and every client that was sent a direct message, has a `Stream`: the
messages it holds, oldest first, and the seq of the newest it no longer holds. The
`History` numbers each message: per stream an `offset` (1, 2, 3…: the position clients
see, with the stream's epoch), and one internal `seq` per processor epoch over all
streams, never shown to clients, that orders a replay merged from several streams and
marks when a client joined or went away. It holds each message (`append`), turns a
client's position into that seq (`after`), gives a stream's messages after a seq
(`since`: None when one of them is gone, so a resume is never a silent gap) and applies the bounds
(`trim(now)`): per stream a count, an age, and a byte budget over all streams of a
kind, the oldest held anywhere dropped first. Room streams and direct streams are two
`Pool`s of that one mechanism, with their own bounds (docs/protocol.md, History).

Another store (a replicated log) can stand behind the same calls: `Mesh` sees the
positions and frames, never the deques, but in a client's relay (the hot path), which
has `position` and `append` inlined.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from . import protocol

if TYPE_CHECKING:
    from .meshstream_pb2 import ProcessorState

# One held message: (seq, frame, the clients it was not for, when). A stream's offsets
# are implied: it holds consecutive ones, the newest being its `offset`. A direct message
# sent to several clients is one tuple per client (each copy has its recipient's offset).
Held = tuple[int, bytes, Sequence[str], float]
HELD_OVERHEAD = 150  # bytes a held message costs beyond its frame (tracemalloc: 407 B for a 258 B frame)


@dataclass(slots=True, eq=False)
class Stream:
    """One room's messages, or one client's direct messages."""

    key: str  # the room's name, or the client's ID
    positions: bytes = b""  # protocol.position_format(its epoch): % offset
    offset: int = 0  # of its last message
    held: deque[Held] | None = None  # None while it holds none (most clients: 600 B saved each)
    dropped: int = 0  # seq of the newest message no longer held (0: none)


class Pool:
    """Streams of one kind, bounded together: at most `size` messages per stream
    (0: none held), none held longer than `age` seconds, and all of them within
    `budget` bytes (each message's frame and HELD_OVERHEAD; a frame held for several
    clients counts once per client). Counting is all `hold` does: `trim` enforces."""

    def __init__(self, reason: str, size: int, age: float, budget: int) -> None:
        self.reason = reason  # the drops counter a message dropped for the budget goes to
        self.size = max(0, size)
        self.age = age
        self.budget = budget
        self.streams: dict[str, Stream] = {}  # never rebound (`Mesh.room_streams` is the rooms')
        self.holding: dict[str, Stream] = {}  # the streams whose `held` is not None
        self.frames = 0  # bytes of the frames held
        self.count = 0  # messages held (a ring that is full only swaps: count unchanged)

    @property
    def held(self) -> int:
        """Bytes held, by the budget's estimate."""
        return self.frames + HELD_OVERHEAD * self.count

    def open(self, key: str, positions: bytes = b"") -> Stream:
        stream = self.streams[key] = Stream(key, positions)
        return stream

    def close(self, key: str) -> None:
        """Forget the stream and what it holds (its room or client is gone)."""
        stream = self.streams.pop(key, None)
        if stream is not None and stream.held is not None:
            self.frames -= sum(len(h[1]) for h in stream.held)
            self.count -= len(stream.held)
            del self.holding[key]

    def hold(self, stream: Stream, message: Held) -> None:
        """Hold `message`, the stream's newest, within `size` (History.append has a copy
        of this, for room messages: the hot path)."""
        held = stream.held
        if held is None:
            if not self.size:
                stream.dropped = message[0]
                return
            held = stream.held = deque()
            self.holding[stream.key] = stream
        elif len(held) >= self.size:
            old = held.popleft()
            stream.dropped = old[0]
            self.frames += len(message[1]) - len(old[1])
            held.append(message)
            return
        held.append(message)
        self.frames += len(message[1])
        self.count += 1

    def after(self, key: str, offset: int) -> int | None:
        """The seq after which the stream's messages come after `offset` (a client's
        position): None if one of those is no longer held, or the stream never reached
        `offset` (not a position of ours)."""
        stream = self.streams.get(key)
        if stream is None:  # nothing was ever sent to it
            return 0 if offset == 0 else None
        held = stream.held or ()
        oldest = stream.offset - len(held) + 1  # offset of held[0] (newest + 1 when none)
        if offset > stream.offset or offset < oldest - 1:
            return None
        return held[offset - oldest][0] if offset >= oldest else stream.dropped

    def since(self, key: str, seq: int, client: str) -> list[tuple[int, bytes]] | None:
        """The (seq, frame) of the stream's messages after `seq` that were for `client`,
        oldest first; None if one after `seq` is no longer held."""
        stream = self.streams.get(key)
        if stream is None:
            return []
        if stream.dropped > seq:
            return None
        run: list[tuple[int, bytes]] = []
        for s, frame, exclude, _ in reversed(stream.held or ()):  # the newest are the missed
            if s <= seq:
                break
            if client not in exclude:
                run.append((s, frame))
        run.reverse()
        return run

    def trim(self, now: float) -> int:
        """Drop what is older than `age`, then the oldest held in any stream while over
        `budget`; how many were dropped for the budget."""
        oldest = now - self.age
        emptied: list[Stream] = []
        heads: list[tuple[int, str]] = []
        for key, stream in self.holding.items():
            held = stream.held
            assert held is not None
            while held and held[0][3] < oldest:
                self._drop(stream, held)
            if held:
                heads.append((held[0][0], key))
            else:
                emptied.append(stream)
        dropped = 0
        if self.held > self.budget:
            heapq.heapify(heads)
            while self.frames + HELD_OVERHEAD * self.count > self.budget and heads:
                _, key = heapq.heappop(heads)
                stream = self.holding[key]
                held = stream.held
                assert held is not None
                self._drop(stream, held)
                dropped += 1
                if held:
                    heapq.heappush(heads, (held[0][0], key))
                else:
                    emptied.append(stream)
        for stream in emptied:  # a stream holding none costs no deque
            stream.held = None
            del self.holding[stream.key]
        return dropped

    def _drop(self, stream: Stream, held: deque[Held]) -> None:
        seq, frame, _, _ = held.popleft()
        stream.dropped = seq
        self.frames -= len(frame)
        self.count -= 1

    def check(self, seq: int) -> None:
        """Assert the pool's invariants; `seq`: the last number given."""
        frames = count = 0
        for key, stream in self.streams.items():
            assert stream.key == key
            held = stream.held
            assert (held is not None) == (key in self.holding), key
            assert held is None or held, key  # an emptied one is let go
            seqs = [h[0] for h in held or ()]
            assert len(seqs) <= self.size and len(seqs) <= stream.offset, key
            assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), (key, seqs)
            assert not seqs or stream.dropped < seqs[0] and seqs[-1] <= seq, key
            assert stream.dropped <= seq, key
            frames += sum(len(h[1]) for h in held or ())
            count += len(held or ())
        assert all(self.streams.get(k) is s for k, s in self.holding.items())
        assert (frames, count) == (self.frames, self.count), (self.reason, frames, count)

    def snapshot(self) -> dict[str, Any]:
        return {"size": self.size, "age": self.age, "budget": self.budget, "frames": self.frames,
                "count": self.count,
                "streams": [{"key": s.key, "positions": s.positions, "offset": s.offset,
                             "dropped": s.dropped,
                             "held": None if s.held is None else [
                                 [seq, frame, list(exclude), when]
                                 for seq, frame, exclude, when in s.held]}
                            for s in self.streams.values()]}

    def dump_into(self, msg: ProcessorState.Pool) -> None:
        """The streams into a snapshot (meshstream_zmq/snapshot.py), their messages column
        by column; the bounds are configuration, the byte counts derived: not written."""
        for s in self.streams.values():
            m = msg.streams.add(key=s.key, offset=s.offset, dropped=s.dropped)
            if s.held:
                seqs, frames, excludes, times = zip(*s.held, strict=True)
                m.seqs.extend(seqs)
                m.frames.extend(frames)
                m.times.extend(times)
                for i, exclude in enumerate(excludes):
                    if exclude:
                        m.excluding.append(i)
                        m.excluded_counts.append(len(exclude))
                        m.excluded.extend(exclude)
        msg.holding.extend(self.holding)

    def load_from(self, msg: ProcessorState.Pool, positions: Callable[[str], bytes]) -> None:
        """The streams of a snapshot, in place of these (`streams` is not rebound);
        `positions(key)`: a stream's position format. Under a smaller `size` than the
        snapshot's the oldest held go, as the ring would have dropped them."""
        self.streams.clear()
        self.holding.clear()
        for m in msg.streams:
            stream = self.streams[m.key] = Stream(m.key, positions(m.key), m.offset, None, m.dropped)
            if not m.seqs:
                continue
            excludes: list[Sequence[str]] = [()] * len(m.seqs)
            names = iter(m.excluded)
            for i, n in zip(m.excluding, m.excluded_counts, strict=True):
                excludes[i] = tuple(islice(names, n))
            held = deque(zip(m.seqs, m.frames, excludes, m.times, strict=True))
            while len(held) > self.size:
                stream.dropped = held.popleft()[0]
            stream.held = held or None
        for key in msg.holding:
            stream = self.streams[key]
            if stream.held is not None:
                self.holding[key] = stream
        self.frames = sum(len(h[1]) for s in self.holding.values() for h in s.held or ())
        self.count = sum(len(s.held or ()) for s in self.holding.values())


class History:
    """Room messages and direct messages, numbered and held. A room's stream is opened
    with the room and closed with it; a client's on its first direct message, and
    closed when the client is gone."""

    def __init__(self, epoch: str, *, history_size: int = 1000, history_age: float = 300.0,
                 history_bytes: int = 128 << 20, direct_history: int = 100,
                 direct_history_age: float = 300.0, direct_history_bytes: int = 32 << 20) -> None:
        self.seq = 0  # of the last room or direct message: one sequence per processor epoch
        self.rooms = Pool("history", history_size, history_age, history_bytes)
        self.direct = Pool("direct-history", direct_history, direct_history_age,
                           direct_history_bytes)
        self.direct_positions = protocol.position_format(epoch)  # every client's direct stream's
        # Held messages dropped to fit a budget, by pool ("history": --history-bytes,
        # "direct-history": --direct-history-bytes), since they were last taken.
        self.drops: Counter[str] = Counter()

    # ------------------------------------------------------------ rooms

    def open(self, room: str, epoch: str) -> Stream:
        """A new room's stream (offsets from 1, in the room's `epoch`)."""
        return self.rooms.open(room, protocol.position_format(epoch))

    def close(self, room: str) -> None:
        self.rooms.close(room)

    def position(self, stream: Stream) -> bytes:
        """The position fields the room stream's next message will have (`append` gives
        it them): built into its frame, once for all copies."""
        return stream.positions % (stream.offset + 1)

    def append(self, stream: Stream, frame: bytes, exclude: Sequence[str], now: float) -> int:
        """Hold a room message (built with `position(stream)`), but for `exclude`: its seq.
        (Mesh.client_frame has a copy of this and `position`, for relays: the hot path.)"""
        seq = self.seq = self.seq + 1
        stream.offset += 1
        # Pool.hold, inlined (every room message comes here)
        pool = self.rooms
        held = stream.held
        if held is None:
            if not pool.size:
                stream.dropped = seq
                return seq
            held = stream.held = deque()
            pool.holding[stream.key] = stream
        elif len(held) >= pool.size:  # full: the oldest makes way
            old = held.popleft()
            stream.dropped = old[0]
            pool.frames += len(frame) - len(old[1])
            held.append((seq, frame, exclude, now))
            return seq
        held.append((seq, frame, exclude, now))
        pool.frames += len(frame)
        pool.count += 1
        return seq

    def bounds(self, room: str) -> tuple[int, int]:
        """The offsets of the room's oldest message held (its newest + 1 when none) and
        of its newest."""
        stream = self.rooms.streams[room]
        return stream.offset - len(stream.held or ()) + 1, stream.offset

    def page(self, room: str, since: int, limit: int, client: str) -> tuple[list[bytes], int | None]:
        """Up to `limit` of the room's held messages after offset `since` (those `client`
        was excluded from left out, but counted), and the offset to ask from next (None:
        no more)."""
        stream = self.rooms.streams[room]
        held: Sequence[Held] = stream.held or ()
        oldest = stream.offset - len(held) + 1  # offset of held[0]
        frames: list[bytes] = []
        last = since
        start = min(max(since - oldest + 1, 0), len(held))
        for offset, (_, frame, exclude, _) in enumerate(islice(held, start, None), oldest + start):
            if len(frames) == limit:
                break
            last = offset
            if client not in exclude:
                frames.append(frame)
        return frames, (last if last < stream.offset else None)

    # ------------------------------------------------------------ direct messages

    def append_direct(self, clients: Iterable[str], frame: bytes, now: float) -> list[tuple[str, bytes]]:
        """Hold a direct message (`frame` without its position) for each of `clients`: each
        copy, numbered in its recipient's stream, as (client, frame)."""
        seq = self.seq = self.seq + 1
        pool = self.direct
        streams = pool.streams
        head = frame[:-1]  # protocol.stamp, inlined
        copies = []
        for client in clients:
            stream = streams.get(client) or pool.open(client, self.direct_positions)
            stream.offset += 1
            copy = b"".join((head, stream.positions % stream.offset, b"}"))
            pool.hold(stream, (seq, copy, (), now))
            copies.append((client, copy))
        return copies

    def forget(self, client: str) -> None:
        """The client is gone: its direct messages go."""
        self.direct.close(client)

    # ------------------------------------------------------------ both

    def replay(self, client: str, rooms: Iterable[tuple[str, int]], start: int) -> list[bytes] | None:
        """The frames for `client`, in seq order (as they were sent): its direct messages
        after seq `start` and, in each of `rooms`, (room, seq after which its messages are
        the client's), the messages it was not excluded from. None if one is no longer
        held."""
        runs: list[list[tuple[int, bytes]]] = []
        for room, since in rooms:
            run = self.rooms.since(room, since, client)
            if run is None:
                return None
            if run:
                runs.append(run)
        run = self.direct.since(client, start, client)
        if run is None:
            return None
        if run:
            runs.append(run)
        return [frame for _, frame in heapq.merge(*runs)]

    def trim(self, now: float) -> None:
        """Apply the age and byte bounds of both pools (at each heartbeat)."""
        for pool in (self.rooms, self.direct):
            if pool.holding:
                dropped = pool.trim(now)
                if dropped:
                    self.drops[pool.reason] += dropped

    def take_drops(self) -> Counter[str]:
        """The held messages dropped to fit a budget since the last call, by reason."""
        drops, self.drops = self.drops, Counter()
        return drops

    def check(self) -> None:
        self.rooms.check(self.seq)
        self.direct.check(self.seq)
        for stream in self.direct.streams.values():
            assert all(not exclude for _, _, exclude, _ in stream.held or ()), stream.key
            assert stream.positions == self.direct_positions, stream.key

    def snapshot(self) -> dict[str, Any]:
        return {"seq": self.seq, "direct_positions": self.direct_positions,
                "rooms": self.rooms.snapshot(), "direct": self.direct.snapshot(),
                "drops": dict(self.drops)}

    def dump_into(self, msg: ProcessorState.History) -> None:
        msg.seq = self.seq
        self.rooms.dump_into(msg.rooms)
        self.direct.dump_into(msg.direct)
        msg.drop_reasons.extend(self.drops)
        msg.drop_counts.extend(self.drops.values())

    def load_from(self, msg: ProcessorState.History, epoch: str, rooms: Mapping[str, str]) -> None:
        """The state of a snapshot in place of this one's; `epoch`: the processor's,
        `rooms`: each room's epoch (their streams' position formats are made from them)."""
        self.seq = msg.seq
        self.direct_positions = protocol.position_format(epoch)
        self.rooms.load_from(msg.rooms, lambda room: protocol.position_format(rooms[room]))
        self.direct.load_from(msg.direct, lambda _: self.direct_positions)
        self.drops = Counter(dict(zip(msg.drop_reasons, msg.drop_counts, strict=True)))
