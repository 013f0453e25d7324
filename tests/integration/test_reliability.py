"""Reliability promises (SPEC §6) with real processes and real signals."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import time
from typing import Any

import psutil
from websockets.protocol import State

from tests.conftest import Client, Cluster, clients_on
from tests.integration import support
from tests.integration.support import (
    DEADLINE,
    close_code,
    gateway_index,
    http_get,
    join,
    kill,
    roles,
    sync,
    title,
    uid,
    wait_for,
)

spread = support.spread  # fixture: clients on distinct gateways

OUTAGE_CODES = {"processor-unavailable", "processor-restarted"}


async def members_of(c: Client, room: str) -> list[str]:
    reply = await c.request({"action": "list-members", "target": room, "id": uid("m")},
                            "member-list")
    return sorted(reply["message_body"]["members"])


async def test_gateway_sigkill_other_gateway_unaffected(cluster_factory) -> None:
    # The killed gateway's clients are away (they could resume) until the resume window
    # passes: 1 s here, so the survivors are told they left within a few seconds.
    cluster = cluster_factory(args=["--resume-window", "1"])
    (a1, a2), (b1, b2) = await clients_on(cluster.url, 2, 2)
    room = uid("gwkill")
    for c in (a1, a2, b1, b2):
        await join(c, room)
    await a1.expect("client-joined-room", sender=b2.id)

    kill(cluster, f"gateway {gateway_index(a1)}")

    # the survivors are told who left, within a few seconds
    for survivor in (b1, b2):
        for dead in (a1, a2):
            notice = await survivor.expect("client-left-room", timeout=DEADLINE,
                                           sender=dead.id, target=room)
            assert notice["message_body"] == {"client": dead.id, "room": room}
    # the dead gateway's connections are gone
    for dead in (a1, a2):
        assert await close_code(dead) in (None, 1006)
    # and the survivors keep working
    await b1.send({"action": "chat", "target": room, "message_body": {"after": "kill"}})
    for c in (b1, b2):
        got = await c.expect("chat", sender=b1.id)
        assert got["message_body"] == {"after": "kill"}
    assert await members_of(b2, room) == sorted([b1.id, b2.id])
    for dead in (a1, a2):  # gone from the processor too (the lobby is not listable: issue 9)
        err = await b1.request({"action": "hi", "target": dead.id, "IsTargetClient": True,
                                "id": uid("dm")}, "error")
        assert err["message_body"]["code"] == "unknown-client"
    for c in (b1, b2):
        await c.close()


async def test_killed_gateway_is_restarted(cluster: Cluster, spread) -> None:
    (a,), (b,) = await spread(2, 1)
    index = gateway_index(a)
    role = f"gateway {index}"
    old_pid = kill(cluster, role)
    old_prefix = a.gateway

    new_pid = await wait_for(lambda: (pid := roles(cluster, "gateway").get(role)) != old_pid and pid,
                             what=f"a new {role}")
    assert psutil.Process(new_pid).is_running()
    assert http_get(cluster, "/healthz")[0] == 200
    assert sorted(roles(cluster, "gateway")) == [f"gateway {i}" for i in (1, 2)]

    # the restarted gateway takes clients again, under a new ID, and they reach the other one
    groups = await spread(2, 1)
    fresh = next(g[0] for g in groups if gateway_index(g[0]) == index)
    other = next(g[0] for g in groups if gateway_index(g[0]) != index)
    assert fresh.gateway != old_prefix
    room = uid("restart")
    await join(fresh, room)
    await join(other, room)
    await fresh.expect("client-joined-room", sender=other.id)
    await fresh.send({"action": "chat", "target": room, "message_body": {"n": 1}})
    got = await other.expect("chat", sender=fresh.id)
    assert got["message_body"] == {"n": 1}
    assert b.ws.state is State.OPEN


async def send_until_delivered(c: Client, room: str, tag: str) -> list[dict[str, Any]]:
    """Send to `room` with ids until one comes back as a delivery; returns the errors.

    Every frame must be answered: by its own delivery or by an error carrying its id.
    """
    errors: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE
    for n in itertools.count():
        if time.monotonic() > deadline:
            break
        if n:
            await asyncio.sleep(0.1)  # pacing the retries, not synchronising
        rid = f"{tag}-{n}"
        await c.send({"action": "chat", "target": room, "id": rid, "message_body": {"rid": rid}})
        m = await c.next(lambda m, rid=rid: (m["action"] == "error" and m.get("id") == rid)
                         or (m["action"] == "chat" and m["message_body"].get("rid") == rid),
                         timeout=DEADLINE)
        if m["action"] == "chat":
            assert m["sender"] == c.id
            return errors
        errors.append(m)
        assert m["message_body"]["code"] in OUTAGE_CODES, m
    raise AssertionError(f"never delivered again; errors: {errors[-5:]}")


async def test_processor_sigkill_clients_stay_and_rooms_survive(cluster_factory) -> None:
    """Memory only (--log off): the restarted processor is a new epoch, and what was sent
    meanwhile is reported (with the log, the default, nothing is: test_embedded_log.py)."""
    cluster = cluster_factory(args=["--log", "off"])
    (a,), (b,) = await clients_on(cluster.url, 2, 1)
    room = uid("prockill")
    await join(a, room)
    await join(b, room)
    await a.expect("client-joined-room", sender=b.id)

    old = kill(cluster, "processor")
    try:
        psutil.Process(old).wait(5)
    except psutil.NoSuchProcess:  # already reaped by the supervisor
        pass

    errors = await send_until_delivered(a, room, "a")
    assert errors, "frames sent while the processor was down must be reported"
    await send_until_delivered(b, room, "b")

    new = roles(cluster, "processor").get("processor")
    assert new and new != old
    # both clients kept their connection, their IDs and their membership
    for c in (a, b):
        assert c.ws.state is State.OPEN
    assert await members_of(a, room) == sorted([a.id, b.id])
    assert await members_of(b, room) == sorted([a.id, b.id])
    for sender in (a, b):
        token = uid("t")
        await sender.send({"action": "chat", "target": room, "message_body": {"token": token}})
        for c in (a, b):
            got = await c.next(lambda m, t=token: m["action"] == "chat"
                               and m["message_body"].get("token") == t)
            assert got["sender"] == sender.id
    # whatever else arrived (late reports for frames in flight at the kill) is an outage
    # error, at most one per frame
    for c in (a, b):
        await sync(c)
        late = [m for m in c.inbox if m["action"] == "error"]
        assert all(m["message_body"]["code"] in OUTAGE_CODES for m in late), late
        ids = [m.get("id") for m in late]
        assert len(ids) == len(set(ids)), late
    for c in (a, b):
        await c.close()


def cluster_pids(cluster: Cluster) -> list[psutil.Process]:
    kids = cluster.processes()
    assert len(kids) >= 3, kids
    return kids


def strays(cluster: Cluster) -> list[psutil.Process]:
    """Any live 'meshstream:' process from this cluster: it runs in its own process group
    (setproctitle overwrites /proc/PID/environ, so the group is what identifies it)."""
    out = []
    for p in psutil.process_iter():
        try:
            if title(p).startswith("meshstream:") and os.getpgid(p.pid) == cluster.proc.pid \
                    and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.Error, ProcessLookupError):
            continue
    return out


async def test_sigint_to_supervisor_leaves_nothing(cluster: Cluster) -> None:
    c = await Client.connect(cluster.url)
    kids = cluster_pids(cluster)
    assert strays(cluster), "the probe finds this cluster's processes while it runs"
    cluster.proc.send_signal(signal.SIGINT)
    assert await close_code(c) == 1001  # going away
    cluster.stop()  # waits for the supervisor; asserts no child is left
    assert cluster.proc.returncode == 0
    assert not [p for p in kids if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not strays(cluster)
    try:
        os.killpg(cluster.proc.pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError("processes remain in the cluster's process group")


async def test_sigkilled_supervisor_takes_children_along(cluster: Cluster) -> None:
    kids = cluster_pids(cluster)
    cluster.proc.send_signal(signal.SIGKILL)
    cluster.proc.wait(5)
    gone, alive = psutil.wait_procs(kids, timeout=DEADLINE)
    for p in alive:
        p.kill()
    assert not alive, f"children outlived a SIGKILLed supervisor: {alive}"
    assert not strays(cluster)
