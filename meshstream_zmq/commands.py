"""Watcher commands as typed values: decoded once from protobuf, matched on in the core.

The processor turns each `pb.Command` into one of these (meshstream_zmq.wire
`decode_command`; a command that does not decode gets `bad-command` there), and
`Mesh.command` dispatches on its type. Field meanings are those of
proto/meshstream.proto and docs/watchers.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from .rooms import RoomView

if TYPE_CHECKING:
    from .meshstream_pb2 import ProcessorState


@dataclass(frozen=True, slots=True)
class CreateRoom:
    """A room that lives while empty, given to the watcher named `watcher` (default: the sender)."""

    room: str
    watcher: str = ""
    settings: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeleteRoom:
    room: str


@dataclass(frozen=True, slots=True)
class Join:
    client: str
    room: str
    request_id: bytes = b""  # the client's request id (JSON text): its client-joined-room carries it


@dataclass(frozen=True, slots=True)
class Remove:
    """Take `client`, or (`user` set) every client of that user in it, out of `room`."""

    client: str
    room: str
    user: str = ""


@dataclass(frozen=True, slots=True)
class SendRoom:
    """`frame` (client JSON, already encoded) to every member of `room` but `exclude`."""

    room: str
    frame: bytes
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SendClients:
    """`frame` to `clients`, or (`user` set) to every client of that user."""

    clients: tuple[str, ...]
    frame: bytes
    user: str = ""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close a client's connection (or, `user` set, every one of that user's); code 0 and
    an empty reason mean the defaults."""

    client: str
    code: int = 0
    reason: str = ""
    user: str = ""


class QueryWhat(Enum):
    ROOMS = "rooms"  # every room with its members
    ROOM = "room"  # one room (`room`)
    CLIENT_ROOMS = "client_rooms"  # the rooms of one client (`client`)
    ROOM_PAGE = "room_page"  # a page of rooms by name (`limit`, `after`), with their counts
    HISTORY = "history"  # a room's held messages after `since` (`limit`)


@dataclass(frozen=True, slots=True)
class Query:
    """`limit` 0: the default page (ROOM: every member); `since` None: from the oldest held."""

    what: QueryWhat
    room: str = ""
    client: str = ""
    limit: int = 0
    after: str = ""
    since: int | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Merge `settings` into a room's settings."""

    room: str
    settings: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a successful command's reply carries besides its rooms: a `send_room`'s
    position (`offset` in the room of `epoch`), the `clients` a command by user reached, a
    `HISTORY` page (`messages`, the next `since`, the room's `epoch`), a page of `rooms`
    (or of one room's members) with its `next` cursor ("": the last page)."""

    rooms: tuple[RoomView, ...] = ()
    offset: int = 0
    epoch: str = ""
    clients: tuple[str, ...] = ()
    messages: tuple[bytes, ...] = ()
    since: int | None = None
    next: str = ""

    def dump_into(self, msg: ProcessorState.Answer) -> None:
        """Into a snapshot (an idempotency key's remembered answer: meshstream_zmq/snapshot.py)."""
        for view in self.rooms:
            v = msg.rooms.add(name=view.name, maker=view.maker, count=view.count,
                              epoch=view.epoch, offset=view.offset)
            v.members.extend(view.members)
            v.setting_keys.extend(view.settings)
            v.setting_values.extend(view.settings.values())
            v.users.extend(view.users)
        msg.offset, msg.epoch, msg.next = self.offset, self.epoch, self.next
        msg.clients.extend(self.clients)
        msg.messages.extend(self.messages)
        if self.since is not None:
            msg.since = self.since

    @staticmethod
    def load_from(msg: ProcessorState.Answer) -> Answer:
        return Answer(
            rooms=tuple(RoomView(v.name, list(v.members), v.maker,
                                 dict(zip(v.setting_keys, v.setting_values, strict=True)),
                                 list(v.users), v.count, v.epoch, v.offset) for v in msg.rooms),
            offset=msg.offset, epoch=msg.epoch, clients=tuple(msg.clients),
            messages=tuple(msg.messages), since=msg.since if msg.HasField("since") else None,
            next=msg.next)


Command = (CreateRoom | DeleteRoom | Join | Remove | SendRoom | SendClients | Disconnect | Query
           | Settings)
