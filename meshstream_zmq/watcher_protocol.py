"""The watcher's end of the watcher protocol (docs/watchers.md), without sockets.

The values handlers see (`Message`, `Event`, `RoomState`), a command's failure
(`CommandError`), what goes on the wire (`hello`, `heartbeat`, `goodbye`, `command` and one
`Op` per command), and what comes off it (`decode`), apart from the sockets and tasks of
the SDK around it (`meshstream_zmq.aio`): the frame layout can be tested without either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import meshstream_pb2 as pb
from . import protocol
from .core import EventKind
from .errors import CloseCode, ErrorCode

T = TypeVar("T")
TIMEOUT = "timeout"  # the code of a CommandError for a reply that never came
TOPIC = b"watcher"  # frame 1 of everything a watcher sends


@dataclass(slots=True)
class Message:
    """A client frame addressed to one of this watcher's rooms."""

    client: str
    action: str
    room: str
    body: dict[str, Any]
    request_id: bytes = b""
    is_target_client: bool = False
    user: str = ""  # the sender's user: its token's `sub` (the gateway verified it); "" anonymous
    seq: int = 0  # the processor's number for it, acknowledged in heartbeats once handled


@dataclass(slots=True)
class Event:
    """A processor event (docs/watchers.md). Client events name the client and its `user`;
    `CLIENT_AWAY` (its connection was lost: it keeps its ID, rooms and seats for the resume
    window, the other members are not told) and `CLIENT_BACK` (it resumed) come to the
    watchers of its rooms and to the lobby's; if it never comes back, the usual
    `CLIENT_LEFT_ROOM`s and `CLIENT_DISCONNECTED` follow when the window passes."""

    kind: EventKind
    client: str
    room: str
    seq: int
    user: str = ""  # the client's user, for client events ("" for anonymous clients, room events)


@dataclass(slots=True)
class RoomState:
    name: str
    members: list[str]
    maker: str = ""
    settings: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Welcome:
    """The processor took our hello: its epoch and the state of the rooms we claim."""

    epoch: str
    rooms: list[RoomState]


class CommandError(Exception):
    """A command's error reply: `code` is one of docs/watchers.md's codes (or `timeout`)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---------------------------------------------------------------- what comes in

def rooms(states: Iterable[pb.RoomState]) -> list[RoomState]:
    return [RoomState(r.name, list(r.members), r.maker, dict(r.settings)) for r in states]


def decode(frames: list[bytes]) -> Message | Event | Welcome | pb.Reply | None:
    """One message from the processor; None if it does not decode (the caller logs)."""
    try:
        out = pb.WatcherOut.FromString(frames[-1])
    except Exception:  # noqa: BLE001 - whatever protobuf raises for bad bytes
        return None
    kind = out.WhichOneof("kind")
    if kind == "message":
        m = out.message
        try:
            body = json.loads(m.body) if m.body else {}
        except ValueError:
            body = {}
        return Message(m.client, m.action, m.target, body if isinstance(body, dict) else {},
                       m.request_id, m.is_target_client, m.user, m.seq)
    if kind == "event":
        e = out.event
        return Event(EventKind(e.kind), e.client, e.room, e.seq, e.user)
    if kind == "welcome":
        return Welcome(out.welcome.epoch, rooms(out.welcome.rooms))
    if kind == "reply":
        return out.reply
    return None


def reply_error(reply: pb.Reply) -> CommandError | None:
    return CommandError(reply.error, reply.message) if reply.error else None


def timed_out(cmd_id: int, seconds: float) -> pb.Reply:
    """The reply the SDKs make up for a command whose own never came."""
    return pb.Reply(id=cmd_id, error=TIMEOUT, message=f"no reply to command {cmd_id} in {seconds} s")


def not_sent(cmd_id: int, why: str) -> pb.Reply:
    """The reply the SDKs make up for a command they could not send."""
    return pb.Reply(id=cmd_id, error=ErrorCode.PROCESSOR_UNAVAILABLE.value,
                    message=f"command not sent: {why}")


# ---------------------------------------------------------------- what goes out

def hello(name: str, rooms: Iterable[str], prefixes: Iterable[str], assigned: Iterable[str]) -> bytes:
    return pb.WatcherIn(hello=pb.WatcherHello(name=name, rooms=list(rooms), prefixes=list(prefixes),
                                              assigned=list(assigned))).SerializeToString()


def heartbeat(acked: int, stats: pb.ProcessStats | None = None) -> bytes:
    return pb.WatcherIn(heartbeat=pb.Heartbeat(acked=acked, stats=stats)).SerializeToString()


def goodbye(acked: int) -> bytes:
    return pb.WatcherIn(goodbye=pb.Heartbeat(acked=acked)).SerializeToString()


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """One command's op (the `Command.op` oneof as keyword arguments) and how to read the
    answer out of its successful `Reply`."""

    fields: dict[str, Any]
    convert: Callable[[pb.Reply], T]


def command(cmd_id: int, op: Op[Any]) -> bytes:
    return pb.WatcherIn(command=pb.Command(id=cmd_id, **op.fields)).SerializeToString()


def _no_value(reply: pb.Reply) -> None:
    return None


def _room_list(reply: pb.Reply) -> list[RoomState]:
    return rooms(reply.rooms)


def _one_room(reply: pb.Reply) -> RoomState:
    (room,) = rooms(reply.rooms)
    return room


def client_message(action: str, body: Mapping[str, Any] | None, sender: str, target: str,
                   is_target_client: bool = False) -> pb.ClientMessage:
    return pb.ClientMessage(action=action, target=target, body=protocol.encode_body(dict(body or {})),
                            sender=sender, is_target_client=is_target_client)


def send_room(room: str, action: str, body: Mapping[str, Any] | None = None, *, sender: str = "",
              exclude: Iterable[str] = (), target: str = "") -> Op[None]:
    return Op({"send_room": pb.SendToRoom(room=room, message=client_message(action, body, sender, target),
                                          exclude=list(exclude))}, _no_value)


def send_clients(clients: Iterable[str], action: str, body: Mapping[str, Any] | None = None, *,
                 sender: str = "", target: str = "", is_target_client: bool = False) -> Op[None]:
    return Op({"send_clients": pb.SendToClients(
        clients=list(clients), message=client_message(action, body, sender, target, is_target_client))},
        _no_value)


_CLIENT_CODES = {code.value: code for code in ErrorCode}


def error(msg: Message, code: ErrorCode | CommandError, detail: str = "") -> Op[None]:
    """An error frame answering a client frame (its id echoed). For a failed command, the
    processor's code when it is one clients know (`already-member`, `watcher-unavailable`,
    …), else `watcher-error` (e.g. `timeout`: the processor did not answer)."""
    if isinstance(code, CommandError):
        code = _CLIENT_CODES.get(code.code, ErrorCode.WATCHER_ERROR)
    body = {"code": code.value, "message": detail or code.message, "action": msg.action}
    frame = pb.ClientMessage(action="error", target=msg.room, body=protocol.encode_body(body),
                             request_id=msg.request_id)
    return Op({"send_clients": pb.SendToClients(clients=[msg.client], message=frame)}, _no_value)


def join(client: str, room: str, request_id: bytes = b"") -> Op[None]:
    return Op({"join": pb.Membership(client=client, room=room, request_id=request_id)}, _no_value)


def remove(client: str, room: str) -> Op[None]:
    return Op({"remove": pb.Membership(client=client, room=room)}, _no_value)


def create_room(room: str, *, watcher: str = "", settings: Mapping[str, str] | None = None) -> Op[None]:
    return Op({"create_room": pb.CreateRoom(room=room, watcher=watcher, settings=dict(settings or {}))},
              _no_value)


def delete_room(room: str) -> Op[None]:
    return Op({"delete_room": pb.RoomRef(room=room)}, _no_value)


def disconnect(client: str, code: int = CloseCode.DISCONNECTED, reason: str = "") -> Op[None]:
    return Op({"disconnect": pb.CloseClient(client=client, code=code, reason=reason)}, _no_value)


def settings(room: str, values: Mapping[str, str]) -> Op[None]:
    return Op({"settings": pb.RoomSettings(room=room, settings=dict(values))}, _no_value)


def query_rooms() -> Op[list[RoomState]]:
    return Op({"query": pb.Query(what=pb.Query.ROOMS)}, _room_list)


def query_room(room: str) -> Op[RoomState]:
    return Op({"query": pb.Query(what=pb.Query.ROOM, room=room)}, _one_room)


def client_rooms(client: str) -> Op[list[RoomState]]:
    return Op({"query": pb.Query(what=pb.Query.CLIENT_ROOMS, client=client)}, _room_list)
