"""Bounded fuzzing (hypothesis) of the two places untrusted bytes are decoded:

- the client frame parser (`protocol.parse`): any text a client can send gets an
  `Inbound` whose fields are what the router relies on, or a `Rejected` with a
  documented code; it never raises;
- the processor's batch decoding (`Processor.on_gateway`): any payload on its PULL
  socket, random or a valid batch with bytes flipped, is routed or dropped whole
  and counted; the processor never raises and its core's invariants hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshstream_zmq import meshstream_pb2 as pb
from meshstream_zmq import protocol
from meshstream_zmq.config import Config
from meshstream_zmq.errors import ErrorCode
from services.processor import Processor

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)
frame_fields = st.fixed_dictionaries({}, optional={
    "action": json_values | st.text(max_size=80),
    "target": json_values | st.text(max_size=80),
    "message_body": json_values,
    "id": json_values,
    "IsTargetClient": json_values,
})


def check_outcome(text: str) -> None:
    out = protocol.parse(text)
    if isinstance(out, protocol.Rejected):
        assert isinstance(out.code, ErrorCode)
        return
    assert isinstance(out.action, str) and 0 < len(out.action) <= protocol.MAX_ACTION
    assert not protocol.has_forbidden_chars(out.action)
    assert isinstance(out.target, str)
    body = json.loads(out.body)
    assert isinstance(body, dict)
    assert out.body == protocol.encode_body(body)  # compact, as the processor splices it
    if out.request_id:
        assert isinstance(json.loads(out.request_id), str | int | float)


@FUZZ
@given(st.text(max_size=200))
def test_any_text_is_parsed_or_rejected(text: str) -> None:
    check_outcome(text)


@FUZZ
@given(frame_fields)
def test_any_json_object_is_parsed_or_rejected(frame: dict[str, Any]) -> None:
    try:
        text = json.dumps(frame, allow_nan=True)
    except (ValueError, RecursionError):
        return
    check_outcome(text)


@FUZZ
@given(st.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_any_bytes_decoded_leniently_are_parsed_or_rejected(text: str) -> None:
    check_outcome(text)


# ------------------------------------------------------------------ the processor

@pytest.fixture(scope="module")
def processor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processor]:
    run_dir = Path(tmp_path_factory.mktemp("fuzz")) / "run"
    proc = Processor(Config(run_dir=str(run_dir), metrics_port=0))
    yield proc
    proc.close()


def valid_batch(gateway: str = "gw1-fuzz") -> bytes:
    batch = pb.GatewayBatch(gateway=gateway)
    batch.items.add().hello.index = 1
    item = batch.items.add()
    item.connected.client = f"{gateway}.a"
    run = batch.items.add().frames
    run.first_seq = 1
    for action, target in (("join-room", "r1"), ("say", "r1"), ("list-rooms", ""), ("leave-room", "r1")):
        run.client.append(f"{gateway}.a")
        run.action.append(action)
        run.target.append(target)
        run.body.append(b"")
        run.is_target_client.append(False)
        run.request_id.append(b"1")
    batch.items.add().disconnected = f"{gateway}.a"
    return batch.SerializeToString()


@FUZZ
@given(st.binary(max_size=500))
def test_any_payload_is_routed_or_dropped(processor: Processor, payload: bytes) -> None:
    processor.on_gateway(payload, 1.0)
    processor.flush(1.0)
    processor.mesh.check()


@FUZZ
@given(st.data())
def test_a_valid_batch_with_flipped_bytes_is_routed_or_dropped(processor: Processor,
                                                                data: st.DataObject) -> None:
    payload = bytearray(valid_batch())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    processor.on_gateway(bytes(payload), 2.0)
    processor.flush(1.0)
    processor.mesh.check()


def test_the_unflipped_batch_is_routed(processor: Processor) -> None:
    """The mutation test starts from a batch the processor really routes."""
    processor.on_gateway(valid_batch("gw9-plain"), 3.0)
    assert processor.acked["gw9-plain"] == 4
    processor.mesh.check()
