"""The processor's state and every routing decision, with no I/O.

`Mesh` coordinates four parts, each with its own state, `check()` and `snapshot()`
(plain data: the state a replica would need), none of which decides or sends
anything: `Rooms` (rooms.py: rooms, members, per-gateway counts), `Sessions`
(sessions.py: clients, gateways, sessions, away clients), `History` (history.py:
numbered, held messages) and `Claims` (claims.py: watchers, their claims and
unacknowledged frames). `Mesh` holds the rules: inputs are method calls (a gateway
said hello, a client frame arrived, a watcher sent a command, time passed); outputs
go to an `Outbox`, a sink the processor service turns into ZeroMQ messages and tests
turn into lists. Nothing here reads a clock, touches a socket or logs.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Any, Protocol, assert_never

from . import LOBBY, protocol
from .claims import Claims, Unacked, WatcherEntry
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
from .config import DIRECT_MODES
from .errors import CloseCode, ErrorCode
from .history import HELD_OVERHEAD as HELD_OVERHEAD
from .history import History
from .rooms import MAX_ROOM_NAME as MAX_ROOM_NAME
from .rooms import PRIVATE_PREFIX, Room, Rooms, RoomView, valid_room_name
from .sessions import ClientEntry, GatewayEntry, Sessions, gateway_of

if TYPE_CHECKING:
    from .meshstream_pb2 import ProcessorState

MAX_LIST_PAGE = 100  # names in one `room-list` or `member-list` page: the default and the most
RESUMED_ELSEWHERE = 4002  # close code of a connection whose session another one resumed
HISTORY_BODY = ("since must be an offset (an integer 0 to 2**63-1), limit an integer, "
                "epoch a string (the room's epoch)")
REQUESTS = frozenset(("list-rooms", "list-members", "history"))  # answered by the processor

# Decides a client's join of an unclaimed private room: (message_body.token, the client's
# user, the room) -> admitted. The processor builds it from auth.Tokens.room and the wall
# clock, so the core stays pure; tests pass a fake.
RoomPass = Callable[[object, str, str], bool]


PAGE_BODY = ("limit must be an integer (-2**63 to 2**63-1) and after a string (the last name "
             "of the page before)")


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
              detail: str = "", rooms: Sequence[RoomView] = (), answer: Answer | None = None) -> None:
        """Answer a watcher's command (or hello, command 0); `answer`: a success's contents
        (its rooms instead of `rooms`)."""

    def welcome(self, watcher: str, rooms: Sequence[RoomView]) -> None:
        """Accept a watcher's hello, with the state of the rooms it claims."""

    def sync(self, gateway: str, clients: Sequence[tuple[str, Sequence[str]]],
             closing: Sequence[tuple[str, int, str]]) -> None:
        """Answer `gateway`'s Resync: its clients with their rooms (the lobby left out), and
        the closes asked for and not yet done, as (client, code, reason)."""

    def resumed(self, gateway: str, link: str, client: str = "", reason: str = "",
                rooms: Sequence[str] = (), replay: Sequence[bytes] = (), epoch: str = "") -> None:
        """Answer `gateway`'s ResumeRequest for `link` (in its ordered stream): `client`
        resumed, in `rooms` (the lobby left out), missed `replay`; or refused for `reason`."""



CommandResult = tuple[ErrorCode, str] | list[RoomView] | Answer | None
IDEMPOTENCY_AGE = 300.0  # seconds a command's idempotency key is remembered (the server API's)
IDEMPOTENCY_KEYS = 65536  # keys remembered at most (the oldest forgotten first)
MAX_IDEMPOTENCY_KEY = 128  # characters
MAX_MEMBER_PAGE = 1000  # members in one page of a ROOM query (the server API's room page)


class Mesh:
    """All rooms and memberships, and the rules that route client frames: the coordinator
    of the parts, which it keeps consistent with each other (`check`)."""

    def __init__(self, out: Outbox, *, gateway_timeout: float = 3.0,
                 watcher_timeout: float = 3.0, room_pass: RoomPass | None = None,
                 max_rooms_per_client: int = 0, direct_messages: str = "on",
                 epoch: str = "0", resume_window: float = 0.0, history_size: int = 1000,
                 history_age: float = 300.0, direct_history: int = 100,
                 history_bytes: int = 128 << 20, direct_history_age: float = 300.0,
                 direct_history_bytes: int = 32 << 20) -> None:
        """`room_pass` None: no client joins an unclaimed private room by itself;
        `max_rooms_per_client` 0: no limit; `direct_messages`: one of DIRECT_MODES;
        `epoch`: the processor's (room epochs and resume positions carry it);
        `resume_window` 0: a lost connection leaves at once, as a clean close does;
        `history_size` room messages (0: none) younger than `history_age` seconds are
        kept per room, all rooms within `history_bytes`; the last `direct_history` direct
        messages younger than `direct_history_age` per client, all clients within
        `direct_history_bytes`."""
        if direct_messages not in DIRECT_MODES:
            raise ValueError(f"direct_messages must be one of {', '.join(DIRECT_MODES)}")
        self.out = out
        self.gateway_timeout = gateway_timeout
        self.watcher_timeout = watcher_timeout
        self.room_pass = room_pass
        self.max_rooms_per_client = max(0, max_rooms_per_client)
        self.direct_messages = direct_messages
        self.epoch = epoch
        self.resume_window = max(0.0, resume_window)
        self.membership = Rooms(epoch)
        self.presence = Sessions()
        self.history = History(epoch, history_size=history_size, history_age=history_age,
                               history_bytes=history_bytes, direct_history=direct_history,
                               direct_history_age=direct_history_age,
                               direct_history_bytes=direct_history_bytes)
        self.claims = Claims()
        # The parts' tables, shared (never rebound): what routing reads for every frame.
        self.rooms = self.membership.rooms
        self.clients = self.presence.clients
        self.gateways = self.presence.gateways
        self.sessions = self.presence.sessions
        self.away = self.presence.away
        self.watchers = self.claims.watchers
        self.room_streams = self.history.rooms.streams
        self._owners = self.claims.owners
        self.event_seq = 0
        self.now = 0.0  # the latest time passed in (held messages are stamped with it)
        self._new_room(LOBBY, keep=True)
        # idempotency key -> (when, the first success's answer), oldest first (Mesh.command)
        self.idempotent: dict[str, tuple[float, Answer | None]] = {}

    @property
    def seq(self) -> int:
        """Of the last room or direct message: one sequence per processor epoch."""
        return self.history.seq

    def _new_room(self, name: str, *, maker: str = "", keep: bool = False,
                  settings: dict[str, str] | None = None) -> Room:
        room = self.membership.create(name, maker=maker, keep=keep, settings=settings)
        self.history.open(name, room.epoch)
        return room

    # ------------------------------------------------------------ gateways

    def gateway_listed(self, gateway: str, index: int,
                       listed: Sequence[tuple[str, Sequence[str], str, bytes]],
                       resumes: Sequence[bytes], now: float) -> None:
        """A gateway's hello as it comes: its clients as (client, rooms, user, session hash)
        and the new session hashes of the resumes asked in the same batch. Its list is what
        it had applied when it sent the hello: a client this processor knows keeps its rooms
        here (ops to the gateway may have been on their way; its sync after the welcome
        repairs the mirror). A client resumed here after the gateway sent the hello (the
        answer on its way; or away since, the gateway dropped) is not listed, but its
        resume, asked again after the hello, names the session now in force: it stays."""
        known = self.clients
        clients = [(c, list(rooms) if c not in known else [r for r in known[c].rooms if r != LOBBY])
                   for c, rooms, _, _ in listed]
        sessions = {c: session for c, _, _, session in listed if session}
        names = {c for c, _, _, _ in listed}
        for new_session in resumes:
            client = self.sessions.get(new_session)
            state = known.get(client) if client is not None else None
            if state is not None and client not in names and state.gateway in (gateway, ""):
                clients.append((state.id, [room for room in state.rooms if room != LOBBY]))
                sessions[state.id] = new_session
        self.gateway_hello(gateway, index, clients, now, {c: u for c, _, u, _ in listed if u}, sessions)

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
        gw = self.presence.gateway(gateway, now, index)
        listed = dict(clients)
        # Sets are walked sorted wherever the order shows (outputs, seqs): a replay in another
        # process (another string hash seed), or a loaded snapshot, must do the same.
        for client in sorted(c for c in gw.clients if c not in listed):
            self.client_disconnected(client)
        for client, rooms in listed.items():
            state = self.clients.get(client)
            session = sessions.get(client, b"")
            if state is None:
                state = self._connect(gw, client, users.get(client, ""), session)
            elif state.gateway != gateway:
                if state.gateway or (session and state.session and session != state.session):
                    self.out.close(gateway, client, RESUMED_ELSEWHERE, "resumed elsewhere")
                    continue
                self._back(state, gw)
            if client in users:
                state.user = users[client]
            if session and session != state.session:
                self.presence.set_session(state, session)
            have = state.rooms
            for room in sorted(r for r in have if r not in rooms and r != LOBBY):
                self._leave(client, room, notify=True)  # the others must hear of it
            for room in rooms:
                if room not in have and valid_room_name(room):
                    self._join(client, room, notify=False, mirror=False)

    def gateway_seen(self, gateway: str, now: float) -> None:
        self.now = now
        self.presence.seen(gateway, now)

    def knows_gateway(self, gateway: str) -> bool:
        return gateway in self.gateways

    def gateway_sync(self, gateway: str) -> None:
        """The gateway missed output (a gap): tell it, in its ordered stream, its clients as
        the mesh knows them, each with its rooms (`Outbox.sync`), and the closes asked for
        that it has not reported done."""
        gw = self.gateways.get(gateway)
        if gw is None:
            return
        clients = [(c, sorted(r for r in self.clients[c].rooms if r != LOBBY))
                   for c in sorted(gw.clients)]
        self.out.sync(gateway, clients, [(c, code, reason) for c, (code, reason) in gw.closing.items()])

    def drop_gateway(self, gateway: str) -> None:
        """The gateway died (or a new one took its slot): its clients are away, as when
        their connections were lost (with no resume window: they leave, with every event
        and notice)."""
        gw = self.presence.drop_gateway(gateway)
        if gw is None:
            return
        for client in sorted(gw.clients):
            self.client_away(client, self.now)

    def expire(self, now: float) -> list[str]:
        """Drop gateways and watchers that missed their heartbeats, end the sessions whose
        window passed, apply the history's bounds (`History.trim`); returns gateway IDs dropped."""
        self.now = now
        dead = self.presence.silent(now, self.gateway_timeout)
        for gateway in dead:
            self.drop_gateway(gateway)
        for watcher in self.claims.silent(now, self.watcher_timeout):
            self.watcher_gone(watcher)
        while (state := self.presence.due(now)) is not None:
            self.presence.remember_expired(state.session)
            self._end(state)
        self.history.trim(now)
        return dead

    def take_drops(self) -> Counter[str]:
        """The held messages dropped to fit a budget since the last call, by reason."""
        return self.history.take_drops()

    # ------------------------------------------------------------ clients

    def client_connected(self, client: str, now: float, user: str = "",
                         session_hash: bytes = b"") -> None:
        """A gateway accepted `client`; `user` is its token's `sub` (empty: anonymous);
        `session_hash` the SHA-256 of the resume secret it was given (empty: none)."""
        self.now = now
        gw = self.presence.gateway(gateway_of(client), now)
        if client not in self.clients:
            self._connect(gw, client, user, session_hash)

    def _connect(self, gw: GatewayEntry, client: str, user: str = "", session: bytes = b"") -> ClientEntry:
        state = self.presence.connect(gw, client, user, session)
        self._add_member(self.rooms[LOBBY], state)
        self._event(EventKind.CLIENT_CONNECTED, client, "", self.claims.owner_id(LOBBY))
        return state

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
        self.membership.detach(state.rooms, state.gateway)
        self.presence.go_away(state, now + self.resume_window, self.history.seq)
        for room in sorted(state.rooms):
            self._event(EventKind.CLIENT_AWAY, client, room, self.claims.owner_id(room))
        return None

    def _end(self, state: ClientEntry) -> None:
        """The client is gone for good: it leaves every room, with the notices and events."""
        client = state.id
        for room in sorted(state.rooms):
            if room != LOBBY:
                self._leave(client, room, notify=True, mirror=False)
        self._remove_member(self.rooms[LOBBY], state)
        self.presence.end(state)
        self.history.forget(client)
        self._event(EventKind.CLIENT_DISCONNECTED, client, "", self.claims.owner_id(LOBBY), state.user)

    def _detach(self, state: ClientEntry) -> None:
        """Take a client off its gateway (its memberships stay)."""
        self.membership.detach(state.rooms, state.gateway)
        self.presence.detach(state)

    def _back(self, state: ClientEntry, gw: GatewayEntry) -> None:
        """An away client is on `gw` again (resumed, or listed by its gateway's hello)."""
        self.presence.back(state, gw)
        self.membership.attach(state.rooms, gw.id)
        for room in sorted(state.rooms):
            self._event(EventKind.CLIENT_BACK, state.id, room, self.claims.owner_id(room))

    # ------------------------------------------------------------ resume

    def resume(self, gateway: str, link: str, session_hash: bytes, new_session_hash: bytes,
               user: str, positions: Mapping[str, int], now: float) -> None:
        """A connection on `gateway` presents a session (`session_hash`), with the client's
        `positions`: per stream epoch (a room's, or the processor's for its direct
        messages), the offset of the last message it received there. Answered with
        `Outbox.resumed`: the client, its rooms and every room and direct message after
        those positions (a stream not named: after it went away; in a room it joined
        meanwhile, from its join on), the frames it was not excluded from, in the order
        they were sent; or a refusal: `expired` or `unknown-session` (the hash is not, or
        no longer, a session), `user-mismatch` (the session stays as it is),
        `history-lost` (a message it missed is no longer held, a position is past its
        stream's newest, or one of another processor (before the first "." of an epoch):
        the session ends now; also for an unknown session, lost with the processor that
        held it). A position of ours that names no stream of the client's (a room made
        again since) is as if not given. A session
        still connected is taken over (its old connection is closed); the hash rotates to
        `new_session_hash`, so a second resume of the same secret is `unknown-session`."""
        self.now = now
        gw = self.presence.gateway(gateway, now)
        again = self.sessions.get(new_session_hash)
        if again is not None and self.clients[again].gateway in (gateway, ""):
            # asked again (after a hello or a gap) once it succeeded here: its answer may
            # have been lost, so it is answered again, the new session being the one in force
            session_hash = new_session_hash
        client = self.sessions.get(session_hash)
        state = self.clients.get(client) if client is not None else None
        if state is None:
            if session_hash in self.presence.expired:
                reason = "expired"
            elif any(e.partition(".")[0] != self.epoch for e in positions):
                reason = "history-lost"  # the processor restarted since, and lost it with the rest
            else:
                reason = "unknown-session"
            return self.out.resumed(gateway, link, reason=reason, epoch=self.epoch)
        if state.user != user:
            return self.out.resumed(gateway, link, reason="user-mismatch", epoch=self.epoch)
        replay = self._missed(state, positions)
        if replay is None:
            self._end(state)
            return self.out.resumed(gateway, link, reason="history-lost", epoch=self.epoch)
        if state.gateway:  # its old connection was not noticed dead yet: it is taken over
            if state.gateway != gateway:  # (on the same gateway, the gateway closes it itself)
                self.out.close(state.gateway, client or "", RESUMED_ELSEWHERE, "resumed elsewhere")
            self._detach(state)
        self.presence.set_session(state, new_session_hash)
        self._back(state, gw)
        self.out.resumed(gateway, link, state.id, rooms=sorted(r for r in state.rooms if r != LOBBY),
                         replay=replay, epoch=self.epoch)
        return None

    def _missed(self, state: ClientEntry, positions: Mapping[str, int]) -> list[bytes] | None:
        """The frames `state` missed after its `positions` (see `resume`), in the order
        they were sent; None if one is not held, a position is past its stream's newest, or
        of another processor's epoch.
        Each position becomes the seq its stream's replay starts after (`History.after`);
        a stream not named starts after the seq when the client went away (still
        connected: now, nothing), and a room never before the client joined it."""
        client, history = state.id, self.history
        if any(e.partition(".")[0] != self.epoch for e in positions):
            return None  # it had messages of another processor: lost with it
        away = state.away_seq if not state.gateway else history.seq
        start = away
        if self.epoch in positions:  # its direct messages' stream has the processor's epoch
            after = history.direct.after(client, positions[self.epoch])
            if after is None:
                return None
            start = after
        runs = []
        for name in state.rooms:
            room = self.rooms[name]
            since = away
            if room.epoch in positions:
                after = history.rooms.after(name, positions[room.epoch])
                if after is None:
                    return None
                since = after
            runs.append((name, max(since, room.members[client])))
        return history.replay(client, runs, start)

    # ------------------------------------------------------------ client frames

    def client_frame(self, client: str, action: str, target: str, body: bytes = protocol.EMPTY_BODY,
                     is_target_client: bool = False, request_id: bytes = b"") -> None:
        """Route one validated client frame (see docs/protocol.md)."""
        if client not in self.clients:
            return self._error(client, ErrorCode.UNKNOWN_SENDER, action, target, request_id)
        if is_target_client:
            return self._direct(client, action, target, body, request_id)
        if action in REQUESTS:
            if action == "list-rooms":
                return self._list_rooms(client, body, request_id)
            if action == "list-members":
                return self._list_members(client, target, body, request_id)
            return self._history(client, target, body, request_id)
        if not target:
            return self._error(client, ErrorCode.MISSING_TARGET, action, target, request_id)
        try:  # Claims.owner, its cache read inlined (the hot path)
            owner = self._owners[target]
        except KeyError:
            owner = self.claims.owner(target)
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
        # History.position and History.append, inlined: the relay is the hot path, and the
        # two calls cost 7% of it (test_core_parts.py holds this copy to them).
        history = self.history
        stream = self.room_streams[target]
        seq = history.seq + 1
        offset = stream.offset + 1
        position = stream.positions % offset
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
        # held for all (a replay gives the sender the copy without the id)
        history.seq = seq
        stream.offset = offset
        pool = history.rooms
        held = stream.held
        if held is None:
            if not pool.size:
                stream.dropped = seq
                return None
            held = stream.held = deque()
            pool.holding[target] = stream
        elif len(held) >= pool.size:  # full: the oldest makes way
            old = held.popleft()
            stream.dropped = old[0]
            pool.frames += len(frame) - len(old[1])
            held.append((seq, frame, (), self.now))
            return None
        held.append((seq, frame, (), self.now))
        pool.frames += len(frame)
        pool.count += 1
        return None

    def _room_message(self, room: Room, action: str, body: bytes, sender: str,
                      exclude: Sequence[str] = (), own: str = "", request_id: bytes = b"") -> None:
        """A notice to a room, numbered and held: to its members but `exclude`; `own`: a
        client (excluded from the broadcast) given its own copy, with `request_id`."""
        history = self.history
        stream = self.room_streams[room.name]
        position = history.position(stream)
        frame = protocol.encode(action, room.name, body, sender, position=position)
        self.out.broadcast(room.gateways, room.name, frame, exclude)
        if own:
            gateway = self.clients[own].gateway
            if gateway:
                self.out.deliver(gateway, protocol.encode(
                    action, room.name, body, sender, request_id=request_id, position=position)
                    if request_id else frame, clients=(own,))
            exclude = tuple(c for c in exclude if c != own)
        history.append(stream, frame, exclude, self.now)

    def _direct_message(self, recipients: Sequence[str], frame: bytes) -> None:
        """A direct message (`frame` without its position), numbered in each recipient's
        stream and held; each copy delivered to its recipient if connected (an away one
        gets it when it resumes)."""
        clients = self.clients
        for client, copy in self.history.append_direct(recipients, frame, self.now):
            gateway = clients[client].gateway
            if gateway:
                self.out.deliver(gateway, copy, clients=(client,))

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
        owner = self.claims.owner(name)
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
                and name not in self.clients[client].rooms and self.claims.owner(name) is None):
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
        if not protocol.is_integer(limit) or (after is not None and not isinstance(after, str)):
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
        if not member and (target.startswith(PRIVATE_PREFIX) or self.claims.owner(target) is not None):
            return self._error(client, ErrorCode.FORBIDDEN, "history", target, request_id)
        if room is None:
            return self._error(client, ErrorCode.UNKNOWN_ROOM, "history", target, request_id)
        args = protocol.decode_body(body) if body != protocol.EMPTY_BODY else {}
        since, limit, epoch = args.get("since"), args.get("limit"), args.get("epoch")
        if limit is None:
            limit = MAX_LIST_PAGE
        if ((since is not None and not protocol.is_position(since)) or not protocol.is_integer(limit)
                or (epoch is not None and not isinstance(epoch, str))):
            return self._error(client, ErrorCode.BAD_BODY, "history", target, request_id,
                               detail=f"history: {HISTORY_BODY}")
        oldest, newest = self.history.bounds(target)
        if since is None:  # from the oldest held, whatever was trimmed before it
            since = oldest - 1
        if (epoch is not None and epoch != room.epoch) or (since < oldest - 1 and since < newest):
            return self._error(client, ErrorCode.HISTORY_LOST, "history", target, request_id,
                               detail=f"room epoch {room.epoch}, oldest offset held {oldest}")
        frames, after = self.history.page(target, since, min(max(limit, 1), MAX_LIST_PAGE), client)
        page = b"".join((protocol.encode_body({"epoch": room.epoch})[:-1], b',"messages":[',
                         b",".join(frames), b'],"next":', b"null" if after is None else b"%d" % after,
                         b"}"))
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
            if sent := self.out.to_watcher(owner.id, owner.sent + 1, client, action, target, body,
                                           is_target_client, request_id, self.clients[client].user):
                self.claims.forwarded(owner, client, action, target, request_id)
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
        self._direct_message((target,), protocol.encode(
            action, target, body, client, is_target_client=True))
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
            self._event(EventKind.ROOM_CREATED, "", name, self.claims.owner_id(name))
        state = self.clients[client]
        self._add_member(room, state)
        if mirror and state.gateway:
            self.out.membership(state.gateway, client, name, True)
        if notify and self.claims.owner(name) is None:
            body = protocol.encode_body({"client": client, "room": name})
            self._room_message(room, "client-joined-room", body, client, exclude=(client,),
                               own=client, request_id=request_id)
        self._event(EventKind.CLIENT_JOINED_ROOM, client, name, self.claims.owner_id(name))

    def _leave(self, client: str, name: str, *, notify: bool, mirror: bool = True,
               request_id: bytes = b"") -> None:
        room = self.rooms[name]
        state = self.clients[client]
        gateway = state.gateway
        if notify and self.claims.owner(name) is None:
            body = protocol.encode_body({"client": client, "room": name})
            # still connected (`mirror`): it hears of its own leave
            self._room_message(room, "client-left-room", body, client, exclude=(client,),
                               own=client if mirror else "", request_id=request_id)
        self._remove_member(room, state)
        if mirror and gateway:
            self.out.membership(gateway, client, name, False)
        self._event(EventKind.CLIENT_LEFT_ROOM, client, name, self.claims.owner_id(name))
        if not room.members and not room.keep:
            self._delete_room(room)

    def _delete_room(self, room: Room) -> None:
        name = room.name
        notify = self.claims.owner(name) is None  # built-in rooms tell their members
        for client in list(room.members):
            self._leave(client, name, notify=notify)
        if self.membership.delete(name):
            self.history.close(name)
            self._event(EventKind.ROOM_DELETED, "", name, self.claims.owner_id(name))
            self.claims.room_deleted(name)

    def _add_member(self, room: Room, state: ClientEntry) -> None:
        """The client joins `room` from now on (both sides of the membership)."""
        self.membership.add(room, state.id, state.gateway, self.history.seq)
        state.rooms.add(room.name)

    def _remove_member(self, room: Room, state: ClientEntry) -> None:
        self.membership.remove(room, state.id, state.gateway)
        state.rooms.discard(room.name)

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

    def watcher_hello(self, watcher: str, name: str, rooms: Sequence[str], prefixes: Sequence[str],
                      now: float, assigned_rooms: Sequence[str] = ()) -> None:
        """Register a watcher and its claims.

        A claim held by another live watcher is refused (claim-conflict). A watcher
        saying hello under a name already known is that watcher restarted: it takes
        over the old entry, including the rooms assigned to it since (the frames the old
        one never confirmed get `watcher-restarted`). `assigned_rooms` are the rooms a
        `create_room` gave it (of an earlier processor, after a restart or failover):
        claimed like `rooms`, but as assigned ones, so that deleting the room ends the claim.
        """
        claimed = frozenset(rooms) | frozenset(assigned_rooms)
        if not name or any(not valid_room_name(r) for r in claimed) or any(not p for p in prefixes):
            self.out.reply(watcher, 0, ErrorCode.BAD_COMMAND, "hello needs a name and valid claims")
            return
        other = self.claims.conflict(watcher, name, claimed, prefixes)
        if other is not None:
            self.out.reply(watcher, 0, ErrorCode.CLAIM_CONFLICT, f"claimed by watcher {other.name!r}")
            return
        w, unconfirmed = self.claims.register(watcher, name, rooms, prefixes, now, assigned_rooms,
                                              self.rooms)
        self._unconfirmed(unconfirmed)
        self.out.welcome(watcher, [r.view() for r in self.rooms.values() if w.claims(r.name)])

    def watcher_seen(self, watcher: str, now: float, acked: int | None = None) -> bool:
        """A sign of life; `acked` (from heartbeats) is the last frame seq it handled."""
        return self.claims.seen(watcher, now, acked)

    def watcher_goodbye(self, watcher: str, acked: int) -> None:
        """A clean stop: the frames up to `acked` (its goodbye's, as in heartbeats) were
        handled; only later ones get `watcher-restarted`. Then as `watcher_gone`."""
        w = self.watchers.get(watcher)
        if w is not None and w.alive:
            self.claims.acked(w, acked)
        self.watcher_gone(watcher)

    def watcher_name(self, watcher: str) -> str:
        """The name a watcher gave in its hello ("" if unknown): for log lines."""
        w = self.watchers.get(watcher)
        return w.name if w is not None else ""

    def live_watchers(self) -> list[str]:
        """The IDs of the watchers not known to be gone (the processor probes them)."""
        return [w.id for w in self.watchers.values() if w.alive]

    def _unconfirmed(self, frames: Iterable[Unacked]) -> None:
        """Frames a watcher never confirmed may be lost with it: tell their senders."""
        for _, client, action, target, request_id in frames:
            if client in self.clients:
                self._error(client, ErrorCode.WATCHER_RESTARTED, action, target, request_id)

    def watcher_gone(self, watcher: str) -> None:
        """The watcher stopped answering (silent for `watcher_timeout`), was found
        disconnected, or said goodbye: it keeps its claims, marked dead, until replaced.
        The frames it never confirmed get `watcher-restarted`, once.

        Frames to its rooms get `watcher-unavailable` meanwhile rather than falling
        through to the built-in relay (a game room must not turn into a chat room).
        """
        self._unconfirmed(self.claims.gone(watcher))

    def command(self, watcher: str, command_id: int, command: Command,
                idempotency_key: str = "") -> None:
        """Apply one watcher command; every command gets exactly one reply.

        Watchers are trusted room logic: a command may act on any room. Claims only
        decide which watcher hears a room's frames and events. A value that is not a
        `Command` is a bug in the caller: it raises.

        With an `idempotency_key`, a success is remembered for IDEMPOTENCY_AGE seconds (at
        most IDEMPOTENCY_KEYS keys, from every watcher): a repeat in that time is not applied
        again and gets the first reply. A failure is not remembered (it changed nothing).
        """
        w = self.watchers.get(watcher)
        if w is None or not w.alive:
            return self.out.reply(watcher, command_id, ErrorCode.UNKNOWN_WATCHER)
        if idempotency_key:
            if len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
                return self.out.reply(watcher, command_id, ErrorCode.BAD_COMMAND,
                                      f"idempotency keys are at most {MAX_IDEMPOTENCY_KEY} characters")
            seen = self._idempotent(idempotency_key)
            if seen is not None:
                return self._answer(watcher, command_id, seen[1])
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
        if isinstance(result, list):
            return self.out.reply(watcher, command_id, rooms=result)
        if idempotency_key:
            self.idempotent[idempotency_key] = (self.now, result)
            if len(self.idempotent) > IDEMPOTENCY_KEYS:
                del self.idempotent[next(iter(self.idempotent))]
        return self._answer(watcher, command_id, result)

    def _answer(self, watcher: str, command_id: int, answer: Answer | None) -> None:
        if answer is None:
            return self.out.reply(watcher, command_id)
        return self.out.reply(watcher, command_id, answer=answer)

    def _idempotent(self, key: str) -> tuple[float, Answer | None] | None:
        """The remembered success of `key`, if younger than IDEMPOTENCY_AGE; older keys go
        first (the table is in the order they came)."""
        table, horizon = self.idempotent, self.now - IDEMPOTENCY_AGE
        while table:
            oldest = next(iter(table))
            if table[oldest][0] > horizon:
                break
            del table[oldest]
        return table.get(key)

    def _clients_of(self, user: str) -> tuple[str, ...]:
        """Every client of `user`, connected or away. A scan: commands by user are rare
        next to frames, and an index would cost every connect and disconnect."""
        return tuple(c for c, state in self.clients.items() if state.user == user)

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
            found = self.claims.named(c.watcher)
            if found is None:
                return ErrorCode.UNKNOWN_WATCHER, f"no watcher named {c.watcher!r}"
            owner = found
            if not owner.alive:
                return ErrorCode.WATCHER_UNAVAILABLE, f"watcher {c.watcher!r} is not connected"
        current = self.claims.owner(room)
        if current is not None and current is not owner and current.alive:
            return ErrorCode.CLAIM_CONFLICT, f"{room} is claimed by {current.name!r}"
        if not owner.claims(room):
            self.claims.assign(owner, room)
        self._new_room(room, keep=True, settings=dict(c.settings))
        self._event(EventKind.ROOM_CREATED, "", room, self.claims.owner_id(room))
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
        owner = self.claims.owner(room)
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
        if c.user:  # every client of the user that is in it (none: nothing to do)
            members = self.rooms[c.room].members
            clients = tuple(client for client in self._clients_of(c.user) if client in members)
            for client in clients:
                self._leave(client, c.room, notify=self.claims.owner(c.room) is None)
            return Answer(clients=clients)
        if c.client not in self.rooms[c.room].members:
            return ErrorCode.NOT_MEMBER, c.client
        self._leave(c.client, c.room, notify=self.claims.owner(c.room) is None)
        return None

    def _cmd_send_room(self, c: SendRoom) -> CommandResult:
        bad = self._room_arg(c.room)
        if bad:
            return bad
        room = self.rooms[c.room]
        history = self.history
        stream = self.room_streams[c.room]
        frame = protocol.stamp(c.frame, history.position(stream))
        self.out.broadcast(room.gateways, room.name, frame, c.exclude)
        history.append(stream, frame, c.exclude, self.now)
        return Answer(offset=stream.offset, epoch=room.epoch)

    def _cmd_send_clients(self, c: SendClients) -> CommandResult:
        if c.user:  # every client of the user (none: nothing to send)
            clients = self._clients_of(c.user)
            if clients:
                self._direct_message(clients, c.frame)
            return Answer(clients=clients)
        unknown = [client for client in c.clients if client not in self.clients]
        if unknown:
            return ErrorCode.UNKNOWN_CLIENT, ",".join(unknown)
        self._direct_message(tuple(dict.fromkeys(c.clients)), c.frame)
        return None

    def _cmd_disconnect(self, c: Disconnect) -> CommandResult:
        if c.user:  # every client of the user (none: nothing to close)
            clients = self._clients_of(c.user)
            for client in clients:
                self._cmd_disconnect(Disconnect(client, c.code, c.reason))
            return Answer(clients=clients)
        state = self.clients.get(c.client)
        if state is None:
            return ErrorCode.UNKNOWN_CLIENT, c.client
        if not state.gateway:  # away: there is no connection to close; it leaves now
            self._end(state)
            return None
        code, reason = c.code or CloseCode.DISCONNECTED, c.reason or "disconnected by watcher"
        gateway = self.presence.closing(c.client, code, reason)  # asked again until it is gone
        self.out.close(gateway, c.client, code, reason)
        return None

    def _cmd_query(self, c: Query) -> CommandResult:
        match c.what:
            case QueryWhat.ROOMS:
                return [r.view() for r in self.rooms.values()]
            case QueryWhat.ROOM:
                if c.room not in self.rooms:
                    return ErrorCode.UNKNOWN_ROOM, c.room
                return self._room_page(self.rooms[c.room], c.limit, c.after)
            case QueryWhat.CLIENT_ROOMS:
                if c.client not in self.clients:
                    return ErrorCode.UNKNOWN_CLIENT, c.client
                return [self.rooms[r].view() for r in sorted(self.clients[c.client].rooms)]
            case QueryWhat.ROOM_PAGE:
                limit = min(c.limit or MAX_LIST_PAGE, MAX_LIST_PAGE)
                page, cursor = self._page(self.rooms, limit, c.after)
                rooms = self.rooms
                return Answer(rooms=tuple(
                    RoomView(n, [], rooms[n].maker, {}, count=len(rooms[n].members),
                             epoch=rooms[n].epoch, offset=self.room_streams[n].offset)
                    for n in page), next=cursor or "")
            case QueryWhat.HISTORY:
                return self._held_page(c)
            case _:
                assert_never(c.what)

    def _room_page(self, room: Room, limit: int, after: str) -> CommandResult:
        """A room with its members' users, count, epoch and newest offset: every member
        (`limit` 0, as watchers ask), or a page of them by client ID."""
        view = room.view()
        view.count, view.epoch = len(room.members), room.epoch
        view.offset = self.room_streams[room.name].offset
        cursor: str | None = None
        if limit or after:
            view.members, cursor = self._page(room.members, min(limit or MAX_LIST_PAGE,
                                                                 MAX_MEMBER_PAGE), after)
        clients = self.clients
        view.users = [clients[m].user for m in view.members]
        if cursor is None and not (limit or after):
            return [view]
        return Answer(rooms=(view,), next=cursor or "")

    def _held_page(self, c: Query) -> CommandResult:
        """A page of a room's held messages after offset `since` (absent: from the oldest
        held), as `history` answers a client (no exclusions: the asker is no member)."""
        room = self.rooms.get(c.room)
        if room is None:
            return ErrorCode.UNKNOWN_ROOM, c.room
        oldest, newest = self.history.bounds(c.room)
        since = oldest - 1 if c.since is None else c.since
        if not protocol.is_position(since):
            return ErrorCode.BAD_COMMAND, f"since: {HISTORY_BODY}"
        if since < oldest - 1 and since < newest:
            return ErrorCode.HISTORY_LOST, f"room epoch {room.epoch}, oldest offset held {oldest}"
        frames, after = self.history.page(c.room, since, min(c.limit or MAX_LIST_PAGE,
                                                             MAX_LIST_PAGE), "")
        return Answer(epoch=room.epoch, messages=tuple(frames), since=after)

    def _cmd_settings(self, c: Settings) -> CommandResult:
        bad = self._room_arg(c.room)
        if bad:
            return bad
        self.membership.configure(c.room, c.settings)
        return None

    # ------------------------------------------------------------ invariants and snapshots

    def check(self) -> None:
        """Assert each part's invariants, then those between them (what the property tests
        rely on): a client is in a room iff the room lists it; a room's per-gateway counts
        are its present members'; every room has its stream, in its epoch; nothing is
        numbered past the last seq."""
        self.membership.check()
        self.presence.check()
        self.history.check()
        self.claims.check()
        clients, seq = self.clients, self.history.seq
        streams = self.room_streams
        assert streams.keys() == self.rooms.keys(), (set(streams) ^ set(self.rooms))
        for name, room in self.rooms.items():
            assert streams[name].positions == protocol.position_format(room.epoch), name
            for client, mark in room.members.items():
                assert name in clients[client].rooms and mark <= seq, (name, client)
            # only present members are counted: a broadcast never targets an away one's
            counted = Counter(g for g in (clients[c].gateway for c in room.members) if g)
            assert counted == room.gateways, (name, counted, room.gateways)
        for client, state in clients.items():
            for name in state.rooms:
                assert client in self.rooms[name].members, (client, name)
            assert state.away_seq <= seq, client
        assert self.history.direct.streams.keys() <= clients.keys()

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data (dicts, lists, str, int, float, bool, bytes, None):
        two meshes given the same inputs have equal snapshots."""
        return {"rooms": self.membership.snapshot(), "sessions": self.presence.snapshot(),
                "history": self.history.snapshot(), "claims": self.claims.snapshot(),
                "event_seq": self.event_seq, "now": self.now,
                "idempotent": {k: (when, None if a is None else dataclasses.asdict(a))
                               for k, (when, a) in self.idempotent.items()}}

    def dump_into(self, msg: ProcessorState.Mesh) -> None:
        """The whole state into a snapshot (meshstream_zmq/snapshot.py, which also writes
        the epoch); the configuration (bounds, timeouts, policies) is not state."""
        msg.event_seq, msg.now = self.event_seq, self.now
        self.membership.dump_into(msg.rooms)
        self.presence.dump_into(msg.sessions)
        self.history.dump_into(msg.history)
        self.claims.dump_into(msg.claims)
        for key, (when, answer) in self.idempotent.items():
            m = msg.idempotent.add(key=key, when=when)
            if answer is not None:
                answer.dump_into(m.answer)

    def load_from(self, msg: ProcessorState.Mesh, epoch: str) -> None:
        """A snapshot's state in place of this mesh's (made with this run's configuration;
        the shared tables are filled, not rebound). The caller checks it (`check`)."""
        self.epoch = epoch
        self.event_seq, self.now = msg.event_seq, msg.now
        self.membership.load_from(msg.rooms, epoch)
        self.presence.load_from(msg.sessions)
        self.history.load_from(msg.history, epoch, {n: r.epoch for n, r in self.rooms.items()})
        self.claims.load_from(msg.claims)
        self.idempotent = {m.key: (m.when, Answer.load_from(m.answer) if m.HasField("answer") else None)
                           for m in msg.idempotent}
