"""The processor seen from a fake gateway speaking its ZeroMQ protocol (docs/design.md).

- A long drain is flushed part-way (FLUSH_BROADCASTS in services/processor.py) so the
  gateways can start writing while the processor reads on: the output must stay
  complete, in order, and numbered without gaps (a gap makes a gateway tell its
  clients `messages-lost`).
- A peer that is not a meshstream gateway (bytes that are not a GatewayBatch, or
  ClientFrames whose columns differ in length) has its batch dropped whole and
  logged; the processor goes on serving everyone else.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from google.protobuf.message import DecodeError

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq.config import Config
from tests.conftest import ROOT
from tests.integration.support import DEADLINE

GW = "gw1-fake"
CLIENTS = (f"{GW}.1", f"{GW}.2")


def _batch(*numbers: int, target: str = "burst") -> pb.GatewayBatch:
    """One run of send-message frames from CLIENTS[0], bodies {"n": n}."""
    batch = pb.GatewayBatch(gateway=GW)
    run = batch.items.add().frames
    run.first_seq = numbers[0] + 1
    for n in numbers:
        run.client.append(CLIENTS[0])
        run.action.append("send-message")
        run.target.append(target)
        run.body.append(json.dumps({"n": n}).encode())
        run.is_target_client.append(False)
        run.request_id.append(b"")
    return batch


class FakeGateway:
    """PUSH to the processor, SUB to its own topic; both clients in room "burst"."""

    def __init__(self, run_dir: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.ctx = zmq.Context()
        ep = Config(run_dir=run_dir).endpoints
        self.push, self.sub = self.ctx.socket(zmq.PUSH), self.ctx.socket(zmq.SUB)
        for s in (self.push, self.sub):
            s.setsockopt(zmq.LINGER, 0)
        self.push.connect(ep.inbound)
        self.sub.setsockopt(zmq.SUBSCRIBE, GW.encode() + b".")
        self.sub.connect(ep.outbound)
        self.seqs: list[int] = []
        self.in_seq = 0  # of the last client frame sent

    def send(self, payload: bytes) -> None:
        """As a gateway sends: its client frames numbered on (the processor skips a frame
        whose seq it has acknowledged: a gateway sends again what a restart may have lost)."""
        try:
            batch = pb.GatewayBatch.FromString(payload)
        except DecodeError:  # not a GatewayBatch at all: sent as it is
            batch = None
        if batch is not None:
            for item in batch.items:
                if item.frames.client:
                    item.frames.first_seq = self.in_seq + 1
                    self.in_seq += len(item.frames.client)
            payload = batch.SerializeToString()
        self.push.send_multipart([b"gateway", payload])

    def read(self, timeout_ms: int = 200) -> list[pb.GatewayOp]:
        if not self.sub.poll(timeout_ms):
            return []
        _, payload = self.sub.recv_multipart()
        out = pb.GatewayOut.FromString(payload)
        self.seqs.append(out.seq)
        return list(out.ops)

    def introduce(self) -> None:
        """Hello until welcomed (the processor welcomes once our subscription reached it)."""
        hello = pb.GatewayBatch(gateway=GW)
        hello.items.add().hello.index = 1
        for c in CLIENTS:
            entry = hello.items[0].hello.clients.add()
            entry.client = c
            entry.rooms.append("burst")
        deadline = time.monotonic() + DEADLINE
        while not any(op.WhichOneof("kind") == "welcome" for op in self.read()):
            assert time.monotonic() < deadline and self.proc.poll() is None, "not welcomed"
            self.send(hello.SerializeToString())

    def delivered(self, n: int) -> list[int]:
        """The bodies' "n" of the next `n` room deliveries."""
        got: list[int] = []
        deadline = time.monotonic() + DEADLINE
        while len(got) < n:
            assert time.monotonic() < deadline, f"{len(got)} of {n} delivered"
            for op in self.read():
                if op.WhichOneof("kind") == "deliver":
                    assert op.deliver.room == "burst"
                    got.append(json.loads(op.deliver.frame)["message_body"]["n"])
        return got

    def close(self) -> None:
        self.push.close()
        self.sub.close()
        self.ctx.term()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[FakeGateway]:
    run_dir = str(tmp_path / "run")
    with open(tmp_path / "processor.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "processor", "--run-dir",
                                 run_dir, "--metrics-port", "0"], cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                start_new_session=True)
        gw = FakeGateway(run_dir, proc, tmp_path / "processor.log")
        try:
            gw.introduce()
            yield gw
        finally:
            gw.close()
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_burst_is_flushed_in_parts_complete_in_order_without_gaps(gateway: FakeGateway) -> None:
    # Queue the whole burst while the processor is stopped: it then reads many
    # batches in one drain (far more room messages than one flush holds).
    n, per_batch = 5000, 250
    os.kill(gateway.proc.pid, signal.SIGSTOP)
    try:
        for start in range(0, n, per_batch):
            gateway.send(_batch(*range(start, start + per_batch)).SerializeToString())
    finally:
        os.kill(gateway.proc.pid, signal.SIGCONT)
    assert gateway.delivered(n) == list(range(n))
    seqs = gateway.seqs
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "GatewayOut seq has a gap"


def test_a_batch_that_is_not_a_gateway_batch_is_dropped_and_the_rest_goes_on(
        gateway: FakeGateway) -> None:
    uneven = _batch(1, 2)
    uneven.items[0].frames.body.append(b'{"n":3}')  # three bodies for two frames
    for bad in (b"\xff\xff\xff not protobuf", uneven.SerializeToString()):
        gateway.send(bad)
        gateway.send(_batch(100).SerializeToString())
        assert gateway.delivered(1) == [100], "nothing of the bad batch, the next one whole"
    assert gateway.proc.poll() is None, "the processor survives"
    reasons = [json.loads(line).get("reason") for line in gateway.log.read_text().splitlines()
               if "dropped a GatewayBatch" in line]
    assert reasons == ["undecodable GatewayBatch", "ClientFrames columns of different lengths"]
