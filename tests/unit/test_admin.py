"""The admin view (meshstream_zmq/admin.py): the door rule, the snapshot, search and
paging of rooms, and the rates the charts draw, all without a socket or a clock."""

from __future__ import annotations

import json

import pytest

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.admin import PROCESSOR, ROOMS_PAGE, SEARCH_MAX, AdminView, Serving, access
from meshstream_zmq.commands import CreateRoom
from meshstream_zmq.core import LOBBY, Mesh

from .outbox import new_mesh, send


@pytest.mark.parametrize(("required", "presented", "peer", "status"), [
    ("s3cret", "s3cret", "203.0.113.9", 200),   # the token opens it from anywhere
    ("s3cret", "wrong", "127.0.0.1", 401),      # a token set: loopback is not enough
    ("s3cret", None, "127.0.0.1", 401),
    ("s3cret", "", "::1", 401),
    ("", None, "127.0.0.1", 200),               # no token: loopback only
    ("", None, "127.8.9.10", 200),
    ("", None, "::1", 200),
    ("", None, "::ffff:127.0.0.1", 200),
    ("", "anything", "192.168.1.5", 403),
    ("", None, "::ffff:10.0.0.1", 403),
    ("", None, "", 403),                        # unknown peer: not provably local
])
def test_access_rule(required: str, presented: str | None, peer: str, status: int) -> None:
    assert access(required, presented, peer) == status


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
