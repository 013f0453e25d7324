"""A gateway that says hello with many clients in one room, then heartbeats and never
reads what the processor sends it: what an overloaded gateway, or one behind a congested
link, looks like to the processor (tests/integration/test_stuck_gateway.py).

    python -m tests.integration.stuck_gateway RUN_DIR ROOM[,ROOM...] MEMBERS SECONDS

Each of the MEMBERS clients is in every ROOM given (comma-separated): bench.stuck_gateway_bench
makes it a member of every chat room, so that it is owed every message.
"""

from __future__ import annotations

import os
import sys
import time

import zmq

from meshstream_zmq import links
from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config


def main() -> None:
    run_dir, members, seconds = sys.argv[1], int(sys.argv[3]), float(sys.argv[4])
    rooms = sys.argv[2].split(",")
    config = Config(run_dir=run_dir)
    gateway = f"gw99-stuck{os.getpid()}"
    ctx = zmq.Context()
    push, sub = links.gateway_sockets(ctx, config, gateway, config.endpoints)
    hello = pb.GatewayBatch(gateway=gateway)
    hello.items.add().hello.CopyFrom(pb.GatewayHello(index=99, clients=[
        pb.ClientRooms(client=f"{gateway}.{i}", rooms=rooms) for i in range(members)]))
    beat = pb.GatewayBatch(gateway=gateway)  # received stays 0: it applies nothing
    beat.items.add().heartbeat.SetInParent()
    print(gateway, flush=True)
    push.send_multipart([b"gateway", hello.SerializeToString()])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # alive, heartbeating, never reading `sub`
        time.sleep(config.heartbeat)
        push.send_multipart([b"gateway", beat.SerializeToString()])
    push.close(0)
    sub.close(0)
    ctx.term()


if __name__ == "__main__":
    main()
