"""`adc` command line: argument parsing and dispatch only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from adc import __version__

DEFAULT_CONFIG = "appliance.toml"
TOKEN_ENV = "ADC_ADMIN_TOKEN"  # the admin token for status, reload and dashboard


def _setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )


def _load_or_report(path: str):
    from adc.config.check import check_config
    from adc.config.load import ConfigError, load

    try:
        config = load(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        print(f"{path}: {len(exc.errors)} error(s)", file=sys.stderr)
        return None
    errors, warnings = check_config(config, path)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if errors:
        for line in errors:
            print(line, file=sys.stderr)
        print(f"{path}: {len(errors)} error(s)", file=sys.stderr)
        from adc.tls.devcerts import missing_dev_files

        if missing_dev_files(config):
            print("hint: `adc certs init` (or `adc run`) makes the development certificates in certs/",
                  file=sys.stderr)
        return None
    return config


def cmd_check(args: argparse.Namespace) -> int:
    config = _load_or_report(args.file)
    if config is None:
        return 1
    servers = sum(len(p.servers) for p in config.pools.values())
    listeners = sum(len(vs.listen) for vs in config.virtual_servers.values())
    print(
        f"{args.file}: OK: {len(config.virtual_servers)} virtual server(s) on {listeners} listener(s), "
        f"{len(config.pools)} pool(s) with {servers} real server(s), {len(config.profiles)} profile(s)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    log = logging.getLogger("adc")
    from adc.tls.devcerts import ensure_for_config

    created = ensure_for_config(args.file)
    for line in created:
        log.info(line)
    config = _load_or_report(args.file)
    if config is None:
        return 1
    import uvloop

    from adc import compiled
    from adc.appliance import Appliance
    from adc.engine.listener import ListenError

    (log.info if compiled.in_use() else log.warning)("traffic path: %s", compiled.status())
    from adc.tls.contexts import quiet_unreadable_sni

    quiet_unreadable_sni()

    async def main() -> int:
        demo = None
        if args.demo:
            from adc.demo import DemoServers

            demo = DemoServers(config)
            await demo.start()
        try:
            await Appliance(config).serve()
        except ListenError as exc:  # (the access log is opened as the appliance is made)
            for line in str(exc).splitlines():
                log.error("%s", line)
            return 1
        finally:
            if demo is not None:
                await demo.stop()
        return 0

    try:
        return uvloop.run(main())
    except KeyboardInterrupt:
        return 130


def cmd_certs(args: argparse.Namespace) -> int:
    from adc.tls import certs

    certs_dir = Path(args.dir)
    if args.action == "init":
        return certs.cmd_certs_init(certs_dir, args.name or [], args.key_type, args.force)
    return certs.cmd_certs_show(certs_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adc", description="adc application delivery controller")
    parser.add_argument("--version", action="version", version=f"adc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the appliance")
    p.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    p.add_argument("--demo", action="store_true", help="also start demo real servers on loopback")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="validate the configuration; exit 0 or 1")
    p.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("certs", help="development certificates")
    p.add_argument("action", choices=["init", "show"])
    p.add_argument("--dir", default="certs", help="certificate directory (default: ./certs)")
    p.add_argument("--name", action="append", help="extra DNS name or IP for the server certificate")
    p.add_argument("--key-type", default="ecdsa", choices=["ecdsa", "rsa"])
    p.add_argument("--force", action="store_true",
                   help="init: replace a server certificate the development CA did not issue, or half a CA")
    p.set_defaults(func=cmd_certs)

    for name, helptext in (("status", "show the running appliance"), ("reload", "reload the configuration")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
        p.add_argument("--admin", help="admin address (default: from the configuration file)")
        _token_option(p)
        p.set_defaults(func=_admin_command(name))

    p = sub.add_parser("dashboard", help="the terminal dashboard")
    p.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    p.add_argument("--admin", help="admin address: unix:PATH or host:port")
    _token_option(p)
    p.set_defaults(func=_dashboard)
    return parser


def _token_option(p: argparse.ArgumentParser) -> None:
    # from the environment by default: a token on the command line shows in `ps`
    p.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV) or None,
        help=f"admin token for a TCP admin address (default: ${TOKEN_ENV}, else the file's admin_token)",
    )


def _admin_command(name: str):
    def run(args: argparse.Namespace) -> int:
        from adc.runtime import admin_cli

        return admin_cli.main(name, args)

    return run


def _dashboard(args: argparse.Namespace) -> int:
    from adc.dashboard.app import main as dashboard_main

    return dashboard_main(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
