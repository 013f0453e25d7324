"""The processor's inputs in a replicated log: NATS JetStream (issue 17), the I/O part.

The processor core is deterministic: replaying its inputs reproduces its state. So its
inputs are appended, in order, to one subject of one stream per shard, and a processor
(restarted, or a standby taking over) rebuilds its state by reading them back. What the
log must give, and how JetStream gives it:

- **Order and no loss**: one subject, one writer; each append acknowledged once stored
  (on a quorum of `replicas` nodes). Appends are pipelined (`publish_async`): never one
  round trip per input.
- **One writer (fencing)**: every append carries `Nats-Expected-Last-Sequence`, the
  sequence the writer believes is last. The stream holds nothing but its one subject, so
  a writer predicts it exactly (its previous append's, + 1). (Not the per-subject
  header: a replicated stream refuses it while an earlier append is in flight, so it
  cannot be pipelined; nor `Nats-Expected-Last-Msg-Id`: refused on a replicated stream,
  it stops the stream, nats-server 2.15.) A takeover
  appends its record at the last sequence *it* applied (`take_over`): from then on the
  old writer's next append finds another last sequence and fails, whatever its state
  (paused, partitioned): it is `Fenced` and must stop emitting at once.
- **No doubles on a retry**: `Nats-Msg-Id` (writer ID and entry number) within the
  stream's duplicate window. An append not answered (its NATS node died: the client
  reconnects to another) is published again, the same entry at the same expected
  sequence, after the one before it is stored, until `timeout` × `RETRY_FOR`: the
  stream stores it once whatever became of the first copy.

This module knows entries only as bytes; what they hold is the processor's business.
`JetStreamLog` is asyncio (nats-py); the processor's loop is not, and reaches it through
a thread (`LogThread`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats.aio.msg import Msg
from nats.errors import NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import api
from nats.js.errors import NotFoundError, ServiceUnavailableError

WRONG_LAST_SEQUENCE = 10071  # JetStream's error code: the expected last sequence did not match
DUPLICATE_IN_PROCESS = 10158  # a copy came while the first is being stored (replicated)
DUPLICATE_WINDOW = 120.0  # seconds a Nats-Msg-Id is remembered by the stream
# An append is published again until timeout × RETRY_FOR (10 s by default): past a NATS
# node's death, the client's reconnection and, when the node led the stream, the election
# of another leader (raft: 4 to 9 s without a heartbeat). Well within DUPLICATE_WINDOW.
RETRY_FOR = 8
MSG_ID = "Nats-Msg-Id"
READ_BATCH = 256  # entries fetched at once when reading back
SNAPSHOT = "latest"  # the object holding the latest snapshot
T = TypeVar("T")


class LogUnavailable(Exception):
    """The log cannot be reached, or did not acknowledge in time."""


class Fenced(Exception):
    """Another writer took over the log: this one must stop emitting at once."""


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Where the log is: `urls` of the NATS servers, the stream and subject of one shard."""

    urls: Sequence[str]
    stream: str = "meshstream-0"
    replicas: int = 1
    timeout: float = 2.0  # seconds to connect, and for an acknowledgement (RETRY_FOR)
    creds: str = ""  # a NATS credentials file (the user names it)
    tls_ca: str = ""  # TLS to NATS: the CA file to trust (tls:// URLs)

    @property
    def subject(self) -> str:
        """The stream's one subject: the inputs."""
        return f"meshstream.{self.stream}.in"


@dataclass(frozen=True, slots=True)
class Copy:
    """One publish of an entry: its answer's key on our inbox, the answer, the publish."""

    key: str
    answer: asyncio.Future[dict[str, object]]
    sent: asyncio.Future[None]


LOST: dict[str, object] = {}  # the "answer" of every copy unanswered at a reconnection


class JetStreamLog:
    """One writer's (or reader's) view of a shard's log. `open` first."""

    def __init__(self, config: LogConfig, writer: str) -> None:
        self.config = config
        self.writer = writer  # this process's name in Nats-Msg-Id (unique per start)
        self.nc: nats.NATS | None = None
        self.js: nats.js.JetStreamContext | None = None
        self.last = 0  # the sequence this writer expects to be last once its appends are stored
        self.appended = 0  # entries this writer has sent
        self.inbox = ""
        self.answers: dict[str, asyncio.Future[dict[str, object]]] = {}  # by entry, unanswered
        self.previous: tuple[int, asyncio.Future[int]] | None = None  # the last append: (seq, stored)
        self.follower: Any = None  # the subscription tailing the log (follow)

    async def open(self) -> int:
        """Connect and make sure the stream exists; the sequence of the last entry (0: none)."""
        c = self.config
        tls = ssl.create_default_context(cafile=c.tls_ca) if c.tls_ca else None
        try:
            # A silent server (paused, cut off) is left after 3 unanswered pings, well
            # within an append's RETRY_FOR; a dead one at once (its connection closes).
            # Reconnected, what was not answered is published again at once.
            nc = await asyncio.wait_for(nats.connect(
                list(c.urls), connect_timeout=c.timeout, max_reconnect_attempts=-1,
                reconnect_time_wait=c.timeout / 4, ping_interval=c.timeout,
                max_outstanding_pings=2, reconnected_cb=self._reconnected,
                user_credentials=c.creds or None, tls=tls), c.timeout * 2)
        except (NoServersError, OSError, TimeoutError, NatsTimeout) as exc:
            raise LogUnavailable(f"no NATS server at {', '.join(c.urls)}: {exc}") from None
        self.nc = nc
        self.js = nc.jetstream(timeout=c.timeout)
        # Appends are answered on an inbox of our own, matched by entry: nats-py's
        # publish_async leaves an API error (the fence) unanswered until its timeout.
        self.inbox = nc.new_inbox()
        await nc.subscribe(self.inbox + ".*", cb=self._answered)
        try:
            info = await self.js.stream_info(c.stream)
        except NotFoundError:
            info = await self.js.add_stream(api.StreamConfig(
                name=c.stream, subjects=[c.subject], storage=api.StorageType.FILE,
                num_replicas=c.replicas, duplicate_window=DUPLICATE_WINDOW, allow_direct=True))
        except (NatsTimeout, TimeoutError) as exc:
            raise LogUnavailable(f"JetStream did not answer: {exc}") from None
        self.last = info.state.last_seq
        return self.last

    def append(self, data: bytes) -> asyncio.Future[int]:
        """Append one entry after everything this writer appended before: its sequence once
        stored, or `Fenced`, or `LogUnavailable`. Pipelined: call again without awaiting
        (the publishes leave in the order of the calls: each task's first step queues it)."""
        assert self.nc is not None, "open() first"
        expected = self.last
        self.last += 1
        self.appended += 1
        token = str(self.appended)
        headers = {"Nats-Expected-Last-Sequence": str(expected), MSG_ID: f"{self.writer}:{token}"}
        copy = self._publish(token, data, headers)
        # published again, it waits for the entry before it (this writer's, at `expected`)
        before = self.previous[1] if self.previous and self.previous[0] == expected else None
        stored = asyncio.ensure_future(self._stored(token, data, headers, copy, expected + 1, before))
        self.previous = (expected + 1, stored)
        return stored

    def _publish(self, key: str, data: bytes, headers: dict[str, str]) -> Copy:
        """Publish one copy of an entry, answered on our inbox under `key`."""
        assert self.nc is not None
        answer: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self.answers[key] = answer
        sent = asyncio.ensure_future(self.nc.publish(self.config.subject, data,
                                                     reply=f"{self.inbox}.{key}", headers=headers))
        return Copy(key, answer, sent)

    async def _reconnected(self) -> None:
        """Every copy not answered yet left on the connection lost, or waited for this
        one: published again at once (a second copy is harmless, a lost one costs time)."""
        for answer in self.answers.values():
            if not answer.done():
                answer.set_result(LOST)

    async def _answered(self, msg: Msg) -> None:
        answer = self.answers.pop(msg.subject.rpartition(".")[2], None)
        if answer is not None and not answer.done():
            try:
                answer.set_result(json.loads(msg.data))
            except ValueError:
                answer.set_result({"error": {"description": "not JSON"}})

    async def _stored(self, token: str, data: bytes, headers: dict[str, str], copy: Copy,
                      predicted: int, before: asyncio.Future[int] | None) -> int:
        """Until the entry is known stored at `predicted` (answered so, or found there),
        publishing it again when a copy is not answered; `Fenced` when another writer's
        entry is there; `LogUnavailable` past timeout × RETRY_FOR."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout * RETRY_FOR
        copies, why = 1, "not answered"
        while True:
            ack = await self._answer(copy, deadline, len(data))
            if ack is not None:
                if await self._verdict(ack, headers[MSG_ID], predicted, alone=before is None):
                    return predicted
                why = str(ack.get("error"))[:200]
                if before is None or before.done():  # no leader yet, or no telling: in a moment
                    await asyncio.sleep(self.config.timeout / 8)
            if loop.time() >= deadline:
                raise LogUnavailable(f"no acknowledgement in {self.config.timeout * RETRY_FOR:g} s "
                                     f"({copies} copies): {why}")
            if before is not None:  # never after another writer's entry where ours was lost
                try:
                    await asyncio.wait_for(asyncio.shield(before), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    raise LogUnavailable("no acknowledgement of the entry before") from None
            copy = self._publish(f"{token}-{copies}", data, headers)
            copies += 1

    async def _answer(self, copy: Copy, deadline: float, size: int) -> dict[str, object] | None:
        """A copy's answer; None if none came within `timeout`, or before a reconnection."""
        try:
            await copy.sent
        except nats.errors.MaxPayloadError:
            raise LogUnavailable(f"an entry of {size} bytes is larger than the NATS servers' "
                                 "max_payload") from None
        except (OSError, nats.errors.Error):
            pass  # not sent (no connection): answered LOST once reconnected
        wait = max(0.0, min(self.config.timeout, deadline - asyncio.get_running_loop().time()))
        try:
            ack: dict[str, object] | None = await asyncio.wait_for(copy.answer, wait)
        except TimeoutError:
            ack = None
        finally:
            self.answers.pop(copy.key, None)
        return None if ack is LOST else ack

    async def _verdict(self, ack: dict[str, object], msg_id: str, predicted: int,
                       alone: bool) -> bool:
        """What an answer says: stored (True), not yet (False: publish again), or raises.
        A copy of an entry already stored is answered `duplicate` with its sequence, or,
        on a stream of one replica, "wrong last sequence" (the check comes first there):
        then the stream is asked what it holds at `predicted`. `alone`: no entry of this
        writer before it is in flight (nothing at `predicted` then means another writer)."""
        error = ack.get("error")
        if not isinstance(error, dict):
            if ack.get("seq") != predicted:  # nothing else writes our subject: a foreign writer
                raise Fenced(f"stored at {ack.get('seq')}, expected {predicted}")
            return True
        if error.get("err_code") == WRONG_LAST_SEQUENCE:
            there = await self._writer_of(predicted)
            if there == msg_id:
                return True
            if there or (there == "" and alone):  # another's entry there, or the log is short
                raise Fenced(f"the log has another writer: {error.get('description')}")
            return False  # the entry before ours is not stored yet (lost with a node), or unknown
        if error.get("err_code") == DUPLICATE_IN_PROCESS:
            return False  # answered once the first copy is stored: ask again
        if "err_code" in error:
            raise LogUnavailable(f"JetStream refused an append: {error.get('description')}")
        return False  # no JetStream answer (no responders while the stream has no leader)

    async def _writer_of(self, seq: int) -> str | None:
        """The Nats-Msg-Id of the entry at `seq`: "" if none is there, None if unknown."""
        assert self.js is not None
        try:
            msg = await self.js.get_msg(self.config.stream, seq, direct=True)
        except NotFoundError:
            return ""
        except (NatsTimeout, TimeoutError, OSError, nats.errors.Error):
            return None
        return str((msg.headers or {}).get(MSG_ID, "?"))

    async def take_over(self, applied: int, record: bytes) -> int:
        """Become the writer: append `record` right after `applied`, the last sequence this
        process applied; `Fenced` if the log has more (read it, then try again)."""
        self.last = applied
        return await self.append(record)

    async def read(self, start: int = 1) -> AsyncIterator[tuple[int, bytes]]:
        """The entries from sequence `start` to the last one stored when called, in order.
        Through a consumer, placed on one of the stream's nodes, maybe a dead one the
        cluster does not know dead yet (that takes minutes): then made again from where
        it stopped (another node), for up to timeout × RETRY_FOR."""
        assert self.js is not None, "open() first"
        info = await self.js.stream_info(self.config.stream)
        end = info.state.last_seq
        seq = start - 1
        deadline = asyncio.get_running_loop().time() + self.config.timeout * RETRY_FOR
        while seq < end:
            sub = None
            try:
                sub = await self.js.pull_subscribe(
                    self.config.subject, stream=self.config.stream, config=api.ConsumerConfig(
                        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq + 1,
                        ack_policy=api.AckPolicy.NONE, inactive_threshold=30.0))
                while seq < end:
                    for msg in await sub.fetch(min(READ_BATCH, end - seq), timeout=self.config.timeout):
                        seq = msg.metadata.sequence.stream
                        yield seq, msg.data
            except (NatsTimeout, ServiceUnavailableError):
                if asyncio.get_running_loop().time() >= deadline:
                    raise
            finally:
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()

    async def follow(self, start: int, entry: Callable[[int, bytes, int], None]) -> None:
        """Every entry from sequence `start` on, as it is stored, in order, to `entry(seq,
        data, behind)` (`behind`: entries stored after it, not yet delivered): a standby
        tailing the log. An ordered consumer: a gap or a lost server starts it again at
        the next sequence by itself."""
        assert self.js is not None, "open() first"

        async def delivered(msg: Msg) -> None:
            entry(msg.metadata.sequence.stream, msg.data, msg.metadata.num_pending)

        await self.unfollow()
        self.follower = await self.js.subscribe(
            self.config.subject, stream=self.config.stream, cb=delivered, ordered_consumer=True,
            config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                      opt_start_seq=start))

    async def unfollow(self) -> None:
        follower, self.follower = self.follower, None
        if follower is not None:
            with contextlib.suppress(Exception):
                await follower.unsubscribe()

    # ------------------------------------------------------------ snapshots

    @property
    def snapshots(self) -> str:
        """The object store bucket of the stream's snapshots (the latest, as `latest`)."""
        return f"{self.config.stream}-snapshots"

    async def latest_snapshot(self) -> bytes | None:
        """The latest snapshot stored, or None (none yet)."""
        assert self.js is not None, "open() first"
        try:
            store = await self.js.object_store(self.snapshots)
            got = await store.get(SNAPSHOT)
        except (NotFoundError, nats.js.errors.BucketNotFoundError, nats.js.errors.ObjectNotFoundError):
            return None
        except (NatsTimeout, TimeoutError) as exc:
            raise LogUnavailable(f"the snapshot store did not answer: {exc!r}") from None
        return bytes(got.data or b"")

    async def put_snapshot(self, data: bytes, trim_below: int) -> None:
        """Store `data` as the latest snapshot, then drop the log's entries below sequence
        `trim_below` (a snapshot already covers them)."""
        assert self.js is not None, "open() first"
        try:
            store = await self.js.object_store(self.snapshots)
        except (NotFoundError, nats.js.errors.BucketNotFoundError):
            store = await self.js.create_object_store(self.snapshots, api.ObjectStoreConfig(
                storage=api.StorageType.FILE, replicas=self.config.replicas))
        await store.put(SNAPSHOT, data)
        if trim_below > 1:
            await self.js.purge_stream(self.config.stream, seq=trim_below)

    async def close(self, drain: bool = True) -> None:
        """Drain (what was published goes, answers awaited) unless the log failed: then
        at once (a stalled server would hold a drain for its whole timeout)."""
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.drain() if drain else self.nc.close(),
                                       self.config.timeout)
            self.nc = None


class LogThread:
    """A JetStreamLog in a thread of its own, for a caller without an event loop (the
    processor's): `append` queues an entry and returns its number at once (1, 2, 3…);
    `stored_through()` is the highest number stored with every one before it, and raises
    the first failure (`Fenced`, `LogUnavailable`): after one nothing more is appended.
    `fileno()` becomes readable when that changes (for the caller's poller)."""

    def __init__(self, config: LogConfig, writer: str) -> None:
        self.log = JetStreamLog(config, writer)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="log", daemon=True)
        self.lock = threading.Lock()
        self.done: set[int] = set()  # stored, beyond `through`
        self.through = 0
        self.failure: Exception | None = None
        self.sent = 0
        self.queued: list[tuple[int, bytes]] = []  # appended, not yet handed to the log's thread
        self.signalled = False  # the pipe holds news the caller has not read
        self.arrived: list[tuple[int, bytes]] = []  # entries a follow delivered, not yet taken
        self.progress = asyncio.Event()  # set (in the log's thread) when an entry is stored
        self.snapshotting: asyncio.Future[None] | None = None
        self.snapshot_stored = 0  # the entry number of the last snapshot stored
        self.snapshot_error: Exception | None = None
        self.behind = 0
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    def open(self) -> int:
        """Connect (LogUnavailable if it cannot): the sequence of the last entry stored."""
        self.thread.start()
        return int(self._call(self.log.open()))

    def read(self, start: int = 1) -> list[tuple[int, bytes]]:
        async def all_of() -> list[tuple[int, bytes]]:
            return [entry async for entry in self.log.read(start)]
        return list(self._call(all_of()))  # type: ignore[call-overload]

    def take_over(self, applied: int, record: bytes) -> int:
        """Become the writer (JetStreamLog.take_over), the record stored when it returns;
        later appends follow it."""
        return int(self._call(self.log.take_over(applied, record)))

    def append(self, data: bytes) -> int:
        """Queue an entry; its number. The log's thread is woken once for what queued
        meanwhile, not once per entry (a wake-up costs more than the append: profiled)."""
        self.sent += 1
        with self.lock:
            self.queued.append((self.sent, data))
            wake = len(self.queued) == 1
        if wake:
            self.loop.call_soon_threadsafe(self._append_queued)
        return self.sent

    def _append_queued(self) -> None:
        with self.lock:
            queued, self.queued = self.queued, []
        for number, data in queued:
            if self.failure is not None:
                return
            self.log.append(data).add_done_callback(functools.partial(self._done, number))

    def _done(self, number: int, future: asyncio.Future[int]) -> None:
        if future.cancelled():  # at close
            return
        error = future.exception()
        if error is not None and not isinstance(error, Exception):
            return
        with self.lock:
            if self.failure is None and error is not None:
                self.failure = error
            elif error is None:
                self.done.add(number)
                while self.through + 1 in self.done:
                    self.through += 1
                    self.done.discard(self.through)
            self.progress.set()
            if self.signalled:  # the caller has not read the last news yet: one wake-up
                return
            self.signalled = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"!")

    def stored_through(self) -> int:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass
        with self.lock:
            self.signalled = False
            if self.failure is not None:
                raise self.failure
            return self.through

    def follow(self, start: int) -> None:
        """Tail the log from sequence `start`: entries gather for `followed()`, and
        `fileno()` becomes readable when some arrived."""
        self._call(self.log.follow(start, self._followed))

    def unfollow(self) -> None:
        """Stop tailing; what arrived and was not taken is dropped (read it again)."""
        self._call(self.log.unfollow())
        with self.lock:
            self.arrived.clear()

    def followed(self) -> tuple[list[tuple[int, bytes]], int]:
        """The entries that arrived since the last call, in order, and how many more the
        log had stored then (the standby's lag)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._r, 4096):
                pass
        with self.lock:
            self.signalled = False
            arrived, self.arrived = self.arrived, []
            return arrived, self.behind

    def _followed(self, seq: int, data: bytes, behind: int) -> None:
        with self.lock:
            self.arrived.append((seq, data))
            self.behind = behind
            if self.signalled:
                return
            self.signalled = True
        with contextlib.suppress(BlockingIOError):
            os.write(self._w, b"!")

    def latest_snapshot(self) -> bytes | None:
        return self._call(self.log.latest_snapshot())

    def put_snapshot(self, number: int, data: bytes, trim_below: int) -> None:
        """Once this writer's entry `number` is stored (and so everything the snapshot
        holds), store `data` as the latest snapshot and trim the log below `trim_below`;
        in the log's thread, the caller waits for nothing. Not stored if the log failed
        first; a failure to store is logged by the caller's next `snapshot_failure()`."""
        self.loop.call_soon_threadsafe(self._snapshot_task, number, data, trim_below)

    def _snapshot_task(self, number: int, data: bytes, trim_below: int) -> None:
        async def when_stored() -> None:
            while self.through < number:
                if self.failure is not None:
                    return
                self.progress.clear()
                await self.progress.wait()
            try:
                await self.log.put_snapshot(data, trim_below)
            except Exception as exc:  # noqa: BLE001 - the log is intact without it: reported
                self.snapshot_error = exc
            else:
                self.snapshot_stored = number
        self.snapshotting = asyncio.ensure_future(when_stored())

    def close(self, abandon: bool = False) -> None:
        """Drain what was appended, unless the log failed or the caller `abandon`s it."""
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self.log.close(drain=self.failure is None and not abandon))
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _call(self, coro: Coroutine[object, object, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.log.config.timeout * 10)
