"""The processor's memory under held direct messages, on a real cluster (issue 20, item 4):
direct messages to away clients used to be held with no overall bound (400 clients × 100
× 30 KB took the processor from 46 MB to 1.2 GB); now all of them together stay within
`--direct-history-bytes`, the oldest dropped first (docs/security.md, Limits).

Scaled down to run in seconds: 120 MB of direct messages to 40 away clients against a
4 MiB budget, trimmed every 0.1 s (--heartbeat). Before, the processor's RSS grew by the
whole 120 MB; now by 10 to 25 MiB (the budget, a trim's worth of traffic, ZeroMQ's
buffers and the allocator's slack).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import psutil
import websockets

from tests.conftest import Client, Cluster
from tests.integration.support import sync

BUDGET = 4 << 20
RECIPIENTS = 40
PER_RECIPIENT = 100  # --direct-history: all of them would be held per client
SIZE = 30_000


async def test_direct_messages_to_away_clients_stay_within_the_budget(
        cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory(gateways=1, args=[
        "--rate-limit", "0", "--heartbeat", "0.1", "--direct-history-bytes", str(BUDGET),
        "--resume-window", "120"])
    processor = psutil.Process(cluster.roles("processor")["processor"])
    away = []
    for _ in range(RECIPIENTS):  # each connects, then its network goes: away, messages held
        ws = await websockets.connect(cluster.url)
        away.append(json.loads(await ws.recv())["target"])
        ws.transport.abort()
    sender = await Client.connect(cluster.url)
    await sync(sender)
    before = processor.memory_info().rss
    text = "x" * SIZE
    for n in range(PER_RECIPIENT):
        for to in away:
            await sender.send({"action": "whisper", "target": to, "IsTargetClient": True,
                               "message_body": {"n": n, "text": text}})
        await sync(sender)  # the processor has them all so far; paced by its answers
    grown = processor.memory_info().rss - before
    sent = RECIPIENTS * PER_RECIPIENT * SIZE
    # far below the 120 MB that used to stay
    assert grown < sent // 2, f"processor RSS grew {grown >> 20} MiB for {sent >> 20} MB sent"
    await sender.close()
