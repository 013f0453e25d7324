"""Which watcher owns which room: the core's claims part.

A watcher claims exact room names and name prefixes in its hello, and is given the
rooms a `create_room` made for it (`assigned`). The owner of a room is looked up for
every client frame, so it is cached (cleared whenever a claim changes). Each watcher's
client frames forwarded and not yet acknowledged are here too: they are answered
`watcher-restarted` if the watcher goes. It keeps; `Mesh` decides and answers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .rooms import MAX_ROOM_NAME

if TYPE_CHECKING:
    from .meshstream_pb2 import ProcessorState

OWNERS_KEPT = 65536  # rooms in the owner cache: targets are client-chosen, so it is bounded

# A client frame forwarded to a watcher: (its seq for that watcher, client, action,
# target, request id).
Unacked = tuple[int, str, str, str, bytes]


@dataclass(slots=True, eq=False)
class WatcherEntry:
    """What the mesh knows of one watcher process: its claims, liveness and the client
    frames forwarded to it but not yet acknowledged."""

    id: str
    name: str
    rooms: frozenset[str]
    prefixes: tuple[str, ...]
    last_seen: float
    alive: bool = True
    assigned: set[str] = field(default_factory=set)  # rooms given to it by create_room
    sent: int = 0  # sequence number of the last client frame forwarded to it
    unacked: deque[Unacked] = field(default_factory=deque)

    def claims(self, room: str) -> bool:
        return room in self.rooms or room in self.assigned or room.startswith(self.prefixes)


class Claims:
    """The watchers and their claims. `watchers` is never rebound (`Mesh` shares it)."""

    def __init__(self) -> None:
        self.watchers: dict[str, WatcherEntry] = {}
        self.owners: dict[str, WatcherEntry | None] = {}  # room -> owner, cleared on claim changes

    # ------------------------------------------------------------ owners

    def owner(self, room: str) -> WatcherEntry | None:
        """The watcher claiming `room` (cached: asked for every client frame)."""
        try:
            return self.owners[room]
        except KeyError:
            pass
        if len(self.owners) >= OWNERS_KEPT:
            self.owners.clear()
        owner = self.owners[room] = self._find(room)
        return owner

    def owner_id(self, room: str) -> str:
        """The ID of the live watcher owning `room`; "" if none (or it is gone)."""
        owner = self.owner(room)
        return owner.id if owner is not None and owner.alive else ""

    def _find(self, room: str) -> WatcherEntry | None:
        """An exact claim first, then the longest prefix; a live watcher before a dead one
        with the same claim. Dead claims still count: the room stays its watcher's
        (answering watcher-unavailable) until replaced."""
        best: WatcherEntry | None = None
        best_rank = (-1, False)
        for watcher in self.watchers.values():
            if room in watcher.rooms or room in watcher.assigned:
                length = MAX_ROOM_NAME + 1
            else:
                length = max((len(p) for p in watcher.prefixes if room.startswith(p)), default=-1)
            rank = (length, watcher.alive)
            if length >= 0 and rank > best_rank:
                best, best_rank = watcher, rank
        return best

    # ------------------------------------------------------------ watchers

    def conflict(self, watcher: str, name: str, rooms: frozenset[str],
                 prefixes: Sequence[str]) -> WatcherEntry | None:
        """Another live watcher already claiming one of `rooms` or `prefixes`, if any."""
        for other in self.watchers.values():
            if other.id == watcher or other.name == name or not other.alive:
                continue
            if rooms & (other.rooms | other.assigned) or set(prefixes) & set(other.prefixes):
                return other
        return None

    def register(self, watcher: str, name: str, rooms: Sequence[str], prefixes: Sequence[str],
                 now: float, assigned_rooms: Sequence[str],
                 existing: Container[str]) -> tuple[WatcherEntry, list[Unacked]]:
        """The watcher (no `conflict`) with its claims; and the frames never confirmed by
        the entry it replaces (its own restart: same ID or name), to be answered.

        A restart takes over the old entry's assigned rooms (those still `existing`);
        so does the new claimant of a dead watcher's claims. `assigned_rooms` (a
        `create_room` of an earlier processor gave them) are claimed as assigned ones."""
        claimed = frozenset(rooms) | frozenset(assigned_rooms)
        assigned: set[str] = set()
        unconfirmed: list[Unacked] = []
        for other in list(self.watchers.values()):
            if other.id == watcher or other.name == name:
                assigned |= other.assigned
                unconfirmed.extend(other.unacked)
                del self.watchers[other.id]
            elif not other.alive and (claimed & other.rooms or set(prefixes) & set(other.prefixes)):
                assigned |= other.assigned
                del self.watchers[other.id]
        self.owners.clear()
        w = self.watchers[watcher] = WatcherEntry(
            watcher, name, frozenset(rooms), tuple(prefixes), now,
            assigned={r for r in assigned if r in existing} | set(assigned_rooms))
        return w, unconfirmed

    def seen(self, watcher: str, now: float, acked: int | None) -> bool:
        """A sign of life (False: not a live watcher); `acked`: the last frame it handled."""
        w = self.watchers.get(watcher)
        if w is None or not w.alive:
            return False
        w.last_seen = now
        if acked is not None:
            self.acked(w, acked)
        return True

    @staticmethod
    def acked(w: WatcherEntry, acked: int) -> None:
        unacked = w.unacked
        while unacked and unacked[0][0] <= acked:
            unacked.popleft()

    def gone(self, watcher: str) -> list[Unacked]:
        """The watcher is gone (it keeps its claims, marked dead, until replaced): the
        frames it never confirmed, to be answered (once)."""
        w = self.watchers.get(watcher)
        if w is None:
            return []
        w.alive = False
        self.owners.clear()
        unconfirmed = list(w.unacked)
        w.unacked.clear()
        return unconfirmed

    def silent(self, now: float, timeout: float) -> list[str]:
        """The live watchers not heard from for more than `timeout` seconds."""
        return [w.id for w in self.watchers.values() if w.alive and now - w.last_seen > timeout]

    def named(self, name: str) -> WatcherEntry | None:
        return next((w for w in self.watchers.values() if w.name == name), None)

    @staticmethod
    def forwarded(w: WatcherEntry, client: str, action: str, target: str,
                  request_id: bytes) -> None:
        """A client frame went to `w` as its number `w.sent + 1`."""
        w.sent += 1
        w.unacked.append((w.sent, client, action, target, request_id))

    def assign(self, w: WatcherEntry, room: str) -> None:
        """`room` is `w`'s (a create_room gave it)."""
        w.assigned.add(room)
        self.owners.clear()

    def room_deleted(self, room: str) -> None:
        """A deleted room is no one's any more: a room made again under its name is
        claimed as any room is."""
        for w in self.watchers.values():
            w.assigned.discard(room)
        self.owners.clear()

    def check(self) -> None:
        names = [w.name for w in self.watchers.values()]
        assert len(set(names)) == len(names), names  # a restart replaces its entry
        for key, w in self.watchers.items():
            assert w.id == key and w.name
            seqs = [u[0] for u in w.unacked]
            assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), (key, seqs)
            assert not seqs or seqs[-1] <= w.sent, key
            assert w.alive or not w.unacked, key  # a gone one's were answered
        for room, owner in self.owners.items():
            assert owner is self._find(room), room
            assert owner is None or self.watchers.get(owner.id) is owner, room
        assert len(self.owners) <= OWNERS_KEPT

    def snapshot(self) -> dict[str, Any]:
        return {
            "watchers": [{"id": w.id, "name": w.name, "rooms": sorted(w.rooms),
                          "prefixes": list(w.prefixes), "last_seen": w.last_seen, "alive": w.alive,
                          "assigned": sorted(w.assigned), "sent": w.sent,
                          "unacked": [list(u) for u in w.unacked]}
                         for w in self.watchers.values()],
            "owners": {room: None if o is None else o.id for room, o in self.owners.items()},
        }

    def dump_into(self, msg: ProcessorState.Claims) -> None:
        """The state into a snapshot (meshstream_zmq/snapshot.py), in its own order."""
        index = {}
        for i, w in enumerate(self.watchers.values()):
            index[w.id] = i
            m = msg.watchers.add(id=w.id, name=w.name, last_seen=w.last_seen, alive=w.alive,
                                 sent=w.sent)
            m.rooms.extend(sorted(w.rooms))
            m.prefixes.extend(w.prefixes)
            m.assigned.extend(sorted(w.assigned))
            if w.unacked:
                seqs, clients, actions, targets, request_ids = zip(*w.unacked, strict=True)
                m.unacked_seqs.extend(seqs)
                m.unacked_clients.extend(clients)
                m.unacked_actions.extend(actions)
                m.unacked_targets.extend(targets)
                m.unacked_request_ids.extend(request_ids)
        msg.owner_rooms.extend(self.owners)
        msg.owners.extend(-1 if o is None else index[o.id] for o in self.owners.values())

    def load_from(self, msg: ProcessorState.Claims) -> None:
        """The state of a snapshot, in place of this one's (`watchers` is not rebound)."""
        self.watchers.clear()
        self.owners.clear()
        entries = []
        for m in msg.watchers:
            w = self.watchers[m.id] = WatcherEntry(
                m.id, m.name, frozenset(m.rooms), tuple(m.prefixes), m.last_seen, m.alive,
                set(m.assigned), m.sent, deque(zip(m.unacked_seqs, m.unacked_clients,
                                                   m.unacked_actions, m.unacked_targets,
                                                   m.unacked_request_ids, strict=True)))
            entries.append(w)
        for room, i in zip(msg.owner_rooms, msg.owners, strict=True):
            if i < -1:
                raise ValueError(f"owner index {i}")
            self.owners[room] = None if i == -1 else entries[i]
