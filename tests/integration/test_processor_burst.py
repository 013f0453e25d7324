"""The processor under a burst, seen from a fake gateway speaking its ZeroMQ protocol.

A long drain is flushed part-way (FLUSH_BROADCASTS in services/processor.py) so the
gateways can start writing while the processor reads on: the output must stay
complete, in order, and numbered without gaps (a gap makes a gateway tell its
clients `messages-lost`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import zmq

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from tests.conftest import ROOT
from tests.integration.support import DEADLINE

GW = "gw1-burst"
CLIENTS = (f"{GW}.1", f"{GW}.2")


def _batch(*frames: int) -> bytes:
    batch = pb.GatewayBatch(gateway=GW)
    for n in frames:
        f = batch.items.add().frame
        f.client, f.action, f.target, f.seq = CLIENTS[0], "send-message", "burst", n + 1
        f.body = json.dumps({"n": n}).encode()
    return batch.SerializeToString()


def test_a_burst_is_flushed_in_parts_complete_in_order_without_gaps(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    log = open(tmp_path / "processor.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "processor", "--run-dir", run_dir,
                             "--metrics-port", "0"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    ctx = zmq.Context()
    ep = Config(run_dir=run_dir).endpoints
    push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
    try:
        for s in (push, sub):
            s.setsockopt(zmq.LINGER, 0)
        push.connect(ep.inbound)
        sub.setsockopt(zmq.SUBSCRIBE, GW.encode() + b".")
        sub.connect(ep.outbound)
        hello = pb.GatewayBatch(gateway=GW)
        hello.items.add().hello.index = 1
        for c in CLIENTS:
            entry = hello.items[0].hello.clients.add()
            entry.client = c
            entry.rooms.append("burst")
        seqs: list[int] = []
        delivered: list[int] = []

        def read(timeout_ms: int) -> list[pb.GatewayOp]:
            if not sub.poll(timeout_ms):
                return []
            _, payload = sub.recv_multipart()
            out = pb.GatewayOut.FromString(payload)
            seqs.append(out.seq)
            return list(out.ops)

        # Hello until welcomed (the processor welcomes once our subscription reached it).
        deadline = time.monotonic() + DEADLINE
        while not any(op.WhichOneof("kind") == "welcome" for op in read(200)):
            assert time.monotonic() < deadline and proc.poll() is None, "not welcomed"
            push.send_multipart([b"gateway", hello.SerializeToString()])

        # Queue the whole burst while the processor is stopped: it then reads many
        # batches in one drain (far more room messages than one flush holds).
        n, per_batch = 5000, 250
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            for start in range(0, n, per_batch):
                push.send_multipart([b"gateway", _batch(*range(start, start + per_batch))])
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + DEADLINE
        while len(delivered) < n:
            assert time.monotonic() < deadline, f"{len(delivered)} of {n} delivered"
            for op in read(200):
                if op.WhichOneof("kind") == "deliver":
                    assert op.deliver.room == "burst"
                    delivered.append(json.loads(op.deliver.frame)["message_body"]["n"])
        assert delivered == list(range(n))
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "GatewayOut seq has a gap"
    finally:
        push.close()
        sub.close()
        ctx.term()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
