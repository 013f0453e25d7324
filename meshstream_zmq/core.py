"""The processor's state and every routing decision, with no I/O.

`Mesh` owns gateways, clients, rooms (the lobby `mesh-global` included) and
watcher claims. Inputs are method calls (a gateway said hello, a client frame
arrived, a watcher sent a command, time passed); outputs go to an `Outbox`, a
sink the processor service turns into ZeroMQ messages and tests turn into lists.
Nothing here reads a clock, touches a socket or logs.
"""

from __future__ import annotations

import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Protocol, assert_never

from . import LOBBY, protocol
from .commands import (
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
from .errors import CloseCode, ErrorCode

MAX_ROOM_NAME = 64
PRIVATE_PREFIX = "private-"  # Pusher's convention: joined with a room token (or by its watcher)
MAX_LIST_PAGE = 100  # names in one `room-list` or `member-list` page: the default and the most
DIRECT_MODES = ("on", "shared-room", "off")  # --direct-messages

# Decides a client's join of an unclaimed private room: (message_body.token, the client's
# user, the room) -> admitted. The processor builds it from auth.Tokens.room and the wall
# clock, so the core stays pure; tests pass a fake.
RoomPass = Callable[[object, str, str], bool]


PAGE_BODY = "limit must be an integer and after a string (the last name of the page before)"


class Delivery(Enum):
    """What became of a client frame handed to a watcher (`Outbox.to_watcher`).

    Only SENT is true, so an outbox may also answer True (sent) or False (full).
    """

    SENT = "sent"
    FULL = "full"  # not sent: the watcher's queue is full (it is alive, but not reading)
    GONE = "gone"  # not sent: the watcher is disconnected (it exited or was SIGKILLed)

    def __bool__(self) -> bool:
        return self is Delivery.SENT


class EventKind(IntEnum):
    """The events (values match `Event.Kind` in proto/meshstream.proto)."""

    CLIENT_CONNECTED = 1
    CLIENT_DISCONNECTED = 2
    ROOM_CREATED = 3
    ROOM_DELETED = 4
    CLIENT_JOINED_ROOM = 5
    CLIENT_LEFT_ROOM = 6
    CLIENT_AWAY = 7  # its connection ended uncleanly: it may resume within the window
    CLIENT_BACK = 8  # it resumed, identity and rooms kept


@dataclass(slots=True)
class RoomView:
    """A read-only copy of a room, for queries and watcher snapshots."""

    name: str
    members: list[str]
    maker: str
    settings: dict[str, str]


class Outbox(Protocol):
    """Where the core's decisions go. Calls arrive in the order they must happen."""

    def deliver(
        self,
        gateway: str,
        frame: bytes,
        clients: Sequence[str] = (),
        room: str = "",
        exclude: Sequence[str] = (),
    ) -> None:
        """Send `frame` to `clients`, or to every member of `room` on `gateway`."""

    def broadcast(self, gateways: Iterable[str], room: str, frame: bytes,
                  exclude: Sequence[str] = ()) -> None:
        """`deliver(gateway, frame, room=room, exclude=exclude)` for each of `gateways`
        (one call per room message: the hot path of every relay)."""

    def membership(self, gateway: str, client: str, room: str, joined: bool) -> None:
        """Tell `gateway` that its `client` joined or left `room` (its local mirror)."""

    def close(self, gateway: str, client: str, code: int, reason: str) -> None:
        """Ask `gateway` to close the client's connection."""

    def event(self, seq: int, kind: EventKind, client: str, room: str, watcher: str,
              user: str = "") -> None:
        """Publish an event; also send it to `watcher` when that is not empty. `user` is the
        client's user (its token's `sub`; empty for anonymous clients and room events)."""

    def to_watcher(self, watcher: str, seq: int, client: str, action: str, target: str,
                   body: bytes, is_target_client: bool, request_id: bytes, user: str = "") -> Delivery:
        """Forward a client frame (from `client`, whose user is `user`) to the watcher that
        owns its room; what became of it (True and False stand for SENT and FULL)."""

    def reply(self, watcher: str, command: int, error: ErrorCode | None = None,
              detail: str = "", rooms: Sequence[RoomView] = ()) -> None:
        """Answer a watcher's command (or hello, command 0)."""

    def welcome(self, watcher: str, rooms: Sequence[RoomView]) -> None:
        """Accept a watcher's hello, with the state of the rooms it claims."""


@dataclass(slots=True, eq=False)
class ClientEntry:
    """What the mesh knows of one connected client."""

    id: str
    gateway: str
    rooms: set[str] = field(default_factory=set)  # the lobby included
    user: str = ""  # its token's `sub` (the gateway verified it); empty: anonymous


@dataclass(slots=True, eq=False)
class Room:
    name: str
    members: dict[str, None] = field(default_factory=dict)  # ordered set of client IDs
    gateways: Counter[str] = field(default_factory=Counter)  # members per gateway
    maker: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    keep: bool = False  # created by a watcher: lives on while empty

    def view(self) -> RoomView:
        return RoomView(self.name, list(self.members), self.maker, dict(self.settings))


@dataclass(slots=True, eq=False)
class GatewayEntry:
    """What the mesh knows of one gateway process: its slot, liveness and clients."""

    id: str
    index: int
    last_seen: float
    clients: set[str] = field(default_factory=set)


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
    unacked: deque[tuple[int, str, str, str, bytes]] = field(default_factory=deque)

    def claims(self, room: str) -> bool:
        return room in self.rooms or room in self.assigned or room.startswith(self.prefixes)


CommandResult = tuple[ErrorCode, str] | list[RoomView] | None


def gateway_of(client: str) -> str:
    """Client IDs are '<gateway ID>.<n>': the gateway is in the ID (the PUB prefix)."""
    return client.partition(".")[0]


def valid_room_name(name: object) -> bool:
    """1 to 64 characters, none of them a control or bidi formatting character."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_ROOM_NAME
            and not protocol.has_forbidden_chars(name))


class Mesh:
    """All rooms and memberships, and the rules that route client frames."""

    def __init__(self, out: Outbox, *, gateway_timeout: float = 3.0,
                 watcher_timeout: float = 3.0, room_pass: RoomPass | None = None,
                 max_rooms_per_client: int = 0, direct_messages: str = "on") -> None:
        """`room_pass` None: no client joins an unclaimed private room by itself;
        `max_rooms_per_client` 0: no limit; `direct_messages`: one of DIRECT_MODES."""
        if direct_messages not in DIRECT_MODES:
            raise ValueError(f"direct_messages must be one of {', '.join(DIRECT_MODES)}")
        self.out = out
        self.gateway_timeout = gateway_timeout
        self.watcher_timeout = watcher_timeout
        self.room_pass = room_pass
        self.max_rooms_per_client = max(0, max_rooms_per_client)
        self.direct_messages = direct_messages
        self.gateways: dict[str, GatewayEntry] = {}
        self.clients: dict[str, ClientEntry] = {}
        self.rooms: dict[str, Room] = {LOBBY: Room(LOBBY, keep=True)}
        self.watchers: dict[str, WatcherEntry] = {}
        self._owners: dict[str, WatcherEntry | None] = {}  # room -> owner, cleared on claim changes
        self.event_seq = 0

    # ------------------------------------------------------------ gateways

    def gateway_hello(self, gateway: str, index: int, clients: Iterable[tuple[str, Sequence[str]]],
                      now: float, users: Mapping[str, str] | None = None) -> None:
        """A gateway (re)started, or resyncs after a processor restart.

        An older gateway in the same slot is gone: its clients leave. The clients
        listed are made to match exactly, so a resync after a processor restart
        restores memberships without telling the clients anything. `users` maps
        clients to their users (anonymous ones are left out). Gateways are trusted:
        the rooms they list are restored without the join policies.
        """
        users = users or {}
        for other in [g for g in self.gateways.values() if g.index == index and g.id != gateway]:
            self.drop_gateway(other.id)
        gw = self._gateway(gateway, now)
        gw.index = index
        listed = dict(clients)
        for client in [c for c in gw.clients if c not in listed]:
            self.client_disconnected(client)
        for client, rooms in listed.items():
            if client not in self.clients:
                self._connect(gw, client, users.get(client, ""))
            elif client in users:
                self.clients[client].user = users[client]
            have = self.clients[client].rooms
            for room in [r for r in have if r not in rooms and r != LOBBY]:
                self._leave(client, room, notify=True)  # the others must hear of it
            for room in rooms:
                if room not in have and valid_room_name(room):
                    self._join(client, room, notify=False, mirror=False)

    def gateway_seen(self, gateway: str, now: float) -> None:
        gw = self.gateways.get(gateway)
        if gw is not None:
            gw.last_seen = now

    def knows_gateway(self, gateway: str) -> bool:
        return gateway in self.gateways

    def drop_gateway(self, gateway: str) -> None:
        """The gateway died: its clients disconnect, with every event and notice."""
        gw = self.gateways.pop(gateway, None)
        if gw is None:
            return
        for client in list(gw.clients):
            self.client_disconnected(client)

    def expire(self, now: float) -> list[str]:
        """Drop gateways and watchers that missed their heartbeats; returns gateway IDs dropped."""
        dead = [g.id for g in self.gateways.values() if now - g.last_seen > self.gateway_timeout]
        for gateway in dead:
            self.drop_gateway(gateway)
        for watcher in list(self.watchers.values()):
            if watcher.alive and now - watcher.last_seen > self.watcher_timeout:
                self.watcher_gone(watcher.id)
        return dead

    def _gateway(self, gateway: str, now: float) -> GatewayEntry:
        gw = self.gateways.get(gateway)
        if gw is None:
            gw = self.gateways[gateway] = GatewayEntry(gateway, -1, now)
        gw.last_seen = now
        return gw

    # ------------------------------------------------------------ clients

    def client_connected(self, client: str, now: float, user: str = "") -> None:
        """A gateway accepted `client`; `user` is its token's `sub` (empty: anonymous)."""
        gw = self._gateway(gateway_of(client), now)
        if client not in self.clients:
            self._connect(gw, client, user)

    def _connect(self, gw: GatewayEntry, client: str, user: str = "") -> None:
        self.clients[client] = ClientEntry(client, gw.id, user=user)
        gw.clients.add(client)
        self._add_member(self.rooms[LOBBY], client, gw.id)
        self._event(EventKind.CLIENT_CONNECTED, client, "", self._owner_id(LOBBY))

    def client_disconnected(self, client: str) -> None:
        state = self.clients.get(client)
        if state is None:
            return
        for room in list(state.rooms):
            if room != LOBBY:
                self._leave(client, room, notify=True, mirror=False)
        self._remove_member(self.rooms[LOBBY], client, state.gateway)
        del self.clients[client]
        gw = self.gateways.get(state.gateway)
        if gw is not None:
            gw.clients.discard(client)
        self._event(EventKind.CLIENT_DISCONNECTED, client, "", self._owner_id(LOBBY), state.user)

    def client_frame(self, client: str, action: str, target: str, body: bytes = protocol.EMPTY_BODY,
                     is_target_client: bool = False, request_id: bytes = b"") -> None:
        """Route one validated client frame (see docs/protocol.md)."""
        if client not in self.clients:
            return self._error(client, ErrorCode.UNKNOWN_SENDER, action, target, request_id)
        if is_target_client:
            return self._direct(client, action, target, body, request_id)
        if action == "list-rooms":
            return self._list_rooms(client, body, request_id)
        if action == "list-members":
            return self._list_members(client, target, body, request_id)
        if not target:
            return self._error(client, ErrorCode.MISSING_TARGET, action, target, request_id)
        owner = self._owner(target)
        if owner is not None:
            if action == "join-room" and target == LOBBY:
                return self._claimed_lobby_join(owner, client, body, request_id)
            return self._forward(owner, client, action, target, body, is_target_client, request_id)
        if action == "join-room":
            return self._join_request(client, target, body, request_id)
        if action == "leave-room":
            return self._leave_request(client, target, request_id)
        room = self.rooms.get(target)
        if room is None:
            # A private room's existence is not told to non-members (no name probing).
            code = ErrorCode.NOT_MEMBER if target.startswith(PRIVATE_PREFIX) else ErrorCode.UNKNOWN_ROOM
            return self._error(client, code, action, target, request_id)
        if target == LOBBY:
            return self._error(client, ErrorCode.LOBBY_READONLY, action, target, request_id)
        if client not in room.members:
            return self._error(client, ErrorCode.NOT_MEMBER, action, target, request_id)
        frame = protocol.encode(action, target, body, client)
        if not request_id:
            self._broadcast(room, frame)
            return None
        # The sender's own copy is its acknowledgement: it alone carries the request id.
        self._broadcast(room, frame, exclude=(client,))
        self.out.deliver(self.clients[client].gateway,
                         protocol.encode(action, target, body, client, request_id=request_id),
                         clients=(client,))
        return None

    def _join_request(self, client: str, target: str, body: bytes, request_id: bytes) -> None:
        name: object = target
        if target == LOBBY:  # the seed's form: {"target": "mesh-global", "message_body": {"roomname": …}}
            name = protocol.decode_body(body).get("roomname")
            if name == LOBBY or name is None:
                return self._error(client, ErrorCode.ALREADY_MEMBER, "join-room", target, request_id)
        if not valid_room_name(name):
            return self._error(client, ErrorCode.BAD_ROOM_NAME, "join-room", target, request_id)
        assert isinstance(name, str)
        if name in self.clients[client].rooms:
            return self._error(client, ErrorCode.ALREADY_MEMBER, "join-room", name, request_id)
        owner = self._owner(name)
        if owner is not None:  # the lobby form naming a claimed room: its watcher decides
            return self._forward(owner, client, "join-room", name, body, False, request_id)
        refused = self._admission(client, name, body)
        if refused is not None:
            return self._error(client, refused, "join-room", target, request_id)
        self._join(client, name, notify=True, mirror=True, request_id=request_id)
        return None

    def _admission(self, client: str, name: str, body: bytes) -> ErrorCode | None:
        """The policies on a client's own join of `name`, a room no watcher claims: a
        private room needs a room pass for the client's user; the lobby is not counted
        against --max-rooms-per-client. None: admitted."""
        state = self.clients[client]
        if name.startswith(PRIVATE_PREFIX):
            token = protocol.decode_body(body).get("token")
            if not state.user or self.room_pass is None or not self.room_pass(token, state.user, name):
                return ErrorCode.FORBIDDEN
        if self.max_rooms_per_client and len(state.rooms) > self.max_rooms_per_client:
            return ErrorCode.TOO_MANY_ROOMS
        return None

    def _claimed_lobby_join(self, owner: WatcherEntry, client: str, body: bytes,
                            request_id: bytes) -> None:
        """The lobby form (`roomname`) while a watcher claims the lobby: its watcher decides,
        but the join policies come first when the room named is one no watcher claims, so
        going through the lobby's watcher never bypasses them. An unclaimed private room
        is the core's alone: admitted, the client joins it here, as with the built-in form."""
        name = protocol.decode_body(body).get("roomname")
        if (isinstance(name, str) and name != LOBBY and valid_room_name(name)
                and name not in self.clients[client].rooms and self._owner(name) is None):
            refused = self._admission(client, name, body)
            if refused is not None:
                return self._error(client, refused, "join-room", LOBBY, request_id)
            if name.startswith(PRIVATE_PREFIX):
                return self._join(client, name, notify=True, mirror=True, request_id=request_id)
        return self._forward(owner, client, "join-room", LOBBY, body, False, request_id)

    def _page_args(self, client: str, action: str, target: str, body: bytes,
                   request_id: bytes) -> tuple[int, str] | None:
        """A list request's `limit` (clamped to 1..100; default 100) and `after` cursor
        (null: as if absent), or None once the client is told `bad-body`."""
        args = protocol.decode_body(body) if body != protocol.EMPTY_BODY else {}
        limit, after = args.get("limit"), args.get("after")
        if limit is None:
            limit = MAX_LIST_PAGE
        if (not isinstance(limit, int) or isinstance(limit, bool)
                or (after is not None and not isinstance(after, str))):
            self._error(client, ErrorCode.BAD_BODY, action, target, request_id,
                        detail=f"{action}: {PAGE_BODY}")
            return None
        return min(max(limit, 1), MAX_LIST_PAGE), after or ""

    @staticmethod
    def _page(names: Iterable[str], limit: int, after: str) -> tuple[list[str], str | None]:
        """The first `limit` names after the cursor, in code point order, and the next cursor
        (None on the last page). Stable while names come and go: no offsets to shift."""
        first = heapq.nsmallest(limit + 1, (n for n in names if n > after))
        page = first[:limit]
        return page, (page[-1] if len(first) > limit else None)

    def _list_rooms(self, client: str, body: bytes, request_id: bytes) -> None:
        """One page of the rooms that are not private, by name. The lobby is listed like any room."""
        args = self._page_args(client, "list-rooms", "", body, request_id)
        if args is None:
            return None
        rooms = self.rooms
        page, cursor = self._page((n for n in rooms if not n.startswith(PRIVATE_PREFIX)), *args)
        listed = [{"name": n, "members": len(rooms[n].members)} for n in page]
        return self._reply(client, "room-list", "", {"rooms": listed, "next": cursor}, request_id)

    def _list_members(self, client: str, target: str, body: bytes, request_id: bytes) -> None:
        """One page of a room's members, by client ID. Not of the lobby (every client:
        enumeration), and of a private room only for its members (others cannot tell if it
        exists)."""
        if not target:
            return self._error(client, ErrorCode.MISSING_TARGET, "list-members", target, request_id)
        room = self.rooms.get(target)
        if target == LOBBY or (target.startswith(PRIVATE_PREFIX)
                               and (room is None or client not in room.members)):
            return self._error(client, ErrorCode.FORBIDDEN, "list-members", target, request_id)
        if room is None:
            return self._error(client, ErrorCode.UNKNOWN_ROOM, "list-members", target, request_id)
        args = self._page_args(client, "list-members", target, body, request_id)
        if args is None:
            return None
        page, cursor = self._page(room.members, *args)
        return self._reply(client, "member-list", target, {"members": page, "next": cursor},
                           request_id)

    def _forward(self, owner: WatcherEntry, client: str, action: str, target: str, body: bytes,
                 is_target_client: bool, request_id: bytes) -> None:
        """Hand a frame (with its sender's user) to the room's watcher; kept until the
        watcher acknowledges it.

        A watcher found disconnected is gone at once: the frames it never confirmed are
        answered `watcher-restarted` before this one gets `watcher-unavailable`, so each
        client hears of its frames in the order it sent them."""
        if owner.alive:
            seq = owner.sent + 1
            if sent := self.out.to_watcher(owner.id, seq, client, action, target, body, is_target_client,
                                   request_id, self.clients[client].user):
                owner.sent = seq
                owner.unacked.append((seq, client, action, target, request_id))
                return None
            if sent is Delivery.GONE:
                self.watcher_gone(owner.id)
        self._error(client, ErrorCode.WATCHER_UNAVAILABLE, action, target, request_id)
        return None

    def _leave_request(self, client: str, target: str, request_id: bytes) -> None:
        if target == LOBBY:
            return self._error(client, ErrorCode.CANNOT_LEAVE_LOBBY, "leave-room", target, request_id)
        if target not in self.rooms:
            code = ErrorCode.NOT_MEMBER if target.startswith(PRIVATE_PREFIX) else ErrorCode.UNKNOWN_ROOM
            return self._error(client, code, "leave-room", target, request_id)
        if target not in self.clients[client].rooms:
            return self._error(client, ErrorCode.NOT_MEMBER, "leave-room", target, request_id)
        self._leave(client, target, notify=True, mirror=True, request_id=request_id)
        return None

    def _direct(self, client: str, action: str, target: str, body: bytes, request_id: bytes) -> None:
        """A direct message, as --direct-messages allows: `on` to any client; `shared-room`
        to one sharing a room other than the lobby with the sender; `off` never. Refused:
        `forbidden`, also for an unknown client when not `on` (no probing of IDs)."""
        recipient = self.clients.get(target)
        mode = self.direct_messages
        if mode != "on" and (mode == "off" or recipient is None
                             or not self._share_a_room(self.clients[client], recipient)):
            return self._error(client, ErrorCode.FORBIDDEN, action, target, request_id)
        if recipient is None:
            return self._error(client, ErrorCode.UNKNOWN_CLIENT, action, target, request_id)
        frame = protocol.encode(action, target, body, client, is_target_client=True)
        self.out.deliver(recipient.gateway, frame, clients=(target,))
        return None

    @staticmethod
    def _share_a_room(a: ClientEntry, b: ClientEntry) -> bool:
        small, large = (a.rooms, b.rooms) if len(a.rooms) <= len(b.rooms) else (b.rooms, a.rooms)
        return any(room != LOBBY and room in large for room in small)

    # ------------------------------------------------------------ membership

    def _join(self, client: str, name: str, *, notify: bool, mirror: bool,
              request_id: bytes = b"") -> None:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, maker=client)
            self._event(EventKind.ROOM_CREATED, "", name, self._owner_id(name))
        gateway = self.clients[client].gateway
        self._add_member(room, client, gateway)
        if mirror:
            self.out.membership(gateway, client, name, True)
        if notify and self._owner(name) is None:
            body = protocol.encode_body({"client": client, "room": name})
            frame = protocol.encode("client-joined-room", name, body, client)
            self._broadcast(room, frame, exclude=(client,))
            self.out.deliver(gateway, protocol.encode("client-joined-room", name, body, client,
                                                      request_id=request_id), clients=(client,))
        self._event(EventKind.CLIENT_JOINED_ROOM, client, name, self._owner_id(name))

    def _leave(self, client: str, name: str, *, notify: bool, mirror: bool = True,
               request_id: bytes = b"") -> None:
        room = self.rooms[name]
        gateway = self.clients[client].gateway
        if notify and self._owner(name) is None:
            body = protocol.encode_body({"client": client, "room": name})
            self._broadcast(room, protocol.encode("client-left-room", name, body, client),
                            exclude=(client,))
            if mirror:  # still connected: it hears of its own leave
                self.out.deliver(gateway, protocol.encode("client-left-room", name, body, client,
                                                          request_id=request_id), clients=(client,))
        self._remove_member(room, client, gateway)
        if mirror:
            self.out.membership(gateway, client, name, False)
        self._event(EventKind.CLIENT_LEFT_ROOM, client, name, self._owner_id(name))
        if room.maker == client:
            room.maker = next(iter(room.members), "")
        if not room.members and not room.keep:
            self._delete_room(room)

    def _delete_room(self, room: Room) -> None:
        notify = self._owner(room.name) is None  # built-in rooms tell their members
        for client in list(room.members):
            self._leave(client, room.name, notify=notify)
        if self.rooms.pop(room.name, None) is not None:
            self._event(EventKind.ROOM_DELETED, "", room.name, self._owner_id(room.name))
            for w in self.watchers.values():
                w.assigned.discard(room.name)
            self._claims_changed()

    def _add_member(self, room: Room, client: str, gateway: str) -> None:
        room.members[client] = None
        room.gateways[gateway] += 1
        self.clients[client].rooms.add(room.name)

    def _remove_member(self, room: Room, client: str, gateway: str) -> None:
        del room.members[client]
        room.gateways[gateway] -= 1
        if room.gateways[gateway] <= 0:
            del room.gateways[gateway]
        self.clients[client].rooms.discard(room.name)

    # ------------------------------------------------------------ output helpers

    def _broadcast(self, room: Room, frame: bytes, exclude: Sequence[str] = ()) -> None:
        """One delivery per gateway that holds members; the gateway resolves the room."""
        self.out.broadcast(room.gateways, room.name, frame, exclude)

    def _reply(self, client: str, action: str, target: str, body: dict[str, object],
               request_id: bytes) -> None:
        frame = protocol.encode(action, target, protocol.encode_body(body), request_id=request_id)
        self.out.deliver(gateway_of(client), frame, clients=(client,))

    def _error(self, client: str, code: ErrorCode, action: str, target: str,
               request_id: bytes, detail: str = "") -> None:
        frame = protocol.error(code, action=action, target=target, request_id=request_id,
                               detail=detail)
        self.out.deliver(gateway_of(client), frame, clients=(client,))

    def _event(self, kind: EventKind, client: str, room: str, watcher: str,
               user: str | None = None) -> None:
        """`user`: the client's, looked up unless given (a disconnected client is gone)."""
        self.event_seq += 1
        if user is None:
            state = self.clients.get(client) if client else None
            user = state.user if state is not None else ""
        self.out.event(self.event_seq, kind, client, room, watcher, user)

    # ------------------------------------------------------------ watchers

    def _owner(self, room: str) -> WatcherEntry | None:
        """The watcher claiming `room` (cached: asked for every client frame)."""
        try:
            return self._owners[room]
        except KeyError:
            pass
        if len(self._owners) >= 65536:  # targets are client-chosen: keep the cache bounded
            self._owners.clear()
        owner = self._owners[room] = self._find_owner(room)
        return owner

    def _claims_changed(self) -> None:
        self._owners.clear()

    def _find_owner(self, room: str) -> WatcherEntry | None:
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

    def _owner_id(self, room: str) -> str:
        owner = self._owner(room)
        return owner.id if owner is not None and owner.alive else ""

    def watcher_hello(self, watcher: str, name: str, rooms: Sequence[str], prefixes: Sequence[str],
                      now: float) -> None:
        """Register a watcher and its claims.

        A claim held by another live watcher is refused (claim-conflict). A watcher
        saying hello under a name already known is that watcher restarted: it takes
        over the old entry, including the rooms assigned to it since.
        """
        rooms_set = frozenset(rooms)
        if not name or any(not valid_room_name(r) for r in rooms) or any(not p for p in prefixes):
            self.out.reply(watcher, 0, ErrorCode.BAD_COMMAND, "hello needs a name and valid claims")
            return
        for other in self.watchers.values():
            if other.id == watcher or other.name == name or not other.alive:
                continue
            if rooms_set & (other.rooms | other.assigned) or set(prefixes) & set(other.prefixes):
                self.out.reply(watcher, 0, ErrorCode.CLAIM_CONFLICT,
                               f"claimed by watcher {other.name!r}")
                return
        assigned: set[str] = set()
        for other in list(self.watchers.values()):
            if other.id == watcher or other.name == name:
                assigned |= other.assigned
                self._unconfirmed(other)
                del self.watchers[other.id]
            elif not other.alive and (rooms_set & other.rooms or set(prefixes) & set(other.prefixes)):
                # A dead watcher's claims, and the rooms given to it, pass to the new claimant.
                assigned |= other.assigned
                del self.watchers[other.id]
        self._claims_changed()
        w = self.watchers[watcher] = WatcherEntry(watcher, name, rooms_set, tuple(prefixes), now,
                                             assigned={r for r in assigned if r in self.rooms})
        views = [r.view() for r in self.rooms.values() if w.claims(r.name)]
        self.out.welcome(watcher, views)

    def watcher_seen(self, watcher: str, now: float, acked: int | None = None) -> bool:
        """A sign of life; `acked` (from heartbeats) is the last frame seq it handled."""
        w = self.watchers.get(watcher)
        if w is None or not w.alive:
            return False
        w.last_seen = now
        if acked is not None:
            while w.unacked and w.unacked[0][0] <= acked:
                w.unacked.popleft()
        return True

    def watcher_goodbye(self, watcher: str, acked: int) -> None:
        """A clean stop: the frames up to `acked` (its goodbye's, as in heartbeats) were
        handled; only later ones get `watcher-restarted`. Then as `watcher_gone`."""
        w = self.watchers.get(watcher)
        if w is not None and w.alive:
            while w.unacked and w.unacked[0][0] <= acked:
                w.unacked.popleft()
        self.watcher_gone(watcher)

    def watcher_name(self, watcher: str) -> str:
        """The name a watcher gave in its hello ("" if unknown): for log lines."""
        w = self.watchers.get(watcher)
        return w.name if w is not None else ""

    def live_watchers(self) -> list[str]:
        """The IDs of the watchers not known to be gone (the processor probes them)."""
        return [w.id for w in self.watchers.values() if w.alive]

    def _unconfirmed(self, w: WatcherEntry) -> None:
        """Frames the watcher never confirmed may be lost with it: tell their senders."""
        for _, client, action, target, request_id in w.unacked:
            if client in self.clients:
                self._error(client, ErrorCode.WATCHER_RESTARTED, action, target, request_id)
        w.unacked.clear()

    def watcher_gone(self, watcher: str) -> None:
        """The watcher stopped answering (silent for `watcher_timeout`), was found
        disconnected, or said goodbye: it keeps its claims, marked dead, until replaced.
        The frames it never confirmed get `watcher-restarted`, once.

        Frames to its rooms get `watcher-unavailable` meanwhile rather than falling
        through to the built-in relay (a game room must not turn into a chat room).
        """
        w = self.watchers.get(watcher)
        if w is not None:
            w.alive = False
            self._claims_changed()
            self._unconfirmed(w)

    def command(self, watcher: str, command_id: int, command: Command) -> None:
        """Apply one watcher command; every command gets exactly one reply.

        Watchers are trusted room logic: a command may act on any room. Claims only
        decide which watcher hears a room's frames and events. A value that is not a
        `Command` is a bug in the caller: it raises.
        """
        w = self.watchers.get(watcher)
        if w is None or not w.alive:
            return self.out.reply(watcher, command_id, ErrorCode.UNKNOWN_WATCHER)
        result: CommandResult
        match command:
            case CreateRoom():
                result = self._cmd_create_room(w, command)
            case DeleteRoom():
                result = self._cmd_delete_room(command)
            case Join():
                result = self._cmd_join(command)
            case Remove():
                result = self._cmd_remove(command)
            case SendRoom():
                result = self._cmd_send_room(command)
            case SendClients():
                result = self._cmd_send_clients(command)
            case Disconnect():
                result = self._cmd_disconnect(command)
            case Query():
                result = self._cmd_query(command)
            case Settings():
                result = self._cmd_settings(command)
            case _:
                assert_never(command)
        if isinstance(result, tuple):
            return self.out.reply(watcher, command_id, result[0], result[1])
        return self.out.reply(watcher, command_id, rooms=result or ())

    def _room_arg(self, room: str, *, exists: bool = True) -> tuple[ErrorCode, str] | None:
        if not valid_room_name(room):
            return ErrorCode.BAD_ROOM_NAME, room
        if exists and room not in self.rooms:
            return ErrorCode.UNKNOWN_ROOM, room
        return None

    def _cmd_create_room(self, w: WatcherEntry, c: CreateRoom) -> CommandResult:
        """Create a room that lives while empty; `c.watcher` (a name) is given the room."""
        room = c.room
        bad = self._room_arg(room, exists=False)
        if bad:
            return bad
        if room in self.rooms:
            return ErrorCode.ROOM_EXISTS, room
        owner = w
        if c.watcher:
            found = [o for o in self.watchers.values() if o.name == c.watcher]
            if not found:
                return ErrorCode.UNKNOWN_WATCHER, f"no watcher named {c.watcher!r}"
            owner = found[0]
            if not owner.alive:
                return ErrorCode.WATCHER_UNAVAILABLE, f"watcher {c.watcher!r} is not connected"
        current = self._owner(room)
        if current is not None and current is not owner and current.alive:
            return ErrorCode.CLAIM_CONFLICT, f"{room} is claimed by {current.name!r}"
        if not owner.claims(room):
            owner.assigned.add(room)
            self._claims_changed()
        self.rooms[room] = Room(room, keep=True, settings=dict(c.settings))
        self._event(EventKind.ROOM_CREATED, "", room, self._owner_id(room))
        return None

    def _cmd_delete_room(self, c: DeleteRoom) -> CommandResult:
        bad = self._room_arg(c.room)
        if bad:
            return bad
        if c.room == LOBBY:
            return ErrorCode.CANNOT_LEAVE_LOBBY, "the lobby is never deleted"
        self._delete_room(self.rooms[c.room])
        return None

    def _cmd_join(self, c: Join) -> CommandResult:
        """Put a client in a room: silently in a claimed room (its watcher speaks),
        with the built-in notices in an unclaimed one."""
        client, room = c.client, c.room
        bad = self._room_arg(room, exists=False)
        if bad:
            return bad
        if client not in self.clients:
            return ErrorCode.UNKNOWN_CLIENT, client
        if room in self.clients[client].rooms:
            return ErrorCode.ALREADY_MEMBER, client
        owner = self._owner(room)
        if owner is not None and not owner.alive:  # it would never hear of its new member
            return ErrorCode.WATCHER_UNAVAILABLE, f"the watcher of {room} is not connected"
        self._join(client, room, notify=owner is None, mirror=True, request_id=c.request_id)
        return None

    def _cmd_remove(self, c: Remove) -> CommandResult:
        bad = self._room_arg(c.room)
        if bad:
            return bad
        if c.room == LOBBY:
            return ErrorCode.CANNOT_LEAVE_LOBBY, c.room
        if c.client not in self.rooms[c.room].members:
            return ErrorCode.NOT_MEMBER, c.client
        self._leave(c.client, c.room, notify=self._owner(c.room) is None)
        return None

    def _cmd_send_room(self, c: SendRoom) -> CommandResult:
        bad = self._room_arg(c.room)
        if bad:
            return bad
        self._broadcast(self.rooms[c.room], c.frame, exclude=c.exclude)
        return None

    def _cmd_send_clients(self, c: SendClients) -> CommandResult:
        unknown = [client for client in c.clients if client not in self.clients]
        if unknown:
            return ErrorCode.UNKNOWN_CLIENT, ",".join(unknown)
        by_gateway: dict[str, list[str]] = {}
        for client in c.clients:
            by_gateway.setdefault(self.clients[client].gateway, []).append(client)
        for gateway, group in by_gateway.items():
            self.out.deliver(gateway, c.frame, clients=group)
        return None

    def _cmd_disconnect(self, c: Disconnect) -> CommandResult:
        state = self.clients.get(c.client)
        if state is None:
            return ErrorCode.UNKNOWN_CLIENT, c.client
        self.out.close(state.gateway, c.client, c.code or CloseCode.DISCONNECTED,
                       c.reason or "disconnected by watcher")
        return None

    def _cmd_query(self, c: Query) -> CommandResult:
        match c.what:
            case QueryWhat.ROOMS:
                return [r.view() for r in self.rooms.values()]
            case QueryWhat.ROOM:
                if c.room not in self.rooms:
                    return ErrorCode.UNKNOWN_ROOM, c.room
                return [self.rooms[c.room].view()]
            case QueryWhat.CLIENT_ROOMS:
                if c.client not in self.clients:
                    return ErrorCode.UNKNOWN_CLIENT, c.client
                return [self.rooms[r].view() for r in sorted(self.clients[c.client].rooms)]
            case _:
                assert_never(c.what)

    def _cmd_settings(self, c: Settings) -> CommandResult:
        bad = self._room_arg(c.room)
        if bad:
            return bad
        self.rooms[c.room].settings.update(c.settings)
        return None

    # ------------------------------------------------------------ invariants (for tests)

    def check(self) -> None:
        """Assert the invariants the property tests rely on."""
        for name, room in self.rooms.items():
            assert room.members or room.keep, f"empty room {name} was kept"
            for client in room.members:
                assert name in self.clients[client].rooms
            counted = Counter(self.clients[c].gateway for c in room.members)
            assert counted == room.gateways, (name, counted, room.gateways)
        for client, state in self.clients.items():
            assert LOBBY in state.rooms
            for name in state.rooms:
                assert client in self.rooms[name].members
            assert client in self.gateways[state.gateway].clients
