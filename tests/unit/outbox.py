"""A recording `Outbox` for the pure core: every decision becomes a tuple in `calls`.

When given the `Mesh`, it also works out, at the moment of each delivery, which
clients a gateway would hand the frame to (room members on that gateway, minus the
excluded ones), so tests can read each client's inbox as decoded JSON: `stream` as
received, `inbox` without the position fields (offset, epoch, seq) that only the
tests of sessions and history look at.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from meshstream_zmq import protocol
from meshstream_zmq.commands import Answer
from meshstream_zmq.core import Delivery, EventKind, Mesh, RoomView, gateway_of
from meshstream_zmq.errors import ErrorCode

POSITION = ("offset", "epoch", "seq")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(frame: bytes) -> dict[str, Any]:
    """Strict JSON (no NaN/Infinity): what a browser's JSON.parse accepts."""
    obj = json.loads(frame, parse_constant=_no_constants)
    assert isinstance(obj, dict), frame
    return obj


class RecordingOutbox:
    """Implements every `Outbox` method; records calls as tuples, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.mesh: Mesh | None = None
        self.inboxes: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.seqs: list[int] = []
        self.users: list[tuple[str, str, str]] = []  # ("event"|"to_watcher", client, user)
        # What to_watcher answers: True (sent), False or Delivery.FULL (the watcher's queue is
        # full), Delivery.GONE (the watcher is disconnected)
        self.watcher_accepts: bool | Delivery = True
        self.answers: dict[int, Answer] = {}  # a success's contents, by command ID

    # ------------------------------------------------------------ the Outbox protocol

    def deliver(self, gateway: str, frame: bytes, clients: Sequence[str] = (), room: str = "",
                exclude: Sequence[str] = ()) -> None:
        self.calls.append(("deliver", gateway, frame, tuple(clients), room, tuple(exclude)))
        message = decode(frame)  # every frame the core emits must be valid JSON
        if clients:
            assert not room, "a delivery names clients or a room, not both"
            for client in clients:
                # A client is on the gateway its ID names, or the one it resumed on.
                state = self.mesh.clients.get(client) if self.mesh is not None else None
                assert gateway == (state.gateway if state is not None else gateway_of(client)), (
                    gateway, client)
                self.inboxes[client].append(message)
        elif self.mesh is not None:
            members = self.mesh.rooms[room].members
            for client in members:
                if self.mesh.clients[client].gateway == gateway and client not in exclude:
                    self.inboxes[client].append(message)

    def broadcast(self, gateways: Iterable[str], room: str, frame: bytes,
                  exclude: Sequence[str] = ()) -> None:
        for gateway in gateways:
            self.deliver(gateway, frame, room=room, exclude=exclude)

    def membership(self, gateway: str, client: str, room: str, joined: bool) -> None:
        self.calls.append(("membership", gateway, client, room, joined))

    def close(self, gateway: str, client: str, code: int, reason: str) -> None:
        self.calls.append(("close", gateway, client, code, reason))

    def event(self, seq: int, kind: EventKind, client: str, room: str, watcher: str,
              user: str = "") -> None:
        self.users.append(("event", client, user))  # kept apart so call tuples stay readable
        self.calls.append(("event", seq, kind, client, room, watcher))

    def to_watcher(self, watcher: str, seq: int, client: str, action: str, target: str,
                   body: bytes, is_target_client: bool, request_id: bytes,
                   user: str = "") -> bool | Delivery:
        self.seqs.append(seq)  # kept apart so call tuples stay readable
        self.users.append(("to_watcher", client, user))
        self.calls.append(("to_watcher", watcher, client, action, target, body, is_target_client,
                           request_id))
        return self.watcher_accepts

    def reply(self, watcher: str, command: int, error: ErrorCode | None = None, detail: str = "",
              rooms: Sequence[RoomView] = (), answer: Answer | None = None) -> None:
        if answer is not None:  # its rooms as the reply's; the rest by command (answers)
            rooms = answer.rooms
            self.answers[command] = answer
        self.calls.append(("reply", watcher, command, error, detail, tuple(rooms)))

    def welcome(self, watcher: str, rooms: Sequence[RoomView]) -> None:
        self.calls.append(("welcome", watcher, tuple(rooms)))

    def resumed(self, gateway: str, link: str, client: str = "", reason: str = "",
                rooms: Sequence[str] = (), replay: Sequence[bytes] = (), epoch: str = "") -> None:
        self.calls.append(("resumed", gateway, link, client, reason, tuple(rooms), tuple(replay),
                           epoch))
        if client:  # what the gateway writes: the replay, before anything live
            self.inboxes[client].extend(decode(frame) for frame in replay)

    def sync(self, gateway: str, clients: Sequence[tuple[str, Sequence[str]]],
             closing: Sequence[tuple[str, int, str]]) -> None:
        self.calls.append(("sync", gateway, tuple((c, tuple(r)) for c, r in clients), tuple(closing)))

    def received(self, gateway: str, seq: int) -> None:  # the processor's flow control
        pass

    def hold(self, gateway: str) -> None:
        pass

    def forget(self, gateway: str) -> None:
        pass

    # ------------------------------------------------------------ reading what happened

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == kind]

    def deliveries(self) -> list[tuple[Any, ...]]:
        return self.of("deliver")

    def events(self) -> list[tuple[EventKind, str, str, str]]:
        """(kind, client, room, watcher) for each event, without the sequence number."""
        return [(c[2], c[3], c[4], c[5]) for c in self.of("event")]

    def event_kinds(self) -> list[EventKind]:
        return [c[2] for c in self.of("event")]

    def replies(self) -> list[tuple[Any, ...]]:
        return self.of("reply")

    def inbox(self, client: str) -> list[dict[str, Any]]:
        """The client's frames, without their position fields."""
        return [{k: v for k, v in m.items() if k not in POSITION} for m in self.inboxes.get(client, [])]

    def stream(self, client: str) -> list[dict[str, Any]]:
        """The client's frames as received (position fields included)."""
        return list(self.inboxes.get(client, []))

    def errors(self, client: str) -> list[str]:
        return [m["message_body"]["code"] for m in self.inbox(client) if m["action"] == "error"]

    def clear(self) -> None:
        self.calls.clear()
        self.inboxes.clear()
        self.seqs.clear()
        self.users.clear()


def new_mesh(**kwargs: Any) -> tuple[Mesh, RecordingOutbox]:
    out = RecordingOutbox()
    mesh = Mesh(out, **kwargs)
    out.mesh = mesh
    return mesh, out


def send(mesh: Mesh, client: str, action: str, target: str = "", body: dict[str, Any] | None = None,
         *, to_client: bool = False, rid: Any = None) -> None:
    """A client frame as the gateway hands it over: body and id already JSON text."""
    mesh.client_frame(client, action, target,
                      protocol.encode_body(body) if body else protocol.EMPTY_BODY,
                      to_client, b"" if rid is None else json.dumps(rid).encode())
