"""Property tests of the core: random traffic over a few gateways, clients and rooms.

A plain-Python model predicts every outcome (who is in which room, which error a
frame earns); after every step the mesh must agree with the model, pass
`Mesh.check()`, and its event stream, replayed from scratch, must rebuild exactly
its state (so every join has one joined event, every leave one left event). The
gateways' local membership mirrors, fed only by `membership` calls and resyncs,
must agree too.

The join policies are on (a room pass for `private-` rooms, at most MAX_ROOMS rooms
per client besides the lobby), and every client event and forwarded frame must
carry the client's user.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from meshstream_zmq import LOBBY, protocol
from meshstream_zmq.commands import Command, CreateRoom, DeleteRoom, Join, Remove
from meshstream_zmq.core import EventKind, gateway_of, valid_room_name

from .outbox import decode, new_mesh

GATEWAYS = ["g1", "g2", "g3"]
CLIENTS = [f"{g}.{n}" for g in GATEWAYS for n in (1, 2, 3)]
ROOMS = ["a", "b", "c", "w-1", "w-2", "private-p", LOBBY, "", "x" * 65, "bidi\u202e"]
VALID_ROOMS = [r for r in ROOMS if valid_room_name(r)]  # 'w-' rooms are the watcher's
WATCHER_NAME = "game"
TIMEOUT = 3.0
MAX_ROOMS = 1  # --max-rooms-per-client (low: the machine's clients rarely gather rooms)
USER = {c: (f"user-{c}" if c.endswith((".1", ".2")) else "") for c in CLIENTS}  # .3: anonymous


def room_pass(token: object, user: str, room: str) -> bool:
    return token == f"pass:{user}:{room}"


def private(room: str) -> bool:
    return room.startswith("private-")

clients = st.sampled_from(CLIENTS)
rooms = st.sampled_from(ROOMS)
gateways = st.sampled_from(GATEWAYS)


class MeshMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.mesh, self.out = new_mesh(gateway_timeout=TIMEOUT, watcher_timeout=TIMEOUT,
                                       room_pass=room_pass, max_rooms_per_client=MAX_ROOMS)
        self.now = 0.0
        self.rid = 0
        # The model.
        self.rooms_of: dict[str, set[str]] = {}  # connected client -> rooms other than the lobby
        self.gw_index: dict[str, int] = {}
        self.gw_seen: dict[str, float] = {}
        self.keep: set[str] = set()  # rooms created by the watcher: they live on while empty
        self.assigned: set[str] = set()  # unprefixed rooms the watcher created: now its own
        self.watcher_id = "W0"
        self.watcher_alive = True
        self.watcher_seen = 0.0
        self.watcher_generation = 0
        self.sent = 0  # the last sequence number of a frame forwarded to the current watcher
        self.unacked: list[tuple[int, str, int]] = []  # (seq, client, request id) not yet acked
        # What the gateways believe (their local mirrors) and what the events say.
        self.mirror: dict[str, dict[str, set[str]]] = {}
        self.ev_clients: set[str] = set()
        self.ev_rooms: set[str] = {LOBBY}
        self.ev_members: set[tuple[str, str]] = set()
        self.seq = 0
        self.assigned_before: set[str] = set()
        self.step_watcher = self.watcher_id
        self.mesh.watcher_hello(self.watcher_id, WATCHER_NAME, [], ["w-"], self.now)
        self.out.clear()

    # ------------------------------------------------------------ model helpers

    def claimed(self, room: str) -> bool:
        return room.startswith("w-") or room in self.assigned

    def existing_rooms(self) -> set[str]:
        found = {LOBBY} | self.keep
        for joined in self.rooms_of.values():
            found |= joined
        return found

    def next_rid(self) -> int:
        self.rid += 1
        return self.rid

    def model_add(self, client: str) -> None:
        gateway = gateway_of(client)
        if gateway not in self.gw_index:
            self.gw_index[gateway] = -1
        self.rooms_of[client] = set()

    def model_remove_client(self, client: str) -> None:
        del self.rooms_of[client]
        self.mirror.get(gateway_of(client), {}).pop(client, None)

    def model_drop_gateway(self, gateway: str) -> None:
        for client in [c for c in self.rooms_of if gateway_of(c) == gateway]:
            del self.rooms_of[client]
        self.gw_index.pop(gateway, None)
        self.gw_seen.pop(gateway, None)
        self.mirror.pop(gateway, None)

    def frame(self, client: str, action: str, target: str, body: dict[str, Any] | None = None,
              to_client: bool = False) -> int:
        self.start()
        rid = self.next_rid()
        self.mesh.client_frame(client, action, target,
                               protocol.encode_body(body) if body else protocol.EMPTY_BODY, to_client,
                               str(rid).encode())
        return rid

    def start(self) -> None:
        """Before each step: a clean outbox, and the watcher's state events will be judged by."""
        self.out.clear()
        self.assigned_before = set(self.assigned)
        self.step_watcher = self.watcher_id if self.watcher_alive else ""

    def replies_to(self, client: str, rid: int) -> list[dict[str, Any]]:
        return [m for m in self.out.inbox(client) if m.get("id") == rid]

    def expect_error(self, client: str, rid: int, code: str) -> None:
        replies = self.replies_to(client, rid)
        assert len(replies) == 1, (code, self.out.calls)
        assert replies[0]["action"] == "error" and replies[0]["message_body"]["code"] == code, replies
        assert self.out.of("membership") == [] and self.out.of("event") == []
        assert self.out.of("to_watcher") == []

    def expect_forwarded(self, client: str, rid: int, action: str, target: str) -> None:
        if self.watcher_alive:
            assert [(c[1], c[2], c[3], c[4], c[7]) for c in self.out.of("to_watcher")] == [
                (self.watcher_id, client, action, target, str(rid).encode())]
            assert self.out.deliveries() == [] and self.out.of("event") == []
        else:
            self.expect_error(client, rid, "watcher-unavailable")

    def expect_notice(self, client: str, rid: int, action: str, room: str, others: set[str]) -> None:
        """The client got its notice (with id); the other members got it without id."""
        mine = self.replies_to(client, rid)
        assert len(mine) == 1 and mine[0]["action"] == action and mine[0]["target"] == room, mine
        for other in others - {client}:
            got = [m for m in self.out.inbox(other) if m["action"] == action]
            assert len(got) == 1 and got[0]["sender"] == client and "id" not in got[0], got

    # ------------------------------------------------------------ clients

    @initialize(first=st.lists(clients, max_size=6, unique=True))
    def some_clients_connect(self, first: list[str]) -> None:
        """Start with a few clients, so that random frames find a sender the mesh knows."""
        self.start()
        for client in first:
            self.connect_one(client)

    @rule(client=clients)
    def connect(self, client: str) -> None:
        self.start()
        self.connect_one(client)

    def connect_one(self, client: str) -> None:
        self.mesh.client_connected(client, self.now, USER[client])
        gateway = gateway_of(client)
        if client not in self.rooms_of:
            self.model_add(client)
            self.mirror.setdefault(gateway, {})[client] = set()
        self.gw_seen[gateway] = self.now
        assert self.out.deliveries() == []

    @rule(client=clients)
    def disconnect(self, client: str) -> None:
        self.start()
        was = set(self.rooms_of.get(client, ()))
        self.mesh.client_disconnected(client)
        if client in self.rooms_of:
            self.model_remove_client(client)
        assert client not in self.out.inboxes  # nothing goes to a client that is gone
        assert self.out.of("membership") == []
        left = sorted(e[2] for e in self.out.events() if e[0] == EventKind.CLIENT_LEFT_ROOM)
        assert left == sorted(was)

    @rule(client=clients, room=rooms, seed_form=st.booleans(),
          token=st.sampled_from(["valid", "forged", "none"]))
    def join(self, client: str, room: str, seed_form: bool, token: str) -> None:
        before = {r: self.members_of(r) for r in self.existing_rooms()}
        extra = {"valid": {"token": f"pass:{USER[client]}:{room}"}, "forged": {"token": "x"},
                 "none": {}}[token]
        if seed_form:
            rid = self.frame(client, "join-room", LOBBY, {"roomname": room, **extra})
        else:
            rid = self.frame(client, "join-room", room, extra or None)
        if client not in self.rooms_of:
            return self.expect_error(client, rid, "unknown-sender")
        if not seed_form and room == "":
            return self.expect_error(client, rid, "missing-target")
        if not seed_form and self.claimed(room):
            return self.expect_forwarded(client, rid, "join-room", room)
        if room == LOBBY:
            return self.expect_error(client, rid, "already-member")
        if not valid_room_name(room):
            return self.expect_error(client, rid, "bad-room-name")
        if room in self.rooms_of[client]:
            return self.expect_error(client, rid, "already-member")
        if self.claimed(room):  # the seed form naming a claimed room
            return self.expect_forwarded(client, rid, "join-room", room)
        if private(room) and not (token == "valid" and USER[client]):
            return self.expect_error(client, rid, "forbidden")
        if len(self.rooms_of[client]) >= MAX_ROOMS:
            return self.expect_error(client, rid, "too-many-rooms")
        self.rooms_of[client].add(room)
        self.expect_notice(client, rid, "client-joined-room", room, before.get(room, set()))
        if room not in before:
            assert self.mesh.rooms[room].maker == client

    @precondition(lambda self: bool(self.rooms_of))
    @rule(data=st.data(), room=rooms, seed_form=st.booleans(),
          token=st.sampled_from(["valid", "forged", "none"]))
    def connected_client_joins(self, data: st.DataObject, room: str, seed_form: bool,
                               token: str) -> None:
        """Most random senders are not connected: this one is, so clients gather rooms (up
        to the limit and past it) often enough for the join policies to be exercised."""
        self.join(data.draw(st.sampled_from(sorted(self.rooms_of))), room, seed_form, token)

    @rule(client=clients, room=rooms)
    def leave(self, client: str, room: str) -> None:
        before = self.members_of(room)
        rid = self.frame(client, "leave-room", room)
        if client not in self.rooms_of:
            return self.expect_error(client, rid, "unknown-sender")
        if room == "":
            return self.expect_error(client, rid, "missing-target")
        if self.claimed(room):
            return self.expect_forwarded(client, rid, "leave-room", room)
        if room == LOBBY:
            return self.expect_error(client, rid, "cannot-leave-lobby")
        if room not in self.existing_rooms():
            return self.expect_error(client, rid, "not-member" if private(room) else "unknown-room")
        if room not in self.rooms_of[client]:
            return self.expect_error(client, rid, "not-member")
        self.rooms_of[client].discard(room)
        self.expect_notice(client, rid, "client-left-room", room, before)

    @rule(client=clients, room=rooms)
    def relay(self, client: str, room: str) -> None:
        members = self.members_of(room)
        rid = self.frame(client, "chat", room, {"text": "hi"})
        if client not in self.rooms_of:
            return self.expect_error(client, rid, "unknown-sender")
        if room == "":
            return self.expect_error(client, rid, "missing-target")
        if self.claimed(room):
            return self.expect_forwarded(client, rid, "chat", room)
        if room not in self.existing_rooms():
            return self.expect_error(client, rid, "not-member" if private(room) else "unknown-room")
        if room == LOBBY:
            return self.expect_error(client, rid, "lobby-readonly")
        if client not in members:
            return self.expect_error(client, rid, "not-member")
        # One delivery per gateway holding members, each naming the room; the sender's
        # own copy (its acknowledgement, carrying its id) is the one extra delivery.
        deliveries = self.out.deliveries()
        room_deliveries = [d for d in deliveries if d[4] == room]
        assert sorted(d[1] for d in room_deliveries) == sorted({gateway_of(m) for m in members})
        assert all(d[3] == () and d[5] == (client,) for d in room_deliveries)
        assert [(d[1], d[3]) for d in deliveries if d[4] != room] == [(gateway_of(client), (client,))]
        for other in self.rooms_of:
            got = self.out.inbox(other)
            if other in members:
                assert len(got) == 1 and got[0]["sender"] == client and got[0]["target"] == room
                assert got[0].get("id") == (rid if other == client else None)
            else:
                assert got == []

    @rule(client=clients, room=st.sampled_from(["w-1", "w-2"]))
    def game_move(self, client: str, room: str) -> None:
        """A frame for the watcher's rooms (it is kept until the watcher acknowledges it)."""
        rid = self.frame(client, "move", room, {"word": "wizard"})
        if client not in self.rooms_of:
            return self.expect_error(client, rid, "unknown-sender")
        self.expect_forwarded(client, rid, "move", room)

    @rule(client=clients, recipient=clients)
    def direct(self, client: str, recipient: str) -> None:
        rid = self.frame(client, "dm", recipient, {"x": 1}, to_client=True)
        if client not in self.rooms_of:
            return self.expect_error(client, rid, "unknown-sender")
        if recipient not in self.rooms_of:
            return self.expect_error(client, rid, "unknown-client")
        assert [(d[1], d[3]) for d in self.out.deliveries()] == [(gateway_of(recipient), (recipient,))]

    @rule(client=clients, room=rooms, limit=st.none() | st.integers(-1, 4),
          after=st.none() | rooms)
    def queries(self, client: str, room: str, limit: int | None, after: str | None) -> None:
        rid = self.frame(client, "list-rooms", "", {"limit": limit, "after": after})
        if client not in self.rooms_of:
            return self.expect_error(client, rid, "unknown-sender")
        (reply,) = self.replies_to(client, rid)
        listed = sorted(r for r in self.existing_rooms() if not private(r) and r > (after or ""))
        size = 100 if limit is None else min(max(limit, 1), 100)
        assert reply["message_body"] == {
            "rooms": [{"name": r, "members": len(self.members_of(r))} for r in listed[:size]],
            "next": listed[size - 1] if len(listed) > size else None}
        rid = self.frame(client, "list-members", room)
        if room == "":
            return self.expect_error(client, rid, "missing-target")
        if room == LOBBY or (private(room) and client not in self.members_of(room)):
            return self.expect_error(client, rid, "forbidden")
        if room not in self.existing_rooms():
            return self.expect_error(client, rid, "unknown-room")
        (reply,) = self.replies_to(client, rid)
        assert sorted(reply["message_body"]["members"]) == sorted(self.members_of(room))

    @rule(client=clients, action=st.text(min_size=1, max_size=64), to=st.text(max_size=66) | rooms,
          body=st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3))
    def any_frame(self, client: str, action: str, to: str, body: dict[str, Any]) -> None:
        """No input raises; a frame that is not forwarded to a watcher always earns a reply."""
        if action in ("join-room", "leave-room"):
            action = "x-" + action
        rid = self.frame(client, action, to, body)
        if not self.out.of("to_watcher"):
            assert len(self.replies_to(client, rid)) + len(self.out.inbox(client)) >= 1
        assert self.out.of("event") == [] and self.out.of("membership") == []

    # ------------------------------------------------------------ gateways

    @rule(gateway=gateways)
    def drop_gateway(self, gateway: str) -> None:
        self.start()
        self.mesh.drop_gateway(gateway)
        self.model_drop_gateway(gateway)
        assert not self.mesh.knows_gateway(gateway)

    @rule(gateway=gateways, index=st.integers(0, 2),
          listed=st.dictionaries(st.sampled_from([1, 2, 3]),
                                 st.lists(st.sampled_from(VALID_ROOMS), max_size=3), max_size=3))
    def hello(self, gateway: str, index: int, listed: dict[int, list[str]]) -> None:
        self.start()
        before = set(self.rooms_of)
        clients_listed = {f"{gateway}.{n}": rooms for n, rooms in listed.items()}
        self.mesh.gateway_hello(gateway, index, list(clients_listed.items()), self.now,
                                {c: USER[c] for c in clients_listed if USER[c]})
        for other, other_index in list(self.gw_index.items()):
            if other_index == index and other != gateway:
                self.model_drop_gateway(other)
        self.gw_index[gateway] = index
        self.gw_seen[gateway] = self.now
        for client in [c for c in self.rooms_of if gateway_of(c) == gateway and c not in clients_listed]:
            self.model_remove_client(client)
        for client, joined in clients_listed.items():
            self.rooms_of[client] = set(joined) - {LOBBY}
        self.mirror[gateway] = {c: set(r) - {LOBBY} for c, r in clients_listed.items()}
        # Silent for the clients that stay, but for rooms the gateway no longer lists:
        # the only notices are leaves (of clients gone, or out of rooms the gateway dropped).
        stayed = {c for c in before if c in self.rooms_of}
        for delivery in self.out.deliveries():
            message = decode(delivery[2])
            assert message["action"] == "client-left-room", message
            assert message["sender"] in (set(before) - stayed) or message["sender"] in stayed

    @rule(gateway=gateways)
    def heartbeat(self, gateway: str) -> None:
        self.start()
        self.mesh.gateway_seen(gateway, self.now)
        if gateway in self.gw_seen:
            self.gw_seen[gateway] = self.now
        assert self.out.calls == []

    @rule(dt=st.sampled_from([0.5, 1.0, 2.0, 3.5]))
    def time_passes(self, dt: float) -> None:
        self.start()
        self.now += dt
        dead = self.mesh.expire(self.now)
        expected = [g for g, seen in self.gw_seen.items() if self.now - seen > TIMEOUT]
        assert sorted(dead) == sorted(expected)
        for gateway in expected:
            self.model_drop_gateway(gateway)
        if self.watcher_alive and self.now - self.watcher_seen > TIMEOUT:
            self.watcher_alive = False
            self.expect_restart_errors()
        else:
            assert "watcher-restarted" not in {m["message_body"].get("code") for c in self.out.inboxes
                                               for m in self.out.inbox(c)}

    # ------------------------------------------------------------ the watcher

    def expect_restart_errors(self) -> None:
        """The frames the watcher never acknowledged: each connected sender hears of its own."""
        expected = sorted((client, rid) for _, client, rid in self.unacked if client in self.rooms_of)
        got = sorted((client, m["id"]) for client in self.out.inboxes for m in self.out.inbox(client)
                     if m["action"] == "error" and m["message_body"]["code"] == "watcher-restarted")
        assert got == expected, (got, expected)
        self.unacked = []

    @rule(lag=st.none() | st.integers(0, 3))
    def watcher_heartbeat(self, lag: int | None) -> None:
        self.start()
        acked = None if lag is None else self.sent - lag
        assert self.mesh.watcher_seen(self.watcher_id, self.now, acked) is self.watcher_alive
        if self.watcher_alive:
            self.watcher_seen = self.now
            if acked is not None:
                self.unacked = [u for u in self.unacked if u[0] > acked]
        assert self.out.calls == []

    @rule()
    def watcher_dies(self) -> None:
        self.start()
        self.mesh.watcher_gone(self.watcher_id)
        self.watcher_alive = False
        self.expect_restart_errors()

    @rule()
    def watcher_restarts(self) -> None:
        """A new process under the same name: it takes over the claims and the assigned rooms."""
        self.start()
        self.watcher_generation += 1
        self.watcher_id = f"W{self.watcher_generation}"
        self.mesh.watcher_hello(self.watcher_id, WATCHER_NAME, [], ["w-"], self.now)
        self.watcher_alive, self.watcher_seen = True, self.now
        ((kind, wid, views),) = self.out.of("welcome")
        assert (kind, wid) == ("welcome", self.watcher_id)
        assert {c[0] for c in self.out.calls} <= {"welcome", "deliver"}
        self.expect_restart_errors()  # the old process may have lost what it had not acknowledged
        self.sent = 0
        assert sorted(v.name for v in views) == sorted(r for r in self.existing_rooms() if self.claimed(r))

    def command(self, command: Command) -> str | None:
        self.start()
        self.mesh.command(self.watcher_id, 7, command)
        replies = self.out.replies()
        assert len(replies) == 1 and replies[0][1:3] == (self.watcher_id, 7), self.out.calls
        error = replies[0][3]
        if error is not None:
            assert self.out.calls == replies  # a refused command changes nothing
        return None if error is None else error.value

    @rule(room=rooms)
    def cmd_create_room(self, room: str) -> None:
        code = self.command(CreateRoom(room))
        if not self.watcher_alive:
            assert code == "unknown-watcher"
        elif not valid_room_name(room):
            assert code == "bad-room-name"
        elif room in self.existing_rooms():
            assert code == "room-exists"
        else:
            assert code is None
            self.keep.add(room)
            if not self.claimed(room):
                self.assigned.add(room)

    @rule(room=rooms)
    def cmd_delete_room(self, room: str) -> None:
        code = self.command(DeleteRoom(room))
        if not self.watcher_alive:
            assert code == "unknown-watcher"
        elif not valid_room_name(room):
            assert code == "bad-room-name"
        elif room not in self.existing_rooms():
            assert code == "unknown-room"
        elif room == LOBBY:
            assert code == "cannot-leave-lobby"
        else:
            assert code is None
            for joined in self.rooms_of.values():
                joined.discard(room)
            self.keep.discard(room)
            self.assigned.discard(room)

    @rule(client=clients, room=rooms)
    def cmd_join(self, client: str, room: str) -> None:
        claimed = self.claimed(room)
        code = self.command(Join(client, room))
        if not self.watcher_alive:
            assert code == "unknown-watcher"
        elif not valid_room_name(room):
            assert code == "bad-room-name"
        elif client not in self.rooms_of:
            assert code == "unknown-client"
        elif room == LOBBY or room in self.rooms_of[client]:
            assert code == "already-member"
        else:
            assert code is None
            self.rooms_of[client].add(room)
            if claimed:
                assert self.out.deliveries() == []  # the watcher does the talking
            else:
                assert [m["action"] for m in self.out.inbox(client)] == ["client-joined-room"]

    @rule(client=clients, room=rooms)
    def cmd_remove(self, client: str, room: str) -> None:
        members = self.members_of(room)
        code = self.command(Remove(client, room))
        if not self.watcher_alive:
            assert code == "unknown-watcher"
        elif not valid_room_name(room):
            assert code == "bad-room-name"
        elif room not in self.existing_rooms():
            assert code == "unknown-room"
        elif room == LOBBY:
            assert code == "cannot-leave-lobby"
        elif client not in members:
            assert code == "not-member"
        else:
            assert code is None
            self.rooms_of[client].discard(room)

    # ------------------------------------------------------------ invariants

    def members_of(self, room: str) -> set[str]:
        if room == LOBBY:
            return set(self.rooms_of)
        return {c for c, joined in self.rooms_of.items() if room in joined}

    @invariant()
    def core_invariants_hold(self) -> None:
        self.mesh.check()

    @invariant()
    def every_client_event_and_forwarded_frame_names_the_user(self) -> None:
        for _, client, user in self.out.users:
            assert user == (USER[client] if client else ""), (client, user)
        for client, state in self.mesh.clients.items():
            assert state.user == USER[client]

    @invariant()
    def mesh_matches_the_model(self) -> None:
        mesh = self.mesh
        assert set(mesh.clients) == set(self.rooms_of)
        assert set(mesh.rooms) == self.existing_rooms()  # empty rooms are gone unless kept
        for name, room in mesh.rooms.items():
            expected = self.members_of(name)
            assert set(room.members) == expected, name
            assert len(room.members) == len(expected)
            assert room.gateways == Counter(gateway_of(c) for c in expected), name
            assert room.maker in room.members or (room.maker == "" and (not room.members or room.keep))
            for client in room.members:  # a client is in a room iff the room lists it
                assert name in mesh.clients[client].rooms
        for client, joined in self.rooms_of.items():
            assert mesh.clients[client].rooms == joined | {LOBBY}
            assert mesh.clients[client].gateway == gateway_of(client)
        assert set(mesh.gateways) == set(self.gw_index)
        for gateway, index in self.gw_index.items():
            assert mesh.gateways[gateway].index == index
            assert mesh.gateways[gateway].clients == {c for c in self.rooms_of if gateway_of(c) == gateway}

    @invariant()
    def events_replay_to_the_same_state(self) -> None:
        for call in self.out.of("event"):
            _, seq, kind, client, room, watcher = call
            assert seq == self.seq + 1, (seq, self.seq)
            self.seq = seq
            if kind == EventKind.CLIENT_CONNECTED:
                assert client not in self.ev_clients and room == ""
                self.ev_clients.add(client)
            elif kind == EventKind.CLIENT_DISCONNECTED:
                assert client in self.ev_clients
                assert not any(c == client for c, _ in self.ev_members), "left events come first"
                self.ev_clients.discard(client)
            elif kind == EventKind.ROOM_CREATED:
                assert room not in self.ev_rooms and client == ""
                self.ev_rooms.add(room)
            elif kind == EventKind.ROOM_DELETED:
                assert room in self.ev_rooms and room != LOBBY
                assert not any(r == room for _, r in self.ev_members), "left events come first"
                self.ev_rooms.discard(room)
            elif kind == EventKind.CLIENT_JOINED_ROOM:
                assert client in self.ev_clients and room in self.ev_rooms
                assert (client, room) not in self.ev_members, "one joined event per join"
                self.ev_members.add((client, room))
            elif kind == EventKind.CLIENT_LEFT_ROOM:
                assert (client, room) in self.ev_members, "one left event per leave"
                self.ev_members.discard((client, room))
            if room and room != LOBBY:
                owned = room.startswith("w-") or room in self.assigned | self.assigned_before
                assert watcher == (self.step_watcher if owned else ""), call
            else:
                assert watcher == ""
        self.out.calls[:] = [c for c in self.out.calls if c[0] != "event"]
        mesh = self.mesh
        assert self.ev_clients == set(mesh.clients)
        assert self.ev_rooms == set(mesh.rooms)
        assert self.ev_members == {(c, r) for c, s in mesh.clients.items() for r in s.rooms if r != LOBBY}

    @invariant()
    def forwarded_frames_are_numbered(self) -> None:
        calls = self.out.of("to_watcher")
        assert len(calls) == len(self.out.seqs)
        for call, seq in zip(calls, self.out.seqs, strict=True):
            assert call[1] == self.watcher_id and self.watcher_alive
            assert seq == self.sent + 1, (seq, self.sent)
            self.sent = seq
            self.unacked.append((seq, call[2], int(call[7])))
        self.out.calls[:] = [c for c in self.out.calls if c[0] != "to_watcher"]
        self.out.seqs.clear()

    @invariant()
    def gateway_mirrors_agree(self) -> None:
        for call in self.out.of("membership"):
            _, gateway, client, room, joined = call
            assert room != LOBBY
            mirror = self.mirror.get(gateway, {}).get(client)
            if mirror is None:
                continue  # a gateway that is gone
            if joined:
                assert room not in mirror
                mirror.add(room)
            else:
                mirror.discard(room)
        self.out.calls[:] = [c for c in self.out.calls if c[0] != "membership"]
        for client, joined in self.rooms_of.items():
            assert self.mirror[gateway_of(client)][client] == joined, client
        for gateway, known in self.mirror.items():
            assert set(known) <= set(self.rooms_of), gateway


# No "explain" phase: its tracer makes shrinking a failure minutes long on Python 3.11.
MeshMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=35, deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestMeshProperties = MeshMachine.TestCase
