"""Snapshots of the processor: its whole state as bytes, and back (docs/design.md, "Snapshots").

What a replay of the log builds, `dump` writes: the core (`Mesh` and its four parts),
what each gateway is owed (`GatewayOutput`: numbering, the GatewayOuts not yet applied,
this tick's ops), the gateways' link states and subscriptions (`Peers`) and what the
processor keeps beside them (`ProcessorFields`: `acked`, `recovering`, `resend`,
`last_time`), with the log's sequence it was taken at. `load` fills fresh objects made
with this run's configuration from those bytes, and checks them: a processor started
from a snapshot behaves as the one that took it did (the same outputs for the same
later inputs; equal `snapshot()`s).

The format is protobuf (proto/meshstream.proto, `ProcessorSnapshot`): a `version`, a
CRC-32 and the `ProcessorState`. Each part writes and reads its own fields
(`dump_into`/`load_from`, next to its `snapshot()`); this module holds the envelope,
the version rule and the processor's fields. A snapshot is read from the log's store, so
nothing in it is trusted to be well formed: whatever does not decode, has a version this
release does not read, or leaves a state failing `check()`, raises `BadSnapshot`, and the
objects given are then to be thrown away (never served from).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from . import meshstream_pb2 as pb
from .core import Mesh
from .link import GatewayOutput, Peers

VERSION = 1  # of ProcessorState's layout, written into every snapshot
# Read: this version and the previous one (fields are only added, so a previous release's
# snapshot reads as this one with the new fields at their defaults).
READS = frozenset(v for v in (VERSION - 1, VERSION) if v >= 1)


class BadSnapshot(Exception):
    """A snapshot that cannot be loaded: the processor must not start from it."""


@dataclass(slots=True)
class ProcessorFields:
    """What services/processor.py's replay builds beside the mesh, its output and Peers."""

    log_seq: int = 0  # the log's sequence of the last entry the snapshot includes
    last_time: float = 0.0  # its clock (with a log: the wall clock, never going back)
    acked: dict[str, int] = field(default_factory=dict)  # per gateway, the last frame applied
    recovering: set[str] = field(default_factory=set)  # gateways whose frames await Resent
    resend: set[str] = field(default_factory=set)  # gateways owed their unapplied output


def dump(mesh: Mesh, output: GatewayOutput | None = None, peers: Peers | None = None,
         fields: ProcessorFields | None = None) -> bytes:
    """The state as a snapshot. Without `output`, `peers` or `fields` their parts are left
    out (a core alone, as the unit tests take it)."""
    state = pb.ProcessorState(epoch=mesh.epoch)
    state.mesh.SetInParent()  # a part given is present, even empty (`load` asks for it)
    mesh.dump_into(state.mesh)
    if output is not None:
        state.output.SetInParent()
        output.dump_into(state.output)
    if peers is not None or fields is not None:
        p = state.processor
        p.SetInParent()
        if peers is not None:
            peers.dump_into(p)
        if fields is not None:
            state.log_seq, p.last_time = fields.log_seq, fields.last_time
            p.acked.extend(fields.acked)
            p.acked_seqs.extend(fields.acked.values())
            p.recovering.extend(sorted(fields.recovering))
            p.resend.extend(sorted(fields.resend))
    body = state.SerializeToString()
    return pb.ProcessorSnapshot(version=VERSION, crc32=zlib.crc32(body), state=body).SerializeToString()


def load(data: bytes, mesh: Mesh, output: GatewayOutput | None = None,
         peers: Peers | None = None) -> ProcessorFields:
    """Fill `mesh` (and `output`, `peers`: fresh ones, made with this run's configuration)
    from a snapshot; the processor's fields. Raises BadSnapshot, the objects given then
    being garbage, when the snapshot does not decode, is of a version not read here, lacks
    a part asked for, or its state fails a check."""
    try:
        envelope = pb.ProcessorSnapshot.FromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, or anything it raises
        raise BadSnapshot(f"not a snapshot: {str(exc)[:200]}") from None
    if envelope.version not in READS:
        raise BadSnapshot(f"snapshot version {envelope.version}: this release reads "
                          f"{', '.join(map(str, sorted(READS)))}")
    if zlib.crc32(envelope.state) != envelope.crc32:
        raise BadSnapshot("snapshot damaged: its CRC-32 does not match (cut short, or altered)")
    try:
        state = pb.ProcessorState.FromString(envelope.state)
        if not state.epoch:
            raise ValueError("no epoch")
        for part, wanted in (("mesh", True), ("output", output is not None),
                             ("processor", peers is not None)):
            if wanted and not state.HasField(part):
                raise ValueError(f"no {part} part")
        mesh.load_from(state.mesh, state.epoch)
        mesh.check()
        if output is not None:
            output.load_from(state.output, state.epoch)
            output.check()
        p = state.processor
        if peers is not None:
            peers.load_from(p)
        return ProcessorFields(state.log_seq, p.last_time,
                               dict(zip(p.acked, p.acked_seqs, strict=True)),
                               set(p.recovering), set(p.resend))
    except Exception as exc:  # noqa: BLE001 - a KeyError, ValueError, AssertionError (check)…
        raise BadSnapshot(f"snapshot inconsistent: {type(exc).__name__}: {str(exc)[:200]}") from None
