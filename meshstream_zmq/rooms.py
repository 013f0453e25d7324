"""Rooms and their members: the core's membership part (centrifuge's presence).

A `Room` lists its members in join order, each with the processor's seq when it
joined (a resume replays it no earlier message), and counts its present members per
gateway (a room message goes once to each gateway counted). `Rooms` makes and deletes
rooms, numbering each one's incarnation into its epoch. It keeps; `Mesh` decides (the
client's own list of rooms is on its `ClientEntry`, kept in step by `Mesh`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import LOBBY, protocol

if TYPE_CHECKING:
    from .meshstream_pb2 import ProcessorState

MAX_ROOM_NAME = 64
PRIVATE_PREFIX = "private-"  # Pusher's convention: joined with a room token (or by its watcher)


def valid_room_name(name: object) -> bool:
    """1 to 64 characters, none of them a control or bidi formatting character."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_ROOM_NAME
            and not protocol.has_forbidden_chars(name))


@dataclass(slots=True)
class RoomView:
    """A read-only copy of a room, for queries and watcher snapshots."""

    name: str
    members: list[str]
    maker: str
    settings: dict[str, str]
    # filled by the queries that ask for them (the server API's): the members' users (in
    # the order of `members`), the number of members in all, the epoch and newest offset
    users: list[str] = field(default_factory=list)
    count: int = 0
    epoch: str = ""
    offset: int = 0


@dataclass(slots=True, eq=False)
class Room:
    name: str
    # ordered set of client IDs, each with the processor's seq when it joined: the room
    # messages after that are its own (a resume replays no earlier one)
    members: dict[str, int] = field(default_factory=dict)
    gateways: Counter[str] = field(default_factory=Counter)  # present members per gateway
    maker: str = ""  # its first member still in it ("" for a watcher's room)
    settings: dict[str, str] = field(default_factory=dict)
    keep: bool = False  # created by a watcher: lives on while empty
    epoch: str = ""  # "<processor epoch>.<incarnation>": its history restarts with a new one

    def view(self) -> RoomView:
        return RoomView(self.name, list(self.members), self.maker, dict(self.settings))


class Rooms:
    """Every room, the lobby included. `rooms` is never rebound (`Mesh.rooms` is it)."""

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch  # the processor's
        self.rooms: dict[str, Room] = {}
        self.incarnations = 0  # rooms made so far: each room's epoch has its number

    def create(self, name: str, *, maker: str = "", keep: bool = False,
               settings: dict[str, str] | None = None) -> Room:
        self.incarnations += 1
        room = self.rooms[name] = Room(name, maker=maker, keep=keep, settings=settings or {},
                                       epoch=f"{self.epoch}.{self.incarnations}")
        return room

    def delete(self, name: str) -> bool:
        """Forget the room (its members have left); False if it was gone already."""
        return self.rooms.pop(name, None) is not None

    @staticmethod
    def add(room: Room, client: str, gateway: str, mark: int) -> None:
        """`client` joins at seq `mark`; `gateway` empty: it is away (counted on none)."""
        room.members[client] = mark
        if gateway:
            room.gateways[gateway] += 1

    @staticmethod
    def remove(room: Room, client: str, gateway: str) -> None:
        """`client` (on `gateway`, or away) leaves; its maker role passes to the next."""
        del room.members[client]
        if gateway:
            _uncount(room.gateways, gateway)
        if room.maker == client:
            room.maker = next(iter(room.members), "")

    def attach(self, names: Iterable[str], gateway: str) -> None:
        """A member of `names` is on `gateway` again (it resumed)."""
        rooms = self.rooms
        for name in names:
            rooms[name].gateways[gateway] += 1

    def detach(self, names: Iterable[str], gateway: str) -> None:
        """A member of `names` is off `gateway` (away, or moving): no longer counted."""
        rooms = self.rooms
        for name in names:
            _uncount(rooms[name].gateways, gateway)

    def configure(self, name: str, settings: Mapping[str, str]) -> None:
        self.rooms[name].settings.update(settings)

    def check(self) -> None:
        """Assert what holds of rooms alone (with their members see `Mesh.check`)."""
        assert LOBBY in self.rooms and self.rooms[LOBBY].keep
        epochs = set()
        for name, room in self.rooms.items():
            assert room.name == name and valid_room_name(name), name
            assert room.members or room.keep, f"empty room {name} was kept"
            assert room.maker in room.members or room.maker == "", (name, room.maker)
            assert all(n > 0 for n in room.gateways.values()), (name, room.gateways)
            assert sum(room.gateways.values()) <= len(room.members), name
            processor, _, n = room.epoch.partition(".")
            assert processor == self.epoch and 0 < int(n) <= self.incarnations, room.epoch
            epochs.add(room.epoch)
        assert len(epochs) == len(self.rooms), "a room epoch names one incarnation"

    def snapshot(self) -> dict[str, Any]:
        """Plain data, in the order the state holds it."""
        return {"epoch": self.epoch, "incarnations": self.incarnations, "rooms": [
            {"name": r.name, "members": [[c, mark] for c, mark in r.members.items()],
             "gateways": dict(r.gateways), "maker": r.maker, "settings": dict(r.settings),
             "keep": r.keep, "epoch": r.epoch}
            for r in self.rooms.values()]}

    def dump_into(self, msg: ProcessorState.Rooms) -> None:
        """The state into a snapshot (meshstream_zmq/snapshot.py), in its own order."""
        msg.incarnations = self.incarnations
        for r in self.rooms.values():
            m = msg.rooms.add(name=r.name, maker=r.maker, keep=r.keep, epoch=r.epoch)
            m.members.extend(r.members)
            m.marks.extend(r.members.values())
            m.gateways.extend(r.gateways)
            m.counts.extend(r.gateways.values())
            m.setting_keys.extend(r.settings)
            m.setting_values.extend(r.settings.values())

    def load_from(self, msg: ProcessorState.Rooms, epoch: str) -> None:
        """The state of a snapshot, in place of this one's (`rooms` is not rebound)."""
        self.epoch = epoch
        self.incarnations = msg.incarnations
        self.rooms.clear()
        for m in msg.rooms:
            self.rooms[m.name] = Room(
                m.name, dict(zip(m.members, m.marks, strict=True)),
                Counter(dict(zip(m.gateways, m.counts, strict=True))), m.maker,
                dict(zip(m.setting_keys, m.setting_values, strict=True)), m.keep, m.epoch)


def _uncount(counts: Counter[str], gateway: str) -> None:
    counts[gateway] -= 1
    if counts[gateway] <= 0:
        del counts[gateway]
