"""The `meshstream` command: `run` (everything) or one service alone.

    meshstream run [--port 8765] [--gateways N] [--time-scale 1.0] [--no-watchers]
    meshstream processor [--tcp HOST:PORT | --inbound/--outbound/--watchers-endpoint URL]
    meshstream gateway --index N [--port 8765] [endpoint flags]
    meshstream watcher NAME [endpoint flags]    (NAME: words-battle-lobby, words-battle-games, echo)

Every flag also reads MESHSTREAM_<FLAG> from the environment (flags win).
"""

from __future__ import annotations

import argparse
import sys

from meshstream_zmq.config import Config


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("endpoints (default: IPC in a private run directory)")
    g.add_argument("--run-dir", help="directory for IPC sockets (default: per port, private)")
    g.add_argument("--tcp", metavar="HOST:PORT",
                   help="processor sockets on TCP PORT, PORT+1, PORT+2 instead of IPC")
    g.add_argument("--inbound", help="processor PULL endpoint, e.g. tcp://10.0.0.5:7000")
    g.add_argument("--outbound", help="processor XPUB endpoint")
    g.add_argument("--watchers-endpoint", help="processor ROUTER endpoint for watchers")
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
    wt.add_argument("name", help="words-battle-lobby | words-battle-games | echo")
    return p


def _gateway_options(gw: argparse.ArgumentParser) -> None:
    gw.add_argument("--max-frame", type=int, help="largest client frame in bytes")
    gw.add_argument("--send-queue", type=int, help="bytes queued per client before closing it")
    gw.add_argument("--rate-limit", type=float, help="frames/s per client (0: off)")
    gw.add_argument("--rate-burst", type=int, help="rate-limit bucket size")
    gw.add_argument("--web-dir", help="directory served at /")
    gw.add_argument("--max-connections", type=int, help="connections per gateway process (0: no limit)")
    gw.add_argument("--max-connections-per-ip", type=int,
                    help="connections per gateway process and source address (0: no limit)")
    gw.add_argument("--allowed-origins", metavar="ORIGINS",
                    help="comma-separated Origin values; any other gets HTTP 403")
    gw.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve wss:// and https://")
    gw.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")


def config_from(args: argparse.Namespace) -> Config:
    values = {k: v for k, v in vars(args).items() if k not in ("role", "index", "name")}
    return Config.from_env().with_overrides(**values)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = config_from(args)
    if args.role == "run":
        from services import supervisor

        if args.metrics_port is None and not config.metrics_port:
            config = config.with_overrides(metrics_port=config.port + 1000)
        from services.watchers import bundled

        return supervisor.run(config, bundled(config) if config.watchers else [])
    if args.role == "processor":
        from services import processor

        processor.main(config)
    elif args.role == "gateway":
        from services import gateway

        gateway.main(config, args.index)
    elif args.role == "watcher":
        from services.watchers import run_watcher

        return run_watcher(args.name, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
