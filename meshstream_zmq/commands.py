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
    client: str
    room: str


@dataclass(frozen=True, slots=True)
class SendRoom:
    """`frame` (client JSON, already encoded) to every member of `room` but `exclude`."""

    room: str
    frame: bytes
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SendClients:
    clients: tuple[str, ...]
    frame: bytes


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close a client's connection; code 0 and an empty reason mean the defaults."""

    client: str
    code: int = 0
    reason: str = ""


class QueryWhat(Enum):
    ROOMS = "rooms"  # every room with its members
    ROOM = "room"  # one room (`room`)
    CLIENT_ROOMS = "client_rooms"  # the rooms of one client (`client`)


@dataclass(frozen=True, slots=True)
class Query:
    what: QueryWhat
    room: str = ""
    client: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    """Merge `settings` into a room's settings."""

    room: str
    settings: Mapping[str, str]


Command = (CreateRoom | DeleteRoom | Join | Remove | SendRoom | SendClients | Disconnect | Query
           | Settings)
