"""The admin view (meshstream_zmq/admin.py): the door rule, the snapshot, search and
paging of rooms, and the rates the charts draw, all without a socket or a clock."""

from __future__ import annotations

import json

import pytest

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.admin import (
    PROCESSOR,
    ROOMS_PAGE,
    SEARCH_MAX,
    AdminView,
    Guesses,
    Serving,
    access,
    feed_origin,
    loopback_host,
)
from meshstream_zmq.commands import CreateRoom
from meshstream_zmq.core import LOBBY, Mesh

from .outbox import new_mesh, send


@pytest.mark.parametrize(("required", "presented", "peer", "host", "status"), [
    ("s3cret", "s3cret", "203.0.113.9", "chat.example", 200),  # the token opens it from anywhere
    ("s3cret", "wrong", "127.0.0.1", "127.0.0.1:8765", 401),   # a token set: loopback is not enough
    ("s3cret", None, "127.0.0.1", "localhost", 401),
    ("s3cret", "", "::1", "[::1]:8765", 401),
    ("", None, "127.0.0.1", "127.0.0.1:8765", 200),              # no token: loopback only
    ("", None, "127.8.9.10", "localhost:8765", 200),
    ("", None, "::1", "[::1]:8765", 200),
    ("", None, "::ffff:127.0.0.1", "LOCALHOST", 200),
    ("", "anything", "192.168.1.5", "192.168.1.5:8765", 403),
    ("", None, "::ffff:10.0.0.1", "localhost", 403),
    ("", None, "", "localhost", 403),                           # unknown peer: not provably local
    # DNS rebinding: a loopback peer, but the page's own name in Host
    ("", None, "127.0.0.1", "evil.example:8765", 403),
    ("", None, "127.0.0.1", None, 403),                         # no Host (or two)
    ("", None, "127.0.0.1", "127.0.0.1.evil.example", 403),
])
def test_access_rule(required: str, presented: str | None, peer: str, host: str | None,
                     status: int) -> None:
    assert access(required, presented, peer, host) == status


def test_a_proxied_request_never_passes_the_loopback_rule() -> None:
    assert access("", None, "127.0.0.1", "localhost:8765", proxied=True) == 403
    token = "t" * 16
    assert access(token, token, "127.0.0.1", "chat.example", proxied=True) == 200


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("LocalHost:80", True), ("127.0.0.1", True), ("127.255.0.9:1", True),
    ("[::1]", True), ("[::1]:8765", True), ("[::ffff:127.0.0.1]:8765", True), ("localhost:", True),
    ("evil.example", False), ("evil.example:8765", False), ("localhost.", False),
    ("localhost:http", False), ("x@127.0.0.1", False), ("127.1", False), ("0x7f000001", False),
    ("[::1", False), ("[::1]x", False), ("[::2]:80", False), ("10.0.0.1", False), ("", False),
    ("localhost.evil.example", False), ("127.0.0.1 ", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert loopback_host(host) is loopback


@pytest.mark.parametrize(("origins", "host", "allowed", "ok"), [
    ([], "127.0.0.1:8765", frozenset(), True),                             # not a browser
    (["http://127.0.0.1:8765"], "127.0.0.1:8765", frozenset(), True),      # the page itself
    (["HTTP://LOCALHOST:8765/"], "localhost:8765", frozenset(), True),
    (["http://evil.example"], "127.0.0.1:8765", frozenset(), False),       # another site
    (["http://127.0.0.1:9999"], "127.0.0.1:8765", frozenset(), False),     # another local port
    (["null"], "127.0.0.1:8765", frozenset(), False),
    (["http://127.0.0.1:8765", "http://127.0.0.1:8765"], "127.0.0.1:8765", frozenset(), False),
    (["http://127.0.0.1:8765"], None, frozenset(), False),
    (["https://ops.example"], "chat.example", frozenset({"https://ops.example"}), True),
    (["ftp://127.0.0.1:8765"], "127.0.0.1:8765", frozenset(), False),
])
def test_feed_origin(origins: list[str], host: str | None, allowed: frozenset[str], ok: bool) -> None:
    assert feed_origin(origins, host, allowed) is ok


def test_wrong_tokens_are_limited_per_address_and_refill() -> None:
    guesses = Guesses(limit=10, window=60.0, size=3)
    for _ in range(10):
        assert not guesses.limited("203.0.113.9", 100.0)
        guesses.failed("203.0.113.9", 100.0)
    assert guesses.limited("203.0.113.9", 100.0)
    assert guesses.retry_after("203.0.113.9", 100.0) == 6  # one guess back every 6 s
    assert not guesses.limited("198.51.100.1", 100.0)       # another address is not
    assert guesses.limited("203.0.113.9", 105.9)
    assert not guesses.limited("203.0.113.9", 106.0)        # one refilled...
    guesses.failed("203.0.113.9", 106.0)
    assert guesses.limited("203.0.113.9", 106.0)            # ...and spent
    assert not guesses.limited("203.0.113.9", 106.0 + 60.0)
    # bounded: the address quiet longest is forgotten first
    for n, address in enumerate(("a", "b", "c", "d")):
        guesses.failed(address, 200.0 + n)
    assert len(guesses.left) == 3 and "203.0.113.9" not in guesses.left and "a" not in guesses.left


def gateway_stats(pid: int, frames_in: int = 0, frames_out: int = 0, errors: int = 0,
                  drops: int = 0, connections: int = 0) -> pb.ProcessStats:
    return pb.ProcessStats(role="gateway", pid=pid, started_at=1000.0, restarts=1,
                           cpu_seconds=2.0, rss_bytes=50 << 20, connections=connections,
                           frames_in=frames_in, frames_out=frames_out, errors=errors, drops=drops)


def cluster() -> tuple[Mesh, AdminView]:
    """Two gateways with three clients, a watcher with claims, a few rooms."""
    mesh, _ = new_mesh()
    mesh.gateway_hello("g1", 1, [], 0.0)
    mesh.gateway_hello("g2", 2, [], 0.0)
    for client in ("g1.1", "g1.2", "g2.1"):
        mesh.client_connected(client, 0.0)
    mesh.watcher_hello("w-1", "games", ["arena"], ["wb-"], 0.0)
    for client, room in (("g1.1", "chat"), ("g1.2", "chat")):
        send(mesh, client, "join-room", room)
    mesh.command("w-1", 1, CreateRoom("wb-7"))  # claimed by prefix; lives while empty
    view = AdminView(stale=3.0)
    view.record("g1", gateway_stats(11, connections=2), 0.0)
    view.record("g2", gateway_stats(12, connections=1), 0.0)
    view.record("w-1", pb.ProcessStats(role="watcher", pid=13, started_at=1000.0), 0.0)
    view.record(PROCESSOR, pb.ProcessStats(role="processor", pid=10, started_at=990.0), 0.0)
    return mesh, view


def test_snapshot_lists_processes_gateways_watchers_and_rooms() -> None:
    mesh, view = cluster()
    snap = json.loads(view.answer(mesh, pb.AdminQuery(id=1), 0.0, 1100.0))
    procs = {p["name"]: p for p in snap["processes"]}
    assert set(procs) == {"g1", "g2", "games", PROCESSOR}  # a watcher by the name it gave
    assert procs["g1"] == {"name": "g1", "role": "gateway", "pid": 11, "uptime": 100.0,
                           "restarts": 1, "cpu": 0.0, "rss": 50 << 20}
    assert procs[PROCESSOR]["uptime"] == 110.0
    assert [(g["id"], g["index"], g["connections"], g["clients"]) for g in snap["gateways"]] == [
        ("g1", 1, 2, 2), ("g2", 2, 1, 1)]
    assert snap["watchers"] == [{"id": "w-1", "name": "games", "alive": True, "rooms": ["arena"],
                                 "prefixes": ["wb-"], "assigned": [], "pending": 0}]
    assert snap["clients"] == 3
    assert snap["serving"] == {"role": "alone", "term": 0}  # one processor, no pair
    rooms = {r["name"]: r for r in snap["rooms"]["items"]}
    assert rooms["chat"] == {"name": "chat", "count": 2, "watcher": "", "members": ["g1.1", "g1.2"]}
    assert rooms["wb-7"] == {"name": "wb-7", "count": 0, "watcher": "games", "members": []}
    assert rooms[LOBBY]["count"] == 3
    assert snap["rooms"]["total"] == 3 and snap["rooms"]["next"] is None


def test_rooms_are_searched_by_substring_and_paged_by_cursor() -> None:
    mesh, view = cluster()
    for n in range(ROOMS_PAGE + 5):
        send(mesh, "g1.1", "join-room", f"team-{n:02}")
    first = view.snapshot(mesh, "team", "", 0.0, 0.0)["rooms"]
    assert first["matching"] == ROOMS_PAGE + 5
    assert [r["name"] for r in first["items"]] == [f"team-{n:02}" for n in range(ROOMS_PAGE)]
    assert first["next"] == f"team-{ROOMS_PAGE - 1:02}"
    second = view.snapshot(mesh, "team", first["next"], 0.0, 0.0)["rooms"]
    assert [r["name"] for r in second["items"]] == [f"team-{n:02}" for n in range(ROOMS_PAGE, ROOMS_PAGE + 5)]
    assert second["next"] is None
    assert view.snapshot(mesh, "no-such", "", 0.0, 0.0)["rooms"]["items"] == []


def test_an_overlong_search_is_cut_to_the_longest_room_name() -> None:
    mesh, view = cluster()
    snap = view.snapshot(mesh, "c" * 10_000, "z" * 10_000, 0.0, 0.0)
    assert snap["rooms"]["search"] == "c" * SEARCH_MAX
    assert snap["rooms"]["after"] == "z" * SEARCH_MAX
    assert snap["rooms"]["items"] == []


def test_rates_are_counter_growth_per_second_summed_over_processes() -> None:
    mesh, view = cluster()
    view.sample(0.0)  # the baseline: no point yet
    assert view.snapshot(mesh, "", "", 0.0, 0.0)["rates"] == []
    view.record("g1", gateway_stats(11, frames_in=10, frames_out=40, errors=2), 1.5)
    view.record("g2", gateway_stats(12, frames_in=5, frames_out=20, drops=1), 1.5)
    view.sample(2.0)
    assert view.snapshot(mesh, "", "", 2.0, 0.0)["rates"] == [[0.0, 7.5, 30.0, 1.0, 0.5]]
    # g2 restarted (a new pid, counters from zero): its new counts are all growth
    view.record("g2", gateway_stats(99, frames_in=4), 3.5)
    view.record("g1", gateway_stats(11, frames_in=10, frames_out=40, errors=2), 3.5)
    view.sample(4.0)
    rates = view.snapshot(mesh, "", "", 4.0, 0.0)["rates"]
    assert rates == [[-2.0, 7.5, 30.0, 1.0, 0.5], [0.0, 2.0, 0.0, 0.0, 0.0]]


def test_a_silent_process_is_dropped_and_history_is_bounded() -> None:
    mesh, view = cluster()
    view.history = 3
    for t in range(1, 6):
        view.record("g1", gateway_stats(11, frames_in=t), float(t))
        view.sample(float(t))
    snap = view.snapshot(mesh, "", "", 5.0, 0.0)
    assert [p["name"] for p in snap["processes"]] == ["g1"]  # the others stopped reporting
    assert len(snap["rates"]) == 3


def test_snapshot_names_the_serving_processor_of_a_pair() -> None:
    mesh, view = cluster()
    snap = json.loads(view.answer(mesh, pb.AdminQuery(id=1), 0.0, 0.0, Serving("backup", 2)))
    assert snap["serving"] == {"role": "backup", "term": 2}  # the backup took over twice
    logged = json.loads(view.answer(mesh, pb.AdminQuery(id=1), 0.0, 0.0, Serving("primary", 1, True, 3)))
    assert logged["serving"] == {"role": "primary", "term": 1, "standby_behind": 3}
