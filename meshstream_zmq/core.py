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
from itertools import islice
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
RESUMED_ELSEWHERE = 4002  # close code of a connection whose session another one resumed
EXPIRED_KEPT = 65536  # hashes of sessions whose window passed, kept to answer `expired`
HISTORY_BODY = ("since must be an integer offset, limit an integer, epoch a string "
                "(the room's epoch)")

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

    def resumed(self, gateway: str, link: str, client: str = "", reason: str = "",
                rooms: Sequence[str] = (), replay: Sequence[bytes] = (), epoch: str = "") -> None:
        """Answer `gateway`'s ResumeRequest for `link` (in its ordered stream): `client`
        resumed, in `rooms` (the lobby left out), missed `replay`; or refused for `reason`."""


# One held room message: (seq, frame, the clients it was not for, when). Its offset is
# implied: the ring holds consecutive offsets, the newest being the room's `offset`.
Held = tuple[int, bytes, Sequence[str], float]
HELD_OVERHEAD = 150  # bytes a held message costs beyond its frame (tracemalloc: 407 B for a 258 B frame)


@dataclass(slots=True, eq=False)
class ClientEntry:
    """What the mesh knows of one client: connected, or away (on no gateway) within its
    resume window."""

    id: str
    gateway: str  # "" while away
    rooms: set[str] = field(default_factory=set)  # the lobby included
    user: str = ""  # its token's `sub` (the gateway verified it); empty: anonymous
    session: bytes = b""  # SHA-256 of its resume secret; empty: it cannot resume
    away_seq: int = 0  # the mesh's seq when it went away (a resume without a position)
    # its last direct messages; None until the first (most clients get none: 600 B saved each)
    direct: deque[tuple[int, bytes]] | None = None
    direct_dropped: int = 0  # seq of the newest direct message no longer held


@dataclass(slots=True, eq=False)
class Room:
    name: str
    # ordered set of client IDs, each with the mesh's seq when it joined: the room messages
    # after that are its own (a resume replays no earlier one)
    members: dict[str, int] = field(default_factory=dict)
    gateways: Counter[str] = field(default_factory=Counter)  # present members per gateway
    maker: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    keep: bool = False  # created by a watcher: lives on while empty
    epoch: str = ""  # "<processor epoch>.<incarnation>": offsets restart with a new one
    positions: bytes = b""  # protocol.position_format(epoch): % (offset, seq)
    offset: int = 0  # of its last room message
    history: deque[Held] = field(default_factory=deque)  # its last messages, oldest first
    dropped: int = 0  # seq of the newest room message no longer held (0: none)

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
                 max_rooms_per_client: int = 0, direct_messages: str = "on",
                 epoch: str = "0", resume_window: float = 0.0, history_size: int = 1000,
                 history_age: float = 300.0, direct_history: int = 100,
                 history_bytes: int = 128 << 20) -> None:
        """`room_pass` None: no client joins an unclaimed private room by itself;
        `max_rooms_per_client` 0: no limit; `direct_messages`: one of DIRECT_MODES;
        `epoch`: the processor's (room epochs and resume positions carry it);
        `resume_window` 0: a lost connection leaves at once, as a clean close does;
        `history_size` room messages (0: none) younger than `history_age` seconds are
        kept per room, and the last `direct_history` direct messages per client."""
        if direct_messages not in DIRECT_MODES:
            raise ValueError(f"direct_messages must be one of {', '.join(DIRECT_MODES)}")
        self.out = out
        self.gateway_timeout = gateway_timeout
        self.watcher_timeout = watcher_timeout
        self.room_pass = room_pass
        self.max_rooms_per_client = max(0, max_rooms_per_client)
        self.direct_messages = direct_messages
        self.epoch = epoch
        self.direct_position = protocol.direct_position_format(epoch)  # `% seq`
        self.resume_window = max(0.0, resume_window)
        self.history_size = max(0, history_size)
        self.history_age = history_age
        # Every room's history together is brought back within `history_bytes` (frames plus
        # an estimate of each entry's own cost) at each expire(): the oldest message held
        # anywhere goes first. Counting is all the hot path does.
        self.history_budget = history_bytes
        self.history_held = 0  # bytes, by that estimate
        self.direct_history = max(0, direct_history)
        self.seq = 0  # of the last room or direct message: one sequence per processor epoch
        self.incarnations = 0  # rooms created so far: each room's epoch has its number
        self.now = 0.0  # the latest time passed in (history entries are stamped with it)
        self.gateways: dict[str, GatewayEntry] = {}
        self.clients: dict[str, ClientEntry] = {}
        self.sessions: dict[bytes, str] = {}  # session hash -> client
        self.away: dict[str, float] = {}  # away client -> end of its window (in that order)
        self.expired: dict[bytes, None] = {}  # hashes of sessions whose window passed
        self.rooms: dict[str, Room] = {}
        self._new_room(LOBBY, keep=True)
        self.watchers: dict[str, WatcherEntry] = {}
        self._owners: dict[str, WatcherEntry | None] = {}  # room -> owner, cleared on claim changes
        self.event_seq = 0

    def _new_room(self, name: str, *, maker: str = "", keep: bool = False,
                  settings: dict[str, str] | None = None) -> Room:
        self.incarnations += 1
        epoch = f"{self.epoch}.{self.incarnations}"
        room = self.rooms[name] = Room(name, maker=maker, keep=keep, settings=settings or {},
                                       epoch=epoch, positions=protocol.position_format(epoch))
        return room

    # ------------------------------------------------------------ gateways

    def gateway_hello(self, gateway: str, index: int, clients: Iterable[tuple[str, Sequence[str]]],
                      now: float, users: Mapping[str, str] | None = None,
                      sessions: Mapping[str, bytes] | None = None) -> None:
        """A gateway (re)started, or resyncs after a processor restart.

        An older gateway in the same slot is gone: its clients are away. The clients
        listed are made to match exactly, so a resync after a processor restart
        restores memberships (and sessions: `sessions` maps clients to their session
        hashes) without telling the clients anything; an away client listed is back.
        `users` maps clients to their users (anonymous ones are left out). Gateways are
        trusted: the rooms they list are restored without the join policies. A client
        listed that resumed elsewhere since is stale here: that connection is closed.
        """
        users = users or {}
        sessions = sessions or {}
        self.now = now
        for other in [g for g in self.gateways.values() if g.index == index and g.id != gateway]:
            self.drop_gateway(other.id)
        gw = self._gateway(gateway, now)
        gw.index = index
        listed = dict(clients)
        for client in [c for c in gw.clients if c not in listed]:
            self.client_disconnected(client)
        for client, rooms in listed.items():
            state = self.clients.get(client)
            session = sessions.get(client, b"")
            if state is None:
                self._connect(gw, client, users.get(client, ""), session)
                state = self.clients[client]
            elif state.gateway != gateway:
                if state.gateway or (session and state.session and session != state.session):
                    self.out.close(gateway, client, RESUMED_ELSEWHERE, "resumed elsewhere")
                    continue
                self._back(state, gw)
            if client in users:
                state.user = users[client]
            if session and session != state.session:
                self.sessions.pop(state.session, None)
                state.session = session
                self.sessions[session] = client
            have = state.rooms
            for room in [r for r in have if r not in rooms and r != LOBBY]:
                self._leave(client, room, notify=True)  # the others must hear of it
            for room in rooms:
                if room not in have and valid_room_name(room):
                    self._join(client, room, notify=False, mirror=False)

    def gateway_seen(self, gateway: str, now: float) -> None:
        self.now = now
        gw = self.gateways.get(gateway)
        if gw is not None:
            gw.last_seen = now

    def knows_gateway(self, gateway: str) -> bool:
        return gateway in self.gateways

    def drop_gateway(self, gateway: str) -> None:
        """The gateway died (or a new one took its slot): its clients are away, as when
        their connections were lost (with no resume window: they leave, with every event
        and notice)."""
        gw = self.gateways.pop(gateway, None)
        if gw is None:
            return
        for client in list(gw.clients):
            self.client_away(client, self.now)

    def expire(self, now: float) -> list[str]:
        """Drop gateways and watchers that missed their heartbeats, end the sessions whose
        window passed, forget history older than `history_age`; returns gateway IDs dropped."""
        self.now = now
        dead = [g.id for g in self.gateways.values() if now - g.last_seen > self.gateway_timeout]
        for gateway in dead:
            self.drop_gateway(gateway)
        for watcher in list(self.watchers.values()):
            if watcher.alive and now - watcher.last_seen > self.watcher_timeout:
                self.watcher_gone(watcher.id)
        while self.away:
            client, deadline = next(iter(self.away.items()))
            if deadline > now:
                break
            state = self.clients[client]
            self._remember_expired(state.session)
            self._end(state)
        oldest = now - self.history_age
        for room in self.rooms.values():
            history = room.history
            while history and history[0][3] < oldest:
                self._drop_oldest(room)
        if self.history_held > self.history_budget:
            self._over_budget()
        return dead

    def _remember_expired(self, session: bytes) -> None:
        if session:
            if len(self.expired) >= EXPIRED_KEPT:
                del self.expired[next(iter(self.expired))]
            self.expired[session] = None

    def _gateway(self, gateway: str, now: float) -> GatewayEntry:
        gw = self.gateways.get(gateway)
        if gw is None:
            gw = self.gateways[gateway] = GatewayEntry(gateway, -1, now)
        gw.last_seen = now
        return gw

    # ------------------------------------------------------------ clients

    def client_connected(self, client: str, now: float, user: str = "",
                         session_hash: bytes = b"") -> None:
        """A gateway accepted `client`; `user` is its token's `sub` (empty: anonymous);
        `session_hash` the SHA-256 of the resume secret it was given (empty: none)."""
        self.now = now
        gw = self._gateway(gateway_of(client), now)
        if client not in self.clients:
            self._connect(gw, client, user, session_hash)

    def _connect(self, gw: GatewayEntry, client: str, user: str = "", session: bytes = b"") -> None:
        self.clients[client] = ClientEntry(client, gw.id, user=user, session=session)
        if session:
            self.sessions[session] = client
        gw.clients.add(client)
        self._add_member(self.rooms[LOBBY], client, gw.id)
        self._event(EventKind.CLIENT_CONNECTED, client, "", self._owner_id(LOBBY))

    def client_disconnected(self, client: str, gateway: str | None = None) -> None:
        """The client closed cleanly (or was closed for cause): it leaves now. A report
        from a `gateway` the client is not on (it resumed elsewhere since) is stale: ignored."""
        state = self.clients.get(client)
        if state is None or (gateway is not None and state.gateway != gateway):
            return
        self._end(state)

    def client_away(self, client: str, now: float, gateway: str | None = None) -> None:
        """The client's connection ended otherwise (lost, its gateway restarted or died):
        it keeps its ID, session and rooms, on no gateway, until it resumes or its window
        passes; its rooms' watchers hear it is away, the other members nothing. Without a
        session or a window it leaves now. Stale reports are ignored, as in
        `client_disconnected`."""
        state = self.clients.get(client)
        if state is None or not state.gateway or (gateway is not None and state.gateway != gateway):
            return
        if not state.session or self.resume_window <= 0:
            return self._end(state)
        self._detach(state)
        state.away_seq = self.seq
        self.away[client] = now + self.resume_window
        for room in sorted(state.rooms):
            self._event(EventKind.CLIENT_AWAY, client, room, self._owner_id(room))
        return None

    def _end(self, state: ClientEntry) -> None:
        """The client is gone for good: it leaves every room, with the notices and events."""
        client = state.id
        for room in list(state.rooms):
            if room != LOBBY:
                self._leave(client, room, notify=True, mirror=False)
        self._remove_member(self.rooms[LOBBY], client, state.gateway)
        del self.clients[client]
        self.away.pop(client, None)
        if self.sessions.get(state.session) == client:
            del self.sessions[state.session]
        gw = self.gateways.get(state.gateway)
        if gw is not None:
            gw.clients.discard(client)
        self._event(EventKind.CLIENT_DISCONNECTED, client, "", self._owner_id(LOBBY), state.user)

    def _detach(self, state: ClientEntry) -> None:
        """Take a client off its gateway (its memberships stay)."""
        gateway = state.gateway
        for name in state.rooms:
            counts = self.rooms[name].gateways
            counts[gateway] -= 1
            if counts[gateway] <= 0:
                del counts[gateway]
        gw = self.gateways.get(gateway)
        if gw is not None:
            gw.clients.discard(state.id)
        state.gateway = ""

    def _attach(self, state: ClientEntry, gw: GatewayEntry) -> None:
        for name in state.rooms:
            self.rooms[name].gateways[gw.id] += 1
        gw.clients.add(state.id)
        state.gateway = gw.id

    def _back(self, state: ClientEntry, gw: GatewayEntry) -> None:
        """An away client is on `gw` again (resumed, or listed by its gateway's hello)."""
        self.away.pop(state.id, None)
        self._attach(state, gw)
        for room in sorted(state.rooms):
            self._event(EventKind.CLIENT_BACK, state.id, room, self._owner_id(room))

    # ------------------------------------------------------------ resume

    def resume(self, gateway: str, link: str, session_hash: bytes, new_session_hash: bytes,
               user: str, epoch: str, seq: int, now: float) -> None:
        """A connection on `gateway` presents a session (`session_hash`), with the client's
        last position (`epoch` and `seq`; `epoch` empty: unknown). Answered with
        `Outbox.resumed`: the client, its rooms and every room and direct message after
        that position (the frames it was not excluded from, in seq order); or a refusal:
        `expired` or `unknown-session` (the hash is not, or no longer, a session),
        `user-mismatch` (the session stays as it is), `history-lost` (the epoch changed or
        a message it missed is no longer held: the session ends now). A session still
        connected is taken over (its old connection is closed); the hash rotates to
        `new_session_hash`, so a second resume of the same secret is `unknown-session`."""
        self.now = now
        gw = self._gateway(gateway, now)
        client = self.sessions.get(session_hash)
        state = self.clients.get(client) if client is not None else None
        if state is None:
            reason = "expired" if session_hash in self.expired else "unknown-session"
            return self.out.resumed(gateway, link, reason=reason, epoch=self.epoch)
        if state.user != user:
            return self.out.resumed(gateway, link, reason="user-mismatch", epoch=self.epoch)
        if epoch:
            start = seq if epoch == self.epoch else -1
        else:
            start = state.away_seq if not state.gateway else self.seq
        replay = self._missed(state, start) if start >= 0 else None
        if replay is None:
            self._end(state)
            return self.out.resumed(gateway, link, reason="history-lost", epoch=self.epoch)
        if state.gateway:  # its old connection was not noticed dead yet: it is taken over
            if state.gateway != gateway:  # (on the same gateway, the gateway closes it itself)
                self.out.close(state.gateway, client or "", RESUMED_ELSEWHERE, "resumed elsewhere")
            self._detach(state)
        del self.sessions[session_hash]
        state.session = new_session_hash
        self.sessions[new_session_hash] = state.id
        self._back(state, gw)
        self.out.resumed(gateway, link, state.id, rooms=sorted(r for r in state.rooms if r != LOBBY),
                         replay=replay, epoch=self.epoch)
        return None

    def _missed(self, state: ClientEntry, start: int) -> list[bytes] | None:
        """The frames for `state` after seq `start`, in seq order; None if one is not held."""
        if start > self.seq:  # a position this epoch never reached: not ours to trust
            return None
        client = state.id
        runs: list[list[tuple[int, bytes]]] = []
        for name in state.rooms:
            room = self.rooms[name]
            since = max(start, room.members[client])
            if room.dropped > since:
                return None
            run: list[tuple[int, bytes]] = []
            for s, frame, exclude, _ in reversed(room.history):  # the newest are the missed
                if s <= since:
                    break
                if client not in exclude:
                    run.append((s, frame))
            if run:
                run.reverse()
                runs.append(run)
        if state.direct_dropped > start:
            return None
        direct = [(s, frame) for s, frame in state.direct or () if s > start]
        if direct:
            runs.append(direct)
        return [frame for _, frame in heapq.merge(*runs)]

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
        if action == "history":
            return self._history(client, target, body, request_id)
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
        seq = self.seq = self.seq + 1
        offset = room.offset = room.offset + 1
        position = room.positions % (offset, seq)
        frame = protocol.encode(action, target, body, client, position=position)
        if not request_id:
            self.out.broadcast(room.gateways, target, frame)
        else:
            # The sender's own copy is its acknowledgement: it alone carries the request id.
            self.out.broadcast(room.gateways, target, frame, (client,))
            self.out.deliver(self.clients[client].gateway,
                             protocol.encode(action, target, body, client, request_id=request_id,
                                             position=position),
                             clients=(client,))
        # _keep, inlined (the hot path); a replay gives the sender the copy without the id
        history = room.history
        if len(history) >= self.history_size:
            if not self.history_size:
                room.dropped = seq
                return None
            old = history.popleft()  # _drop_oldest, inlined
            room.dropped = old[0]
            self.history_held -= len(old[1])
        history.append((seq, frame, (), self.now))
        self.history_held += len(frame)
        return None

    def _keep(self, room: Room, seq: int, frame: bytes, exclude: Sequence[str]) -> None:
        """Hold a room message for resumes and `history`, within --history-size."""
        history = room.history
        if len(history) >= self.history_size:
            if not self.history_size:
                room.dropped = seq
                return
            self._drop_oldest(room)
        history.append((seq, frame, exclude, self.now))
        self.history_held += len(frame)

    def _drop_oldest(self, room: Room) -> None:
        """Forget a room's oldest held message (by size, age or the budget)."""
        seq, frame, _, _ = room.history.popleft()
        room.dropped = seq
        self.history_held -= len(frame)

    def held_bytes(self) -> int:
        """What every room's history holds, by the budget's estimate (frames plus each
        entry's own cost)."""
        return self.history_held + HELD_OVERHEAD * sum(len(r.history) for r in self.rooms.values())

    def _over_budget(self) -> None:
        """Drop the oldest messages held anywhere until the histories fit `history_bytes`."""
        rooms = self.rooms
        heads = [(room.history[0][0], name) for name, room in rooms.items() if room.history]
        heapq.heapify(heads)
        held = self.held_bytes()
        while held > self.history_budget and heads:
            _, name = heapq.heappop(heads)
            room = rooms[name]
            before = self.history_held
            self._drop_oldest(room)
            held -= before - self.history_held + HELD_OVERHEAD
            if room.history:
                heapq.heappush(heads, (room.history[0][0], name))

    def _room_message(self, room: Room, action: str, body: bytes, sender: str,
                      exclude: Sequence[str] = (), own: str = "", request_id: bytes = b"") -> None:
        """A notice to a room, numbered and held: to its members but `exclude`; `own`: a
        client (excluded from the broadcast) given its own copy, with `request_id`."""
        seq = self.seq = self.seq + 1
        offset = room.offset = room.offset + 1
        position = room.positions % (offset, seq)
        frame = protocol.encode(action, room.name, body, sender, position=position)
        self.out.broadcast(room.gateways, room.name, frame, exclude)
        if own:
            gateway = self.clients[own].gateway
            if gateway:
                self.out.deliver(gateway, protocol.encode(
                    action, room.name, body, sender, request_id=request_id, position=position)
                    if request_id else frame, clients=(own,))
            exclude = tuple(c for c in exclude if c != own)
        self._keep(room, seq, frame, exclude)

    def _direct_message(self, recipients: Sequence[str], frame_at: Callable[[int], bytes]) -> None:
        """A direct message (`frame_at(seq)` builds it), numbered and held for each recipient;
        delivered to those connected (an away one gets it when it resumes)."""
        seq = self.seq = self.seq + 1
        frame = frame_at(seq)
        by_gateway: dict[str, list[str]] = {}
        size = self.direct_history
        for client in recipients:
            state = self.clients[client]
            direct = state.direct
            if direct is None:
                direct = state.direct = deque()
            if len(direct) >= size:
                if not size:
                    state.direct_dropped = seq
                else:
                    state.direct_dropped = direct.popleft()[0]
            if size:
                direct.append((seq, frame))
            if state.gateway:
                by_gateway.setdefault(state.gateway, []).append(client)
        for gateway, group in by_gateway.items():
            self.out.deliver(gateway, frame, clients=group)

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

    def _history(self, client: str, target: str, body: bytes, request_id: bytes) -> None:
        """One page of a room's held messages after offset `since`, as the frames its
        members received (those the client was excluded from left out). Of a room no
        watcher claims, or one the client is a member of; of a private room only for its
        members (others cannot tell if it exists). `history-lost` when messages after
        `since` are no longer held, or `epoch` is not the room's."""
        if not target:
            return self._error(client, ErrorCode.MISSING_TARGET, "history", target, request_id)
        room = self.rooms.get(target)
        member = room is not None and client in room.members
        if not member and (target.startswith(PRIVATE_PREFIX) or self._owner(target) is not None):
            return self._error(client, ErrorCode.FORBIDDEN, "history", target, request_id)
        if room is None:
            return self._error(client, ErrorCode.UNKNOWN_ROOM, "history", target, request_id)
        args = protocol.decode_body(body) if body != protocol.EMPTY_BODY else {}
        since, limit, epoch = args.get("since", 0), args.get("limit", MAX_LIST_PAGE), args.get("epoch")
        if since is None:
            since = 0
        if limit is None:
            limit = MAX_LIST_PAGE
        if (not isinstance(since, int) or isinstance(since, bool) or not isinstance(limit, int)
                or isinstance(limit, bool) or (epoch is not None and not isinstance(epoch, str))):
            return self._error(client, ErrorCode.BAD_BODY, "history", target, request_id,
                               detail=f"history: {HISTORY_BODY}")
        limit = min(max(limit, 1), MAX_LIST_PAGE)
        since = max(since, 0)
        history = room.history
        oldest = room.offset - len(history) + 1  # offset of history[0]
        if (epoch is not None and epoch != room.epoch) or (since < oldest - 1 and since < room.offset):
            return self._error(client, ErrorCode.HISTORY_LOST, "history", target, request_id,
                               detail=f"room epoch {room.epoch}, oldest offset held {oldest}")
        frames: list[bytes] = []
        last = since
        start = max(since - oldest + 1, 0)
        for offset, (_, frame, exclude, _) in enumerate(islice(history, start, None), oldest + start):
            if len(frames) == limit:
                break
            last = offset
            if client not in exclude:
                frames.append(frame)
        more = last < room.offset
        page = b"".join((protocol.encode_body({"epoch": room.epoch})[:-1], b',"messages":[',
                         b",".join(frames), b'],"next":', b"%d" % last if more else b"null", b"}"))
        self._to_client(client, protocol.encode("history", target, page, request_id=request_id))
        return None

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
        self._direct_message((target,), lambda seq: protocol.encode(
            action, target, body, client, is_target_client=True,
            position=self.direct_position % seq))
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
            room = self._new_room(name, maker=client)
            self._event(EventKind.ROOM_CREATED, "", name, self._owner_id(name))
        gateway = self.clients[client].gateway
        self._add_member(room, client, gateway)
        if mirror and gateway:
            self.out.membership(gateway, client, name, True)
        if notify and self._owner(name) is None:
            body = protocol.encode_body({"client": client, "room": name})
            self._room_message(room, "client-joined-room", body, client, exclude=(client,),
                               own=client, request_id=request_id)
        self._event(EventKind.CLIENT_JOINED_ROOM, client, name, self._owner_id(name))

    def _leave(self, client: str, name: str, *, notify: bool, mirror: bool = True,
               request_id: bytes = b"") -> None:
        room = self.rooms[name]
        gateway = self.clients[client].gateway
        if notify and self._owner(name) is None:
            body = protocol.encode_body({"client": client, "room": name})
            # still connected (`mirror`): it hears of its own leave
            self._room_message(room, "client-left-room", body, client, exclude=(client,),
                               own=client if mirror else "", request_id=request_id)
        self._remove_member(room, client, gateway)
        if mirror and gateway:
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
            self.history_held -= sum(len(frame) for _, frame, _, _ in room.history)
            room.history.clear()
            self._event(EventKind.ROOM_DELETED, "", room.name, self._owner_id(room.name))
            for w in self.watchers.values():
                w.assigned.discard(room.name)
            self._claims_changed()

    def _add_member(self, room: Room, client: str, gateway: str) -> None:
        """`gateway` empty: the client is away (counted on no gateway)."""
        room.members[client] = self.seq
        if gateway:
            room.gateways[gateway] += 1
        self.clients[client].rooms.add(room.name)

    def _remove_member(self, room: Room, client: str, gateway: str) -> None:
        del room.members[client]
        if gateway:
            room.gateways[gateway] -= 1
            if room.gateways[gateway] <= 0:
                del room.gateways[gateway]
        self.clients[client].rooms.discard(room.name)

    # ------------------------------------------------------------ output helpers

    def _to_client(self, client: str, frame: bytes) -> None:
        """An answer to the client (not numbered, not held): on its gateway, if connected."""
        state = self.clients.get(client)
        gateway = state.gateway if state is not None else gateway_of(client)
        if gateway:
            self.out.deliver(gateway, frame, clients=(client,))

    def _reply(self, client: str, action: str, target: str, body: dict[str, object],
               request_id: bytes) -> None:
        self._to_client(client, protocol.encode(action, target, protocol.encode_body(body),
                                                request_id=request_id))

    def _error(self, client: str, code: ErrorCode, action: str, target: str,
               request_id: bytes, detail: str = "") -> None:
        self._to_client(client, protocol.error(code, action=action, target=target,
                                               request_id=request_id, detail=detail))

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
        self._new_room(room, keep=True, settings=dict(c.settings))
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
        room = self.rooms[c.room]
        seq = self.seq = self.seq + 1
        offset = room.offset = room.offset + 1
        frame = protocol.stamp(c.frame, room.positions % (offset, seq))
        self.out.broadcast(room.gateways, room.name, frame, c.exclude)
        self._keep(room, seq, frame, c.exclude)
        return None

    def _cmd_send_clients(self, c: SendClients) -> CommandResult:
        unknown = [client for client in c.clients if client not in self.clients]
        if unknown:
            return ErrorCode.UNKNOWN_CLIENT, ",".join(unknown)
        recipients = tuple(dict.fromkeys(c.clients))
        self._direct_message(recipients, lambda seq: protocol.stamp(
            c.frame, self.direct_position % seq))
        return None

    def _cmd_disconnect(self, c: Disconnect) -> CommandResult:
        state = self.clients.get(c.client)
        if state is None:
            return ErrorCode.UNKNOWN_CLIENT, c.client
        if not state.gateway:  # away: there is no connection to close; it leaves now
            self._end(state)
            return None
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
        held = 0
        for name, room in self.rooms.items():
            assert room.members or room.keep, f"empty room {name} was kept"
            for client in room.members:
                assert name in self.clients[client].rooms
            # only present members are counted: a broadcast never targets an away one's
            counted = Counter(g for g in (self.clients[c].gateway for c in room.members) if g)
            assert counted == room.gateways, (name, counted, room.gateways)
            held += sum(len(h[1]) for h in room.history)
            seqs = [h[0] for h in room.history]
            assert len(seqs) <= self.history_size, name
            assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), (name, seqs)
            assert not seqs or room.dropped < seqs[0] and seqs[-1] <= self.seq, name
            assert len(seqs) <= room.offset and room.dropped <= self.seq, name
        assert held == self.history_held, (held, self.history_held)  # frame bytes held
        for client, state in self.clients.items():
            assert LOBBY in state.rooms
            for name in state.rooms:
                assert client in self.rooms[name].members
            if state.gateway:
                assert client in self.gateways[state.gateway].clients
                assert client not in self.away
            else:  # away: on no gateway, still in its rooms, within its window
                assert client in self.away and state.session
                assert all(client not in g.clients for g in self.gateways.values())
            if state.session:
                assert self.sessions[state.session] == client
            seqs = [d[0] for d in state.direct or ()]
            assert len(seqs) <= self.direct_history
            assert all(a < b for a, b in zip(seqs, seqs[1:], strict=False)), (client, seqs)
        for session, client in self.sessions.items():
            assert self.clients[client].session == session
        assert set(self.away) <= set(self.clients)
