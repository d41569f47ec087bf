"""The commands that run or check the daemon on this machine, without its API: `bcd run`, `bcd check-config`,
`bcd schema`, `bcd demo`, `bcd files`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from bcd import sighup
from bcd.cli.api import EXIT_OK, EXIT_USAGE
from bcd.config import Config, ConfigError, json_schema
from bcd.durations import format_duration


def add_commands(commands: Any) -> None:
    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
    run.add_argument("--vantage", default=os.environ.get("BCD_VANTAGE"), help="site this daemon runs in")
    run.add_argument("--log-level", default=os.environ.get("BCD_LOG_LEVEL", "info"))
    run.set_defaults(handler=sighup.first(cmd_run))  # SIGHUP blocked before any thread starts: bcd.sighup

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(handler=cmd_check_config)

    schema = commands.add_parser("schema", help="print the configuration's JSON Schema")
    schema.set_defaults(handler=cmd_schema)

    demo = commands.add_parser("demo", help="run the daemon on a simulated two-site estate")
    demo.add_argument("--fail-after", type=float, default=20.0, help="seconds before a site is failed")
    demo.add_argument("--cluster", action="store_true",
                      help="three instances and an embedded three-member etcd: a quorum decision")
    demo.add_argument("--site-loss", action="store_true",
                      help="a whole site goes dark: the root cause pages once, a recovery plan evacuates it")
    demo.add_argument("--listen", metavar="HOST:PORT", help="the daemon's API (default 127.0.0.1:9847)")
    demo.set_defaults(handler=cmd_demo)

    files = commands.add_parser("files", help="print where the example config, systemd unit, dashboards, "
                                "alert rules and demo estate are")
    files.add_argument("--copy", metavar="DIR", help="copy them into DIR instead (never overwrites)")
    files.set_defaults(handler=cmd_files)


def load_or_report(path: str, overrides: dict[str, Any] | None = None) -> Config | None:
    """Load a config, or print every problem as FILE:LINE: path: message and return None."""
    from bcd.app import load_config  # the daemon's way (garbage collector off while loading); imported late:
    # it brings aiohttp and the rest, which the client commands do not need
    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_or_report(args.file)
    if config is None:
        return EXIT_USAGE
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    print(summary(args.file, config))
    return EXIT_OK


def summary(path: str, config: Config) -> str:
    probes = list(config.all_probes())
    lines = [
        f"{path}: OK",
        f"instance {config.instance}, vantage {config.vantage or '-'}, listen {config.server.listen}, "
        f"state {config.state_dir}",
        f"sites ({len(config.sites)}): {', '.join(config.sites)}",
        f"services ({len(config.services)}), probes ({len(probes)}):",
    ]
    for name, service in config.services.items():
        per_site = ", ".join(
            f"{site}{'*' if site == service.active else ''}: "
            + " ".join(f"{p.name}/{p.kind}@{format_duration(config.timing(name, p).interval)}" for p in s.probes)
            for site, s in service.sites.items()
        )
        lines.append(f"  {name:<20} {per_site}")
    lines.append("(* = active site)")
    return "\n".join(lines)


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    import faulthandler

    from bcd import logging as bcd_logging
    from bcd.app import Daemon
    from bcd.state_dir import StateDirError
    from bcd.web.listen import ListenError

    faulthandler.enable()  # a watchdog SIGABRT (or a segfault) leaves every thread's stack on stderr/journal
    overrides = {"vantage": args.vantage} if args.vantage else {}
    config = load_or_report(args.config, overrides)
    if config is None:
        return EXIT_USAGE
    bcd_logging.setup(args.log_level)
    try:
        daemon = Daemon(args.config, config, overrides)
        return run_loop(daemon.run())
    except ConfigError as exc:  # found while setting up (e.g. a TLS file that cannot be loaded)
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_USAGE
    except (StateDirError, ListenError) as exc:  # state_dir locked or unusable, server.listen in use
        print(f"bcd: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run_loop(main_coro: Any) -> int:
    try:
        import uvloop

        result: int = uvloop.run(main_coro)
    except ImportError:
        result = asyncio.run(main_coro)
    return result


def cmd_demo(args: argparse.Namespace) -> int:
    if args.cluster and (args.listen or args.site_loss):
        print("bcd demo: --cluster takes neither --listen (BCD_DEMO_PORTS=p1,p2,p3) nor --site-loss",
              file=sys.stderr)
        return EXIT_USAGE
    if args.site_loss:
        from bcd.demo_site_loss import run_site_loss_demo

        return run_loop(run_site_loss_demo(args.fail_after, args.listen))
    if args.cluster:
        from bcd.demo_cluster import run_cluster_demo

        return run_loop(run_cluster_demo(args.fail_after))
    from bcd.demo import run_demo

    return run_loop(run_demo(args.fail_after, listen=args.listen))


def cmd_files(args: argparse.Namespace) -> int:
    from bcd import files

    return files.command(args.copy)
