"""Protobuf wire helpers for the processor: fast encoders, checks, and watcher command decoding.

`deliver_op` and its helpers write `GatewayOut.ops` entries by hand, byte-for-byte
what upb would serialise (tests/unit/test_processor_wire.py) at a fraction of the
cost: they are the processor's hot path, so they stay plain functions over module
globals. `decode_command` turns a watcher's `Command` into its typed form
(meshstream_zmq.commands), once, before the core sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import SERVER_SENDER, protocol
from . import meshstream_pb2 as pb
from .commands import (
    Answer,
    Command,
    CreateRoom,
    DeleteRoom,
    Disconnect,
    Join,
    Query,
    QueryWhat,
    Remove,
    SendClients,
    SendRoom,
    Settings,
)
from .core import RoomView

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer


def _varint_slow(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_varint_slow(i) for i in range(1 << 14)]  # every length up to 16 KiB: one lookup
_TAGS = [bytes(((f << 3) | 2,)) for f in range(16)]  # length-delimited field tags
_ROOM_FIELDS: dict[str, bytes] = {}  # room -> encoded `Deliver.room` field


def varint(n: int) -> bytes:
    """`n` as a protobuf varint."""
    return _VARINTS[n] if n < 0x4000 else _varint_slow(n)


def length_delimited(number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field (a string, bytes or sub-message), number < 16."""
    return _TAGS[number] + varint(len(data)) + data


def deliver_op(frame: bytes, clients: Sequence[str], room: str, exclude: Sequence[str]) -> bytes:
    """`GatewayOut.ops` entry holding `GatewayOp{deliver: Deliver{...}}`, in protobuf wire
    format: byte-for-byte what upb would serialise (tests/unit/test_processor_wire.py),
    at a fraction of the cost of building the message field by field."""
    if room and frame and not clients and not exclude:  # a room broadcast: the hot path
        rf = _ROOM_FIELDS.get(room)
        if rf is None:
            if len(_ROOM_FIELDS) >= 65536:
                _ROOM_FIELDS.clear()
            rf = _ROOM_FIELDS[room] = length_delimited(3, room.encode())
        n = len(frame)
        dlen = n + len(rf) + 3  # + tag and a 2-byte length: frames of 128 B to 16 KiB
        if 0x80 <= n < 0x4000 and 0x80 <= dlen < 0x4000 - 3:
            varints = _VARINTS
            return b"".join((b"\x0a", varints[dlen + 3], b"\x0a", varints[dlen], b"\x0a", varints[n],
                             frame, rf))
        vn = varint(n)
        dlen = 1 + len(vn) + n + len(rf)
        vd = varint(dlen)
        return b"".join((b"\x0a", varint(1 + len(vd) + dlen), b"\x0a", vd, b"\x0a", vn, frame, rf))
    parts = [_TAGS[1], varint(len(frame)), frame] if frame else []
    for c in clients:
        parts.append(length_delimited(2, c.encode()))
    if room:
        parts.append(length_delimited(3, room.encode()))
    for c in exclude:
        parts.append(length_delimited(4, c.encode()))
    d = b"".join(parts)
    n = len(d)
    op_len = 1 + len(varint(n)) + n  # the GatewayOp around the Deliver
    return b"".join((_TAGS[1], varint(op_len), _TAGS[1], varint(n), d))


def columns_match(run: pb.ClientFrames) -> bool:
    """Every column of a `ClientFrames` run has one entry per frame."""
    n = len(run.client)
    return (len(run.action) == n and len(run.target) == n and len(run.body) == n
            and len(run.is_target_client) == n and len(run.request_id) == n)


def fill_rooms(target: RepeatedCompositeFieldContainer[pb.RoomState],
               rooms: Sequence[RoomView]) -> None:
    """Append `rooms` to a repeated `RoomState` field (a Reply's or a Snapshot's)."""
    for view in rooms:
        r = target.add()
        r.name, r.maker = view.name, view.maker
        r.members.extend(view.members)
        r.settings.update(view.settings)
        r.users.extend(view.users)
        r.count, r.epoch, r.offset = view.count, view.epoch, view.offset


def fill_answer(reply: pb.Reply, answer: Answer) -> None:
    """A success's contents (commands.Answer) into its `Reply`."""
    fill_rooms(reply.rooms, answer.rooms)
    if answer.epoch:
        reply.position.epoch, reply.position.offset = answer.epoch, answer.offset
    reply.clients.extend(answer.clients)
    reply.messages.extend(answer.messages)
    reply.next = answer.next
    if answer.since is not None:
        reply.since = answer.since


def message_frame(message: pb.ClientMessage, default_target: str) -> bytes | None:
    """The client JSON of a watcher's message; None without an action or a JSON object body."""
    if not message.action or not protocol.is_json_object(message.body):
        return None
    return protocol.encode(message.action, message.target or default_target,
                           message.body or protocol.EMPTY_BODY, message.sender or SERVER_SENDER,
                           is_target_client=message.is_target_client, request_id=message.request_id)


class BadCommand(Exception):
    """A watcher's `Command` that does not decode; the text is the `bad-command` reply's detail."""


_QUERIES = {pb.Query.ROOMS: QueryWhat.ROOMS, pb.Query.ROOM: QueryWhat.ROOM,
            pb.Query.CLIENT_ROOMS: QueryWhat.CLIENT_ROOMS, pb.Query.ROOM_PAGE: QueryWhat.ROOM_PAGE,
            pb.Query.HISTORY: QueryWhat.HISTORY}
_NO_FRAME = "message needs an action and a JSON object body"


def decode_command(cmd: pb.Command) -> Command:
    """The typed command in `cmd`; raises `BadCommand` for an empty op or an invalid message."""
    match cmd.WhichOneof("op"):
        case "create_room":
            c = cmd.create_room
            return CreateRoom(c.room, c.watcher, dict(c.settings))
        case "delete_room":
            return DeleteRoom(cmd.delete_room.room)
        case "join":
            return Join(cmd.join.client, cmd.join.room, cmd.join.request_id)
        case "remove":
            return Remove(cmd.remove.client, cmd.remove.room, cmd.remove.user)
        case "send_room":
            to_room = cmd.send_room
            frame = message_frame(to_room.message, to_room.room)
            if frame is None:
                raise BadCommand(_NO_FRAME)
            return SendRoom(to_room.room, frame, tuple(to_room.exclude))
        case "send_clients":
            to_clients = cmd.send_clients
            clients = tuple(to_clients.clients)
            frame = message_frame(to_clients.message, clients[0] if len(clients) == 1 else "")
            if frame is None:
                raise BadCommand(_NO_FRAME)
            return SendClients(clients, frame, to_clients.user)
        case "disconnect":
            d = cmd.disconnect
            return Disconnect(d.client, d.code, d.reason, d.user)
        case "query":
            q = cmd.query
            what = _QUERIES.get(q.what)
            if what is None:
                raise BadCommand(f"unknown query {q.what}")
            return Query(what, q.room, q.client, q.limit, q.after,
                         q.since if q.HasField("since") else None)
        case "settings":
            return Settings(cmd.settings.room, dict(cmd.settings.settings))
        case _:
            raise BadCommand("command has no op")


def resume_positions(r: pb.ResumeRequest) -> dict[str, int]:
    """A ResumeRequest's positions as `Mesh.resume` takes them: the offset per stream epoch
    (the first of an epoch named twice wins)."""
    positions: dict[str, int] = {}
    for p in r.positions:
        positions.setdefault(p.epoch, p.offset)
    return positions
