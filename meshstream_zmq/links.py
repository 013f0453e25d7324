"""Every ZeroMQ socket between meshstream's processes, built in one place.

- `bind_processor`: the processor's PULL (from gateways), XPUB (to gateways and
  observers) and ROUTER (with watchers): HWMs, linger, and, with `keys_dir`, CURVE
  servers whose ZAP handler admits only known keys, per socket.
- `gateway_sockets`: a gateway's PUSH and SUB; `watcher_socket`: a watcher's DEALER;
  both CURVE clients with their own pair and the processor's public key when
  `keys_dir` is set.

What is refused before any socket exists (a `LinkError`, whose message is printed
as is):

- binding TCP on an address that is not loopback without `keys_dir`;
- an IPC run directory that is not ours or not mode 0700;
- an IPC socket a live processor is listening on (a second instance on the same
  port): only a stale socket file (nothing listening) is removed.

With `keys_dir`, CURVE is used whatever the transport, IPC included. Without it,
IPC peers are trusted as the same user (the run directory is 0700, sockets 0600),
and loopback TCP is allowed with a warning (any local user could connect).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import secrets
import socket
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from . import keys as keyfiles
from .config import Config, Endpoints

log = logging.getLogger("meshstream.links")

# ZAP domains: which role's keys each processor socket admits.
INBOUND, OUTBOUND, WATCHERS = "meshstream-inbound", "meshstream-outbound", "meshstream-watchers"
PAIR = "meshstream-pair"  # the PairBeat PUB of a processor pair: the other processor only
REFUSAL_LOG_INTERVAL = 60.0  # one log line per refused key and socket per this many seconds

# The sockets handed out. pyzmq types getsockopt() as `int | bytes`; callers read int
# options (EVENTS, FD) as they did when `ctx.socket()` gave them an untyped socket.
Sock = Any


class LinkError(SystemExit):
    """A refusal to start: the message says why and what to do.

    A SystemExit, so a process that does not catch it exits (status 1) printing
    just the message; the processor logs it first."""


# ------------------------------------------------------------------ addresses


def tcp_host(endpoint: str) -> str | None:
    """The host of a `tcp://HOST:PORT` endpoint (brackets removed), else None."""
    if not endpoint.startswith("tcp://"):
        return None
    host = endpoint[len("tcp://"):].rpartition(":")[0]
    host = host.rpartition(";")[2]  # tcp://source;host:port connects from `source`
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", "0.0.0.0" is not loopback either (ip_address says so); names: unknown


def check_bind(config: Config) -> list[str]:
    """Refuse (LinkError) binding TCP beyond loopback without keys; return warnings to log."""
    hosts = [h for h in map(tcp_host, _all(config.endpoints)) if h is not None]
    if config.keys_dir:
        return []
    exposed = sorted({h for h in hosts if not is_loopback(h)})
    if exposed:
        raise LinkError(
            f"refusing to bind the processor's sockets on TCP {', '.join(exposed)} without keys: "
            "anyone who can reach that address could join the mesh. Create keys with "
            "`meshstream keys DIR` and start with --keys-dir DIR (docs/operations.md, Keys), "
            "or bind TCP on 127.0.0.1 only.")
    if hosts:
        return ["processor sockets on loopback TCP without --keys-dir: any local user can "
                "connect to them (use --keys-dir, or IPC, to keep them out)"]
    return []


def _all(ep: Endpoints) -> tuple[str, str, str]:
    return (ep.inbound, ep.outbound, ep.watchers)


# ------------------------------------------------------------------ the IPC run directory


def _ipc_path(endpoint: str) -> Path | None:
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


def check_run_dir(path: Path) -> None:
    """An existing run directory must be ours, a real directory, and mode 0700."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise LinkError(f"run directory {path} exists and is not a directory: refusing to use it "
                        "(remove it, or choose another with --run-dir)")
    if st.st_uid != os.getuid():
        raise LinkError(f"run directory {path} belongs to uid {st.st_uid}, not to us "
                        f"(uid {os.getuid()}): refusing to use it (another user may be "
                        "impersonating meshstream; choose another with --run-dir)")
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        raise LinkError(f"run directory {path} is mode {mode:04o}, not 0700: refusing to use it "
                        f"(other users could reach its sockets; `chmod 700 {path}` or remove it)")


def prepare_run_dir(path: str | Path) -> Path:
    """Create the run directory 0700 (its parents as needed), or check the existing one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(p, 0o700)
        os.chmod(p, 0o700)  # whatever the umask
    except FileExistsError:
        pass
    check_run_dir(p)
    return p


def ipc_listening(path: Path) -> bool:
    """Whether something accepts connections on the UNIX socket `path` (a live processor)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTSOCK, errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise
        return True


def claim_ipc(endpoints: Endpoints, port: int | None = None) -> None:
    """Before binding: refuse if a live processor listens on any of these IPC sockets;
    remove the stale socket files a killed processor left."""
    paths = [p for p in map(_ipc_path, _all(endpoints)) if p is not None]
    for path in paths:
        if path.exists() and ipc_listening(path):
            where = f" (port {port})" if port is not None else ""
            raise LinkError(
                f"another meshstream processor is already running on {path}{where}: "
                "refusing to start a second one on the same sockets. Stop it first, or start "
                "this instance with another --port (or --run-dir).")
    for path in paths:
        try:
            if stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()  # stale: nothing listens
        except FileNotFoundError:
            pass


def prepare_ipc(config: Config) -> None:
    """The checks `bind_processor` does for IPC, callable before anything is started
    (`meshstream run` does, so a second instance stops before starting children)."""
    ep = config.endpoints
    for path in {p.parent for p in map(_ipc_path, _all(ep)) if p is not None}:
        prepare_run_dir(path)
    claim_ipc(ep, config.port)


# ------------------------------------------------------------------ ZAP


class Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler thread, with meshstream's key ring.

    Each processor socket has its own ZAP domain; the credentials callback admits a
    key only if it is known for that socket's roles, and logs each refusal (the
    key's short fingerprint, never more) at most once per REFUSAL_LOG_INTERVAL.
    A connection's ZAP User-Id is `<role>:<name>` of its key, which the processor
    reads from each watcher message to check its claims.
    """

    def __init__(self, context: zmq.Context, ring: keyfiles.KeyRing) -> None:
        super().__init__(context, log=logging.getLogger("meshstream.zap"))
        self.ring = ring
        self.roles = {INBOUND: ("gateway",), OUTBOUND: ("gateway", "watcher"),
                      WATCHERS: ("watcher",), PAIR: ("processor",)}
        self.refusals: dict[tuple[str, str], float] = {}
        self.refused = 0  # count, for tests and metrics
        self.lock = threading.Lock()
        for domain in self.roles:
            self.configure_curve_callback(domain, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        peer = self.ring.peer(key)
        if peer is not None and peer.role in self.roles.get(domain, ()):
            return True
        fp = keyfiles.fingerprint(key)
        with self.lock:
            self.refused += 1
            now = time.monotonic()
            last = self.refusals.get((domain, fp))
            if last is not None and now - last < REFUSAL_LOG_INTERVAL:
                return False
            self.refusals[(domain, fp)] = now
        log.warning("refused a CURVE key", extra={"fields": {
            "socket": domain.removeprefix("meshstream-"), "key": fp,
            "reason": "unknown key" if peer is None else f"a {peer.role} key may not use this socket"}})
        return False

    def curve_user_id(self, client_public_key: bytes) -> str:
        peer = self.ring.peer(z85.encode(client_public_key))
        return peer.user_id if peer is not None else "unknown"


# ------------------------------------------------------------------ the processor


@dataclass
class ProcessorLinks:
    pull: Sock
    pub: Sock
    router: Sock
    auth: Authenticator | None = None
    ring: keyfiles.KeyRing | None = None
    pair_pub: Sock | None = None  # a processor pair: our PairBeats, and the peer's
    pair_sub: Sock | None = None

    @property
    def curve(self) -> bool:
        return self.auth is not None

    def recv_watcher(self, flags: int = 0) -> tuple[list[bytes], str | None]:
        """One ROUTER message and the ZAP User-Id of its sender's key (None without keys)."""
        if self.auth is None:
            return self.router.recv_multipart(flags), None
        frames = self.router.recv_multipart(flags, copy=False)
        return [f.bytes for f in frames], str(frames[-1].get("User-Id") or "")

    def close(self) -> None:
        for sock in (self.pull, self.pub, self.router, self.pair_pub, self.pair_sub):
            if sock is not None:
                sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


def bind_processor(ctx: zmq.Context, config: Config) -> ProcessorLinks:
    """The processor's three sockets, bound; LinkError (with the reason) if it must not start."""
    for warning in check_bind(config):
        log.warning(warning)
    ep = config.endpoints
    pair_bind, pair_peer = config.pair_endpoints
    if config.peer and not pair_bind:
        raise LinkError("--peer (a processor pair) needs --tcp HOST:PORT: the pair talks over TCP")
    prepare_ipc(config)
    auth: Authenticator | None = None
    ring: keyfiles.KeyRing | None = None
    pair: keyfiles.KeyPair | None = None
    if config.keys_dir:
        try:
            pair = keyfiles.processor_pair(config.keys_dir)
            ring = keyfiles.KeyRing.load(config.keys_dir)
        except keyfiles.KeyFileError as exc:
            raise LinkError(str(exc)) from None
        ring.processors[pair.public] = keyfiles.Peer("processor", "processor",
                                                     keyfiles.fingerprint(pair.public))
        auth = Authenticator(ctx, ring)
        auth.start()  # before any bind: a CURVE server with no ZAP handler admits every key
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 100_000)
    pub = ctx.socket(zmq.XPUB)
    # No XPUB_NODROP: a subscriber whose pipe is full loses messages, it alone, and a send
    # never blocks or fails for the others (meshstream_zmq/link.py bounds what a gateway
    # that stopped reading is owed, by bytes and by age).
    pub.setsockopt(zmq.SNDHWM, 100_000)
    pub.setsockopt(zmq.XPUB_VERBOSE, 1)
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    # A watcher that comes back with its routing ID (after trying the other of a pair) takes
    # it over from a connection this end has not yet seen closed, instead of being ignored.
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)
    router.setsockopt(zmq.SNDHWM, 100_000)
    links = ProcessorLinks(pull, pub, router, auth, ring)
    binds = [(pull, ep.inbound, INBOUND), (pub, ep.outbound, OUTBOUND), (router, ep.watchers, WATCHERS)]
    if pair_bind:
        links.pair_pub = ctx.socket(zmq.PUB)
        binds.append((links.pair_pub, pair_bind, PAIR))
    try:
        for sock, endpoint, domain in binds:
            sock.setsockopt(zmq.LINGER, 0)
            if pair is not None:
                sock.setsockopt(zmq.ZAP_DOMAIN, domain.encode())
                sock.setsockopt(zmq.CURVE_SERVER, 1)
                sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise LinkError(f"{endpoint} is in use (another meshstream processor, or "
                                    "another program): refusing to start") from None
                raise LinkError(f"cannot bind {endpoint}: {exc}") from None
            path = _ipc_path(endpoint)
            if path is not None:
                os.chmod(path, 0o600)  # only our user may connect (the directory is 0700 too)
        if pair_peer:
            links.pair_sub = sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            if pair is not None:  # both processors of a pair hold the one processor key
                _client_curve(sub, pair, pair.public)
            sub.connect(pair_peer)
    except BaseException:
        links.close()
        raise
    if ring is not None:
        log.info("CURVE on every processor socket", extra={"fields": {
            "gateway_keys": len(ring.gateways), "watcher_keys": len(ring.watchers),
            "key": keyfiles.fingerprint(pair.public if pair else b"")}})
    return links


# ------------------------------------------------------------------ gateways and watchers


def _client_curve(sock: zmq.Socket, pair: keyfiles.KeyPair, server: bytes) -> None:
    sock.setsockopt(zmq.CURVE_SERVERKEY, server)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, pair.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, pair.secret)


def _client_checks(config: Config, endpoints: tuple[str, ...]) -> None:
    for endpoint in endpoints:
        path = _ipc_path(endpoint)
        if path is not None:
            check_run_dir(path.parent)  # never talk to sockets in someone else's directory
        host = tcp_host(endpoint)
        if host is not None and not config.keys_dir and not is_loopback(host):
            log.warning("connecting to the processor over TCP without --keys-dir: a processor "
                        "beyond loopback requires keys and will refuse this connection",
                        extra={"fields": {"endpoint": endpoint[:200]}})


def gateway_sockets(ctx: zmq.Context, config: Config, gateway_id: str,
                    ep: Endpoints) -> tuple[Sock, Sock]:
    """A gateway's PUSH (to the processor's PULL) and SUB (its own topic and the beats),
    connected to the processor at `ep` (one of a pair's two, or the only one)."""
    _client_checks(config, (ep.inbound, ep.outbound))
    curve = None
    if config.keys_dir:
        try:
            curve = (keyfiles.gateway_pair(config.keys_dir), keyfiles.processor_public(config.keys_dir))
        except keyfiles.KeyFileError as exc:
            raise LinkError(str(exc)) from None
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.IMMEDIATE, 1)  # no processor connected: EAGAIN, not a silent queue
    push.setsockopt(zmq.SNDHWM, 50_000)
    push.setsockopt(zmq.LINGER, 0)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, gateway_id.encode() + b".")
    sub.setsockopt(zmq.SUBSCRIBE, b"processor")
    if curve is not None:
        for sock in (push, sub):
            _client_curve(sock, *curve)
    push.connect(ep.inbound)
    sub.connect(ep.outbound)
    return push, sub


def _watcher_curve(sock: Sock, config: Config, name: str) -> None:
    """CURVE client options with the watcher's own key (its DEALER, an observer's SUB)."""
    if config.keys_dir:
        try:
            pair = keyfiles.watcher_pair(config.keys_dir, name)
            server = keyfiles.processor_public(config.keys_dir)
        except keyfiles.KeyFileError as exc:
            sock.close(linger=0)
            raise LinkError(str(exc)) from None
        _client_curve(sock, pair, server)


def watcher_identity() -> bytes:
    """A routing ID of a watcher's own (ZMQ_ROUTING_ID: 16 random bytes, the first not 0,
    which ZeroMQ keeps for the IDs it makes up): the same to both processors of a pair and
    across a processor restart, so the log's record of it still names this watcher."""
    return bytes([secrets.randbelow(255) + 1]) + secrets.token_bytes(15)


def watcher_socket(ctx: zmq.Context, config: Config, name: str, endpoint: str,
                   identity: bytes = b"") -> Sock:
    """A watcher's DEALER to the processor's ROUTER, connected (CURVE with the watcher's own
    key), with `identity` as its routing ID when given (watcher_identity)."""
    _client_checks(config, (endpoint,))
    sock = ctx.socket(zmq.DEALER)
    if identity:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    _watcher_curve(sock, config, name)
    sock.connect(endpoint)
    return sock


def observer_socket(ctx: zmq.Context, config: Config, name: str, endpoints: Sequence[str]) -> Sock:
    """An event observer's SUB to the processors' XPUB (both of a pair: only the active one
    publishes), with the watcher's key; the caller subscribes."""
    _client_checks(config, tuple(endpoints))
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, 100_000)
    _watcher_curve(sub, config, name)
    for endpoint in endpoints:
        sub.connect(endpoint)
    return sub
