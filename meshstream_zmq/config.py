"""Configuration and ZeroMQ endpoints: the one place every process reads them from.

Values come from command-line flags, then `MESHSTREAM_*` environment variables,
then the defaults below. Endpoints are IPC sockets in a private runtime directory
unless `--tcp HOST:PORT` (or explicit endpoint flags) says otherwise.

`meshstream run` builds one Config and hands it whole to every child it spawns
(pickled by multiprocess; only `metrics_port` differs per child), so a new field
reaches every process with no copying; keep fields plain, picklable values.
`meshstream processor|gateway|watcher` alone builds its own from flags and env.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

ENV_PREFIX = "MESHSTREAM_"
DIRECT_MODES = ("on", "shared-room", "off")  # --direct-messages
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_ADMIN_TOKEN = 16  # characters: shorter --admin-token values are refused at start


class ConfigError(ValueError):
    """A setting no process can start with: `meshstream` exits 2 with this message."""


def default_run_dir(port: int) -> str:
    """A private directory per instance (per port), so two instances never share sockets."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return str(Path(base) / f"meshstream-{os.getuid()}-{port}")


@dataclass(frozen=True)
class Endpoints:
    """The processor's three sockets; gateways and watchers connect to them."""

    inbound: str  # processor PULL  <- gateway PUSH
    outbound: str  # processor XPUB -> gateway SUB (and event observers)
    watchers: str  # processor ROUTER <-> watcher DEALER

    @classmethod
    def ipc(cls, run_dir: str) -> Endpoints:
        return cls(f"ipc://{run_dir}/inbound", f"ipc://{run_dir}/outbound",
                   f"ipc://{run_dir}/watchers")

    @classmethod
    def tcp(cls, host: str, port: int) -> Endpoints:
        return cls(f"tcp://{host}:{port}", f"tcp://{host}:{port + 1}", f"tcp://{host}:{port + 2}")


@dataclass(frozen=True)
class Config:
    host: str = "0.0.0.0"
    port: int = 8765
    gateways: int = field(default_factory=lambda: os.cpu_count() or 1)
    run_dir: str = ""
    tcp: str = ""  # "HOST:PORT": processor sockets on PORT, PORT+1, PORT+2
    inbound: str = ""
    outbound: str = ""
    watchers_endpoint: str = ""
    metrics_port: int = 0  # 0: no metrics endpoint; the supervisor derives one per process
    max_frame: int = 64 * 1024
    send_queue: int = 1024 * 1024  # bytes buffered per connection before it is closed as slow
    rate_limit: float = 200.0  # frames/s per connection (0: unlimited)
    rate_burst: int = 1000  # bucket size (0: 2 × rate_limit)
    max_rooms_per_client: int = 100  # rooms one client may be in, the lobby not counted (0: no limit)
    max_connections: int = 20000  # per gateway process (0: no limit)
    max_connections_per_ip: int = 0  # per gateway process and source address (0: no limit)
    allowed_origins: str = ""  # comma-separated Origin values; set: any other gets HTTP 403
    direct_messages: str = "on"  # on | shared-room | off
    jwt_secret: str = ""  # HS256 key: every connection then needs a token
    jwt_public_key: str = ""  # PEM file (RS256/ES256): every connection then needs a token
    jwt_audience: str = ""  # required `aud` of tokens, when set
    jwt_issuer: str = ""  # required `iss` of tokens, when set
    tls_cert: str = ""  # PEM certificate chain: gateways serve wss:// and https://
    tls_key: str = ""  # its PEM private key
    resume_window: float = 60.0  # seconds a client whose connection was lost keeps its session
    history_size: int = 1000  # room messages kept per room for resume and `history` (0: none)
    history_age: float = 300.0  # seconds a room message is kept for resume and `history`
    history_bytes: int = 128 << 20  # every room's history together, at most (oldest dropped first)
    direct_history: int = 100  # direct messages kept per client for resume
    direct_history_age: float = 300.0  # seconds a direct message is kept for resume
    direct_history_bytes: int = 32 << 20  # every client's held direct messages together, at most
    max_header_bytes: int = 16384  # bytes of one HTTP request's head (request line and headers)
    keys_dir: str = ""  # CURVE keys from `meshstream keys DIR`: required for TCP beyond loopback
    # A primary/backup processor pair (docs/deploy.md, "A standby processor"): the other
    # processor's --tcp HOST:PORT. Processors exchange their state with it (on PORT+3);
    # gateways and watchers fail over between --tcp and it.
    peer: str = ""
    backup: bool = False  # this processor starts as the standby of the pair
    failover_timeout: float = 2.0  # seconds from the active processor's death to the standby serving
    admin_token: str = ""  # /admin needs it (Bearer); unset: /admin answers loopback clients only
    api_key: str = ""  # the server API (/api/, docs/api.md) needs it (`apikey`); unset: the API is off
    api_max_body: int = 64 * 1024  # bytes of one server API request's body; more: 413
    api_idle_timeout: float = 30.0  # seconds a server API connection is kept open between requests
    restarts: int = 0  # set by the supervisor: how often this child was restarted (shown in /admin)
    heartbeat: float = 0.5  # seconds between heartbeats, every direction
    peer_timeout: float = 3.0  # silence after which a gateway, watcher or processor is dead
    time_scale: float = 1.0  # Words Battle durations × this
    watchers: bool = True  # the supervisor starts the Words Battle watchers
    # Webhooks (services/webhooks.py, docs/operations.md): set, `meshstream run` starts them.
    webhook_url: str = ""  # where event batches are POSTed (http:// or https://)
    webhook_secret_file: str = ""  # file holding the HMAC-SHA256 key that signs each body
    webhook_rooms: str = ""  # comma-separated room-name prefixes whose messages are sent too
    webhook_timeout: float = 10.0  # seconds one POST may take before it is retried
    web_dir: str = ""
    log_level: str = "info"
    # The processor's inputs in a replicated log (meshstream_zmq/journal.py, docs/design.md
    # "The log"): "off" (state in memory only), "embedded" (`meshstream run` starts a
    # nats-server of its own and points the processor at it: services/embedded_log.py; the
    # default of `meshstream run` with a processor and no --peer), or
    # nats://HOST:PORT[,nats://…] (JetStream).
    log: str = "off"
    log_replicas: int = 1  # copies of the log's stream (a NATS cluster: 3)
    # entries between snapshots of the processor (the log is trimmed behind them); 0: none
    snapshot_every: int = 10000
    log_stream: str = "meshstream-0"  # the stream's name (its subject: meshstream.<name>.in)
    log_creds: str = ""  # a NATS credentials file (the user names it)
    log_tls_ca: str = ""  # TLS to NATS (tls:// URLs): the CA file to trust

    @property
    def log_urls(self) -> list[str]:
        """The NATS servers of --log (none when off; embedded: the supervisor names it)."""
        if self.log in ("off", "embedded"):
            return []
        return [u.strip() for u in self.log.split(",") if u.strip()]

    @property
    def endpoints(self) -> Endpoints:
        if self.tcp:
            host, _, port = self.tcp.rpartition(":")
            base = Endpoints.tcp(host or "127.0.0.1", int(port))
        else:
            base = Endpoints.ipc(self.resolved_run_dir)
        return Endpoints(self.inbound or base.inbound, self.outbound or base.outbound,
                         self.watchers_endpoint or base.watchers)

    @property
    def peer_endpoints(self) -> Endpoints | None:
        """The other processor of a pair (its three sockets), or None without --peer."""
        if not self.peer:
            return None
        host, _, port = self.peer.rpartition(":")
        return Endpoints.tcp(host or "127.0.0.1", int(port))

    @property
    def processors(self) -> list[Endpoints]:
        """The processors a gateway or watcher may talk to, the primary first."""
        return [self.endpoints] + ([self.peer_endpoints] if self.peer_endpoints else [])

    @property
    def processor_silence(self) -> float:
        """Silence after which a gateway or watcher gives up on its processor: with a pair,
        half the failover timeout (then it tries the other; the standby takes over after
        as long a silence of its peer); alone, the peer timeout."""
        return self.failover_timeout / 2 if self.peer else self.peer_timeout

    @property
    def pair_endpoints(self) -> tuple[str, str]:
        """The processors' pair link: (ours to bind, the peer's to connect), on --tcp and --peer
        PORT+3; ("", "") without --peer."""
        if not self.peer or not self.tcp:
            return "", ""
        host, _, port = self.tcp.rpartition(":")
        peer_host, _, peer_port = self.peer.rpartition(":")
        return (f"tcp://{host or '127.0.0.1'}:{int(port) + 3}",
                f"tcp://{peer_host or '127.0.0.1'}:{int(peer_port) + 3}")

    @property
    def resolved_run_dir(self) -> str:
        return self.run_dir or default_run_dir(self.port)

    @property
    def resolved_web_dir(self) -> str:
        return self.web_dir or str(Path(__file__).resolve().parent.parent / "web")

    def with_overrides(self, **values: Any) -> Config:
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        """Defaults overridden by MESHSTREAM_<FIELD> variables; ConfigError names a variable
        whose value is not of its setting's type."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        defaults = cls()
        for f in fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            default = getattr(defaults, f.name)
            try:
                if isinstance(default, bool):
                    values[f.name] = raw.lower() not in ("0", "false", "no", "off")
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                kind = "an integer" if isinstance(default, int) else "a number"
                raise ConfigError(f"{name}={raw[:40]!r}: must be {kind}") from None
        return cls(**values)

    def problems(self) -> list[str]:
        """Every setting no process could start with, as "--flag: reason" lines (empty: fine).

        Checked by `meshstream` before any child starts, so a bad value stops the start
        with exit 2 instead of a child that raises and is restarted forever."""
        out: list[str] = []

        def need(ok: bool, flag: str, reason: str, secret: bool = False) -> None:
            if not ok:
                got = "" if secret else f" (got {str(getattr(self, flag.replace('-', '_')))[:40]!r})"
                env = ENV_PREFIX + flag.replace("-", "_").upper()
                out.append(f"--{flag} ({env}): {reason}{got}")

        need(0 < self.port < 65536, "port", "must be 1 to 65535")
        need(self.gateways >= 0, "gateways", "must be 0 or more")
        need(0 <= self.metrics_port < 65536, "metrics-port", "must be 0 (off) to 65535")
        for flag in ("max-frame", "send-queue", "heartbeat", "peer-timeout", "failover-timeout",
                     "time-scale", "history-age", "direct-history-age", "api-idle-timeout"):
            need(getattr(self, flag.replace("-", "_")) > 0, flag, "must be more than 0")
        for flag in ("rate-limit", "rate-burst", "max-rooms-per-client", "max-connections",
                     "max-connections-per-ip", "resume-window", "history-size", "history-bytes",
                     "direct-history", "direct-history-bytes"):
            need(getattr(self, flag.replace("-", "_")) >= 0, flag, "must be 0 or more")
        need(self.max_header_bytes >= 1024, "max-header-bytes", "must be 1024 or more")
        need(self.peer_timeout > self.heartbeat, "peer-timeout", "must be longer than --heartbeat")
        need(not self.peer or self.failover_timeout > self.heartbeat, "failover-timeout",
             "must be longer than --heartbeat")
        need(self.direct_messages in DIRECT_MODES, "direct-messages",
             f"must be one of {', '.join(DIRECT_MODES)}")
        need(self.log_level in LOG_LEVELS, "log-level", f"must be one of {', '.join(LOG_LEVELS)}")
        for flag in ("tcp", "peer"):
            value = getattr(self, flag)
            host, sep, port = value.rpartition(":")
            need(not value or (sep == ":" and port.isdigit() and 0 < int(port) < 65533),
                 flag, "must be HOST:PORT with PORT from 1 to 65532 (PORT+3 are used too)")
        need(not self.peer or bool(self.tcp), "peer", "needs --tcp (the pair talks over TCP)")
        need(self.log in ("off", "embedded") or (bool(self.log_urls) and all(
            u.startswith(("nats://", "tls://")) and u.rpartition(":")[2].isdigit() for u in self.log_urls)),
             "log", "must be off, embedded, or nats://HOST:PORT (tls://HOST:PORT) URLs separated by commas")
        need(self.log != "embedded" or not self.peer, "log",
             "embedded cannot be shared by a pair: with --peer, point both at a NATS cluster "
             "(--log nats://…) or use --log off")
        need(1 <= self.log_replicas <= 5, "log-replicas", "must be 1 to 5")
        need(self.snapshot_every == 0 or self.snapshot_every >= 100, "snapshot-every",
             "must be 0 (no snapshots) or at least 100 entries")
        need(bool(self.log_stream) and all(c.isalnum() or c in "-_" for c in self.log_stream),
             "log-stream", "must be letters, digits, - and _")
        need(not self.backup or bool(self.peer), "backup", "needs --peer (the primary)")
        need(not self.webhook_url or self.webhook_url.startswith(("http://", "https://")),
             "webhook-url", "must be an http:// or https:// URL")
        need(not self.webhook_url or bool(self.webhook_secret_file), "webhook-secret-file",
             "needs a file with the webhook secret (webhooks are always signed)")
        need(self.webhook_timeout > 0, "webhook-timeout", "must be more than 0")
        for flag in ("admin-token", "api-key"):
            value = getattr(self, flag.replace("-", "_"))
            need(not value or len(value) >= MIN_ADMIN_TOKEN, flag,
                 f"must be at least {MIN_ADMIN_TOKEN} characters (e.g. `openssl rand -hex 16`)",
                 secret=True)
        need(self.api_max_body >= 1024, "api-max-body", "must be 1024 or more")
        return out
