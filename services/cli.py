"""The `meshstream` command: `run` (everything) or one service alone.

    meshstream run [--port 8765] [--gateways N] [--time-scale 1.0] [--no-watchers]
                   [--no-processor --first-index K]   (a gateway host: docs/deploy.md)
    meshstream processor [--tcp HOST:PORT | --inbound/--outbound/--watchers-endpoint URL]
    meshstream gateway --index N [--port 8765] [endpoint flags]
    meshstream watcher NAME [endpoint flags]    (NAME: words-battle-lobby, words-battle-games, echo)
    meshstream webhooks --url URL --secret FILE [--rooms PREFIXES]   (events to a backend)
    meshstream keys DIR [--watcher NAME=CLAIMS ...] [--force]   (CURVE keys for --keys-dir)
    meshstream restart-gateways [--port P | --run-dir D] [--timeout S]   (rolling restart)
    meshstream switchover [--port P | --run-dir D] [--timeout S]   (the standby takes over)

Every flag also reads MESHSTREAM_<FLAG> from the environment (flags win).
"""

from __future__ import annotations

import argparse
import os
import sys

from meshstream_zmq.config import Config, ConfigError

OFF = ("0", "false", "no", "off")  # as Config.from_env reads booleans


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("endpoints (default: IPC in a private run directory)")
    g.add_argument("--run-dir", help="directory for IPC sockets (default: per port, private)")
    g.add_argument("--tcp", metavar="HOST:PORT",
                   help="processor sockets on TCP PORT, PORT+1, PORT+2 instead of IPC")
    g.add_argument("--inbound", help="processor PULL endpoint, e.g. tcp://10.0.0.5:7000")
    g.add_argument("--outbound", help="processor XPUB endpoint")
    g.add_argument("--watchers-endpoint", help="processor ROUTER endpoint for watchers")
    g.add_argument("--peer", metavar="HOST:PORT",
                   help="the other processor of a primary/backup pair (its --tcp): gateways and "
                        "watchers fail over to it; processors watch each other on PORT+3")
    g.add_argument("--backup", action="store_true", default=None,
                   help="(processor) start as the pair's standby")
    g.add_argument("--failover-timeout", type=float,
                   help="seconds from the active processor's death to the standby serving (2)")
    p.add_argument("--port", type=int, help="WebSocket port (also names the run directory)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port for this process (0: off)")
    p.add_argument("--heartbeat", type=float, help="seconds between heartbeats")
    p.add_argument("--peer-timeout", type=float, help="seconds of silence before a peer is dead")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--time-scale", type=float, help="Words Battle durations × this")
    sec = p.add_argument_group("security (docs/security.md)")
    sec.add_argument("--jwt-secret", help="HS256 key: every connection needs a token")
    sec.add_argument("--jwt-public-key", metavar="FILE",
                     help="RS256/ES256 PEM: every connection needs a token")
    sec.add_argument("--jwt-audience", help="required `aud` of client tokens")
    sec.add_argument("--jwt-issuer", help="required `iss` of client tokens")
    sec.add_argument("--direct-messages", choices=["on", "shared-room", "off"],
                     help="who may message a client directly (default: on)")
    sec.add_argument("--max-rooms-per-client", type=int, help="rooms one client may be in (0: no limit)")
    lg = p.add_argument_group("the processor's log (docs/design.md, \"The log\")")
    lg.add_argument("--log", metavar="off|embedded|nats://HOST:PORT[,…]",
                    help="where the processor's inputs are kept: off (memory only), embedded "
                         "(`run` starts a nats-server of its own, data in the run directory: "
                         "the default of `run` with a processor and no --peer; otherwise off) "
                         "or a NATS JetStream server or cluster")
    lg.add_argument("--log-replicas", type=int, help="copies of the log's stream (1; a cluster: 3)")
    lg.add_argument("--log-stream", help="the log's stream name (meshstream-0)")
    lg.add_argument("--snapshot-every", type=int,
                    help="log entries between snapshots of the processor, behind which the log "
                         "is trimmed (10000; 0: none, the log grows)")
    lg.add_argument("--log-creds", metavar="FILE", help="NATS credentials file for the log")
    lg.add_argument("--log-tls-ca", metavar="FILE", help="CA file for TLS to NATS (tls:// URLs)")
    rec = p.add_argument_group("recovery (docs/protocol.md, \"Sessions and resume\")")
    rec.add_argument("--resume-window", type=float, help="seconds a dropped client may resume (60)")
    rec.add_argument("--history-size", type=int, help="room messages kept per room (1000)")
    rec.add_argument("--history-age", type=float, help="seconds a room message is kept (300)")
    rec.add_argument("--history-bytes", type=int,
                     help="bytes every room's history may hold together (134217728)")
    rec.add_argument("--direct-history", type=int, help="direct messages kept per client (100)")
    rec.add_argument("--direct-history-age", type=float,
                     help="seconds a direct message is kept for resume (300)")
    rec.add_argument("--direct-history-bytes", type=int,
                     help="bytes every client's held direct messages may hold together (33554432)")
    sec.add_argument("--keys-dir", metavar="DIR", help="CURVE keys from `meshstream keys DIR`")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshstream", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="role", required=True)
    run = sub.add_parser("run", help="start the processor, gateways and watchers")
    _common(run)
    run.add_argument("--gateways", type=int, help="gateway processes (default: CPU cores)")
    run.add_argument("--host", help="listen address (default 0.0.0.0)")
    run.add_argument("--no-watchers", dest="watchers", action="store_false", default=None)
    _webhook_options(run, short=False)
    # not Config fields (only `run` has them), so their MESHSTREAM_* variables are read here
    env = os.environ
    run.add_argument("--no-processor", dest="processor", action="store_false",
                     default=env.get("MESHSTREAM_PROCESSOR", "").lower() not in OFF,
                     help="no processor here: the gateways (and watchers) connect to the "
                          "processor named by --tcp or --inbound/--outbound (a gateway host; "
                          "MESHSTREAM_PROCESSOR=off)")
    run.add_argument("--first-index", type=int, metavar="K",
                     default=int(env.get("MESHSTREAM_FIRST_INDEX") or 1),
                     help="gateway slots K..K+N-1 (distinct on every gateway host; default 1)")
    proc = sub.add_parser("processor", help="run the processor alone")
    _common(proc)
    gw = sub.add_parser("gateway", help="run one gateway alone")
    _common(gw)
    gw.add_argument("--index", type=int, default=1, help="gateway slot (1, 2, …)")
    gw.add_argument("--host", help="listen address")
    for p_ in (run, gw):
        _gateway_options(p_)
    wt = sub.add_parser("watcher", help="run one bundled watcher")
    _common(wt)
    wt.add_argument("name", help="words-battle-lobby | words-battle-games | echo | webhooks")
    wh = sub.add_parser("webhooks", help="POST room events to a URL (docs/operations.md, Webhooks)")
    _common(wh)
    _webhook_options(wh, short=True)
    keys = sub.add_parser(
        "keys", help="write CURVE key pairs for --keys-dir (processor, gateway, each watcher)",
        description="Write the processor's, the gateways' and each watcher's CURVE key pair into "
                    "DIR (0700; secret files 0600), and claims.json: what each watcher key may "
                    "claim. The bundled watchers are always included. Existing keys are kept "
                    "unless --force. See docs/operations.md, Keys.")
    keys.add_argument("dir", metavar="DIR")
    keys.add_argument("--watcher", action="append", default=[], metavar="NAME=CLAIMS",
                      help="a watcher key and its claims: exact rooms and prefix* comma-separated, "
                           "e.g. dice=dice-* or monitor= (nothing); repeatable")
    keys.add_argument("--force", action="store_true", help="replace existing key pairs")
    rg = sub.add_parser(
        "restart-gateways", help="restart a running `meshstream run`'s gateways one at a time",
        description="Signal the supervisor of `meshstream run` (SIGUSR1, its PID from "
                    "<run dir>/supervisor.pid) to restart its gateways one at a time: each is "
                    "closed with 1012 (its clients resume on the others) and the next waits "
                    "until its replacement is welcomed. Waits for the end: exit 0 when every "
                    "gateway was restarted, 1 if one failed, 2 if there is no supervisor or "
                    "the timeout passed. See docs/operations.md, Rolling restart.")
    where_and_how_long(rg, "the cluster", 300.0)
    so = sub.add_parser(
        "switchover", help="hand a processor pair on a log over to the standby (planned)",
        description="Signal the active processor of a pair on a log (SIGUSR2, its PID from "
                    "<run dir>/processor.pid, on this host) to hand over: it sends what its log "
                    "stored, tells gateways and its standby, and follows the log as the standby. "
                    "Exit 0 once it is passive, 1 if it stayed active (not a pair on a log), 2 "
                    "with no processor there. See docs/operations.md, Switchover and upgrade.")
    where_and_how_long(so, "the processor", 10.0)
    return p


def where_and_how_long(parser: argparse.ArgumentParser, what: str, timeout: float) -> None:
    """--port or --run-dir (which run directory: `run_dir_of`) and --timeout."""
    parser.add_argument("--port", type=int, help=f"{what}'s port (names its run directory)")
    parser.add_argument("--run-dir", help=f"{what}'s run directory (instead of --port)")
    parser.add_argument("--timeout", type=float, default=timeout, help=f"seconds to wait ({timeout:g})")


def run_dir_of(args: argparse.Namespace) -> str:
    overrides = {k: v for k, v in (("port", args.port), ("run_dir", args.run_dir)) if v is not None}
    return Config.from_env().with_overrides(**overrides).resolved_run_dir


def _gateway_options(gw: argparse.ArgumentParser) -> None:
    gw.add_argument("--max-frame", type=int, help="largest client frame in bytes")
    gw.add_argument("--send-queue", type=int, help="bytes queued per client before closing it")
    gw.add_argument("--rate-limit", type=float, help="frames/s per client (0: off)")
    gw.add_argument("--rate-burst", type=int, help="rate-limit bucket size")
    gw.add_argument("--web-dir", help="directory served at /")
    gw.add_argument("--max-header-bytes", type=int,
                    help="bytes of an HTTP request's line and headers (16384); more: 431")
    gw.add_argument("--max-connections", type=int, help="connections per gateway process (0: no limit)")
    gw.add_argument("--max-connections-per-ip", type=int,
                    help="connections per gateway process and source address (0: no limit)")
    gw.add_argument("--allowed-origins", metavar="ORIGINS",
                    help="comma-separated Origin values; any other gets HTTP 403")
    gw.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve wss:// and https://")
    gw.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    gw.add_argument("--admin-token", help="token /admin requires (unset: loopback clients only)")
    gw.add_argument("--api-key", help="key the server API /api/ requires (unset: the API is off; "
                                      "prefer MESHSTREAM_API_KEY: ps shows flags)")
    gw.add_argument("--api-max-body", type=int,
                    help="bytes of one server API request's body (65536); more: 413")
    gw.add_argument("--api-idle-timeout", type=float,
                    help="seconds a server API connection is kept open between requests (30)")


def _webhook_options(p: argparse.ArgumentParser, short: bool) -> None:
    """`meshstream webhooks --url …`; `meshstream run --webhook-url …` starts them as a child."""
    g = p.add_argument_group("webhooks (docs/operations.md, Webhooks)")

    def flag(name: str, **kw: object) -> None:
        names = (f"--{name}", f"--webhook-{name}") if short else (f"--webhook-{name}",)
        g.add_argument(*names, **kw)  # type: ignore[arg-type]

    flag("url", dest="webhook_url", help="where event batches are POSTed")
    flag("secret", dest="webhook_secret_file", metavar="FILE",
         help="file with the HMAC-SHA256 secret that signs every body")
    flag("rooms", dest="webhook_rooms", metavar="PREFIXES",
         help="comma-separated room-name prefixes whose messages are sent too")
    flag("timeout", dest="webhook_timeout", type=float,
         help="seconds one POST may take before it is retried (10)")


def config_from(args: argparse.Namespace) -> Config:
    values = {k: v for k, v in vars(args).items()
              if k not in ("role", "index", "name", "processor", "first_index")}
    return Config.from_env().with_overrides(**values)


def with_log_default(args: argparse.Namespace, config: Config) -> Config:
    """`meshstream run` with a processor keeps its inputs in a nats-server of its own
    (--log embedded: a processor SIGKILL loses nothing) unless --log or MESHSTREAM_LOG
    says otherwise; with --peer, off (a pair shares a NATS cluster: --log nats://…). Every
    other role: off unless told."""
    if args.role != "run" or not args.processor or config.peer or args.log is not None \
            or os.environ.get("MESHSTREAM_LOG"):
        return config
    return config.with_overrides(log="embedded")


def keys_command(args: argparse.Namespace) -> int:
    from meshstream_zmq import keys

    try:
        watchers = dict(keys.parse_watcher_spec(spec) for spec in args.watcher)
        written, kept = keys.write_keys(args.dir, watchers, force=args.force)
        claims = keys.read_claims(args.dir)
    except (keys.KeyFileError, OSError) as exc:
        print(f"meshstream keys: {exc}", file=sys.stderr)
        return 2
    for label, paths in (("wrote", written), ("kept (use --force to replace)", kept)):
        for path in paths:
            extra = ""
            if path.suffix == ".key":
                extra = f"  fingerprint {keys.fingerprint(keys.load_public(path))}"
            print(f"{label}: {path}{extra}")
    d = args.dir
    print(f"""
watcher claims ({d}/{keys.CLAIMS_FILE}):""")
    for name, c in sorted(claims.items()):
        print(f"  {name}: {', '.join(c.items()) or '(none)'}")
    print(f"""
What to copy where (secret files stay 0600, the directory 0700):
  processor host: {d}/processor.key_secret, {d}/gateways/*.key, {d}/watchers/*.key, {d}/claims.json
  gateway hosts:  {d}/processor.key, {d}/gateways/gateway.key_secret
                  (and {d}/watchers/api.key_secret where it serves the HTTP API)
  watcher hosts:  {d}/processor.key, {d}/watchers/NAME.key_secret (NAME: the watcher's name)
Then start every process with --keys-dir DIR (or MESHSTREAM_KEYS_DIR=DIR).""")
    return 0


def preflight(config: Config, watchers: list[str], processor: bool = True) -> None:
    """`meshstream run`'s checks before any child starts (each child would repeat them and
    be restarted forever): TCP beyond loopback without keys, the run directory, a live
    instance on the same sockets, nats-server for --log embedded, the TLS certificate and
    key, the JWT key, missing key files. Without a processor (a gateway host) only what this
    host's children need."""
    from meshstream_zmq import keys, links
    from services.gateway import StartupError, client_tokens, tls_context

    if processor:
        links.check_bind(config)
        links.prepare_ipc(config)
        if config.log == "embedded":
            from services import embedded_log

            if embedded_log.missing():
                raise links.LinkError(embedded_log.missing())
    try:
        tls_context(config)
        client_tokens(config)
    except StartupError as exc:
        raise links.LinkError(str(exc)) from None
    if config.keys_dir:
        try:
            if processor:
                keys.processor_pair(config.keys_dir)
                keys.KeyRing.load(config.keys_dir)
            keys.processor_public(config.keys_dir)
            if config.gateways:
                keys.gateway_pair(config.keys_dir)
            for name in watchers:
                keys.watcher_pair(config.keys_dir, name)
        except keys.KeyFileError as exc:
            raise links.LinkError(str(exc)) from None
    if "webhooks" in watchers:
        from services.webhooks import read_secret

        try:
            read_secret(config.webhook_secret_file)
        except SystemExit as exc:
            raise links.LinkError(str(exc)) from None


def restart_gateways_command(args: argparse.Namespace) -> int:
    import signal
    import time

    from services import supervisor

    run_dir = run_dir_of(args)
    try:
        with open(os.path.join(run_dir, supervisor.PID_FILE)) as f:
            pid = int(f.read().strip())
        before = supervisor.read_status(run_dir)[0]
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError) as exc:
        print(f"meshstream restart-gateways: no running supervisor for {run_dir}: {exc}",
              file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        generation, outcome = supervisor.read_status(run_dir)
        if generation > before:
            if outcome == "ok":
                print("meshstream restart-gateways: every gateway restarted")
                return 0
            print(f"meshstream restart-gateways: {outcome}", file=sys.stderr)
            return 1
        try:
            os.kill(pid, 0)
        except OSError:
            print("meshstream restart-gateways: the supervisor exited", file=sys.stderr)
            return 2
        time.sleep(0.1)
    print(f"meshstream restart-gateways: not done after {args.timeout:g} s", file=sys.stderr)
    return 2


def switchover_command(args: argparse.Namespace) -> int:
    import signal
    import time

    from services import processor

    run_dir = run_dir_of(args)
    role = os.path.join(run_dir, processor.ROLE_FILE)
    try:
        with open(role) as f:
            if f.read().strip() != "active":
                print(f"meshstream switchover: the processor of {run_dir} is not the active one "
                      "of a pair", file=sys.stderr)
                return 1
        with open(os.path.join(run_dir, processor.PID_FILE)) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGUSR2)
    except (OSError, ValueError) as exc:
        print(f"meshstream switchover: no running processor for {run_dir}: {exc}", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            with open(role) as f:
                if f.read().strip() == "passive":
                    print("meshstream switchover: handed over; this processor is the standby")
                    return 0
        except OSError:
            pass
    print(f"meshstream switchover: still active after {args.timeout:g} s (its log says why)",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.role == "keys":
        return keys_command(args)
    if args.role == "restart-gateways":
        return restart_gateways_command(args)
    if args.role == "switchover":
        return switchover_command(args)
    try:
        config = config_from(args)
    except ConfigError as exc:
        print(f"meshstream {args.role}: {exc}", file=sys.stderr)
        return 2
    config = with_log_default(args, config)
    problems = config.problems()
    if problems:  # before any child starts: a child would raise and be restarted forever
        print(f"meshstream {args.role}: cannot start:", *problems, sep="\n  ", file=sys.stderr)
        return 2
    if args.role == "run":
        from meshstream_zmq.links import LinkError
        from services import supervisor

        if args.metrics_port is None and not config.metrics_port:
            config = config.with_overrides(metrics_port=config.port + 1000)
        from services.watchers import bundled

        watchers = bundled(config) if config.watchers else []
        if args.first_index < 1:
            print("meshstream run: --first-index must be 1 or more", file=sys.stderr)
            return 2
        if config.log == "embedded" and not args.processor:
            print("meshstream run: --log embedded is the processor's log: not with --no-processor",
                  file=sys.stderr)
            return 2
        if not args.processor and config.endpoints.inbound.startswith("ipc://"):
            print("meshstream run: --no-processor needs the processor's address: --tcp HOST:PORT "
                  "or --inbound/--outbound/--watchers-endpoint (docs/deploy.md)", file=sys.stderr)
            return 2
        try:
            preflight(config, watchers, args.processor)
        except LinkError as exc:
            print(f"meshstream run: {exc}", file=sys.stderr)
            return 2
        return supervisor.run(config, watchers, processor=args.processor,
                              first_index=args.first_index)
    if config.log == "embedded":
        print(f"meshstream {args.role}: --log embedded is started by `meshstream run`; here name "
              "a NATS server (--log nats://HOST:PORT) or --log off", file=sys.stderr)
        return 2
    if args.role == "processor":
        from services import processor

        processor.main(config)
    elif args.role == "gateway":
        from services import gateway

        gateway.main(config, args.index)
    elif args.role == "watcher":
        from services.watchers import run_watcher

        return run_watcher(args.name, config)
    elif args.role == "webhooks":
        from services.watchers import run_watcher

        return run_watcher("webhooks", config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
