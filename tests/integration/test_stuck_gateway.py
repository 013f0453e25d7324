"""A gateway that keeps heartbeating but never reads: the processor deals with it alone
(drops it, counted and logged), and every other gateway and client carries on."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from tests.integration.support import DEADLINE, ROOT, Cluster, clients_on, uid, wait_for

MEMBERS = 200
MESSAGES = 300


async def test_a_gateway_that_stops_reading_is_dropped_alone_and_chat_goes_on(cluster: Cluster) -> None:
    room = uid("stuck")
    (a,), (b,) = await clients_on(cluster.url, 2)
    processor = psutil.Process(cluster.roles("processor")["processor"])
    stuck = subprocess.Popen([sys.executable, "-m", "tests.integration.stuck_gateway", cluster.run_dir,
                              room, str(MEMBERS), "60"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert stuck.stdout is not None
        stuck_id = stuck.stdout.readline().strip()
        for c in (a, b):
            await c.request({"action": "join-room", "target": room, "id": f"j-{c.id}"}, "client-joined-room")

        async def members() -> int:
            page = await a.request({"action": "list-members", "target": room, "id": uid("m"),
                                    "message_body": {"after": "gw9"}}, "member-list")  # gw99-stuck…
            return sum(m.startswith(stuck_id) for m in page["message_body"]["members"])

        deadline = time.monotonic() + DEADLINE  # its hello and our joins race (other sockets)
        while (count := await members()) != 100:  # its clients are members (one page)
            assert count < 100 and time.monotonic() < deadline, count
        body = {"text": "x" * 1000}
        for i in range(MESSAGES):  # chat while the stuck gateway is owed every message
            await a.send({"action": "send-message", "target": room, "message_body": {**body, "n": i}})
            if i % 50 == 0:
                await a.expect("send-message", message_body={**body, "n": i})
        await wait_for(lambda: "gateway stalled: dropped" in cluster.read_log(),
                       what="the processor to drop the stuck gateway")
        # b, on a healthy gateway, got every message, in order, and no error
        got = []
        while len(got) < MESSAGES:
            m = await b.next(lambda m: m.get("action") in ("send-message", "error"))
            assert m["action"] == "send-message", m
            got.append(m["message_body"]["n"])
        assert got == list(range(MESSAGES))
        # the stuck gateway's clients left (it was dropped), the others stay; same processor
        await b.expect("client-left-room", message_body={"client": f"{stuck_id}.0", "room": room})
        assert await members() == 0
        await a.send({"action": "send-message", "target": room, "message_body": {"after": 1}})
        await b.expect("send-message", message_body={"after": 1})
        assert cluster.roles("processor")["processor"] == processor.pid
        assert processor.memory_info().rss < 400 << 20
        assert not [m for m in a.inbox + b.inbox if m.get("action") == "error"]
    finally:
        stuck.kill()
        stuck.wait()
        await a.close()
        await b.close()
