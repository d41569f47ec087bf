"""The `bcd` command. Exit codes: 0 ok, 1 operation failed, 2 usage or config error."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bcd import __version__
from bcd import config as config_module
from bcd.config import Config, ConfigError
from bcd.durations import format_duration

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_URL = "http://127.0.0.1:9847"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bcd", description="Business-continuity failover daemon.")
    parser.add_argument("--version", action="version", version=f"bcd {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, help="configuration file (YAML)")
    run.add_argument("--vantage", default=os.environ.get("BCD_VANTAGE"), help="site this daemon runs in")
    run.add_argument("--log-level", default=os.environ.get("BCD_LOG_LEVEL", "info"))
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file")
    check.set_defaults(handler=cmd_check_config)

    schema = commands.add_parser("schema", help="print the configuration's JSON Schema")
    schema.set_defaults(handler=cmd_schema)

    demo = commands.add_parser("demo", help="run the daemon on a simulated two-site estate")
    demo.add_argument("--fail-after", type=float, default=20.0, help="seconds before a site is failed")
    demo.set_defaults(handler=cmd_demo)

    status = commands.add_parser("status", help="show services and sites of a running daemon")
    add_client_arguments(status)
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.set_defaults(handler=cmd_status)
    return parser


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("BCD_URL", DEFAULT_URL), help="the daemon's API")
    parser.add_argument("--token-file", help="file holding the API token (else $BCD_TOKEN)")


def load_or_report(path: str, overrides: dict[str, Any] | None = None) -> Config | None:
    """Load a config, or print every problem as FILE:LINE: path: message and return None."""
    try:
        return config_module.load(path, overrides)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_or_report(args.file)
    if config is None:
        return EXIT_USAGE
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
    print(json.dumps(Config.model_json_schema(), indent=2))
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from bcd import logging as bcd_logging
    from bcd.app import Daemon

    overrides = {"vantage": args.vantage} if args.vantage else {}
    config = load_or_report(args.config, overrides)
    if config is None:
        return EXIT_USAGE
    bcd_logging.setup(args.log_level)
    daemon = Daemon(args.config, config, overrides)
    return run_loop(daemon.run())


def run_loop(main_coro: Any) -> int:
    try:
        import uvloop

        result: int = uvloop.run(main_coro)
    except ImportError:
        result = asyncio.run(main_coro)
    return result


def cmd_demo(args: argparse.Namespace) -> int:
    from bcd.demo import run_demo

    return run_loop(run_demo(args.fail_after))


def cmd_status(args: argparse.Namespace) -> int:
    from bcd.client import ApiError, Client

    client = Client.from_args(args)
    try:
        data = client.get("/api/v1/services")
    except ApiError as exc:
        print(f"bcd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    print(status_table(data["services"], colour=sys.stdout.isatty()))
    return EXIT_OK


COLOURS = {"up": "32", "degraded": "33", "down": "31", "flapping": "35", "maintenance": "36", "unknown": "90"}


def status_table(services: list[dict[str, Any]], colour: bool) -> str:
    sites = sorted({site for service in services for site in service["sites"]})
    header = f"{'SERVICE':<20} {'STATUS':<16} {'ACTIVE':<12} " + " ".join(f"{s:<12}" for s in sites)
    rows = [header]
    for service in services:
        cells = []
        for site in sites:
            state = service["sites"].get(site, {}).get("state", "-")
            text = f"{state:<12}"
            if colour and state in COLOURS:
                text = f"\x1b[{COLOURS[state]}m{text}\x1b[0m"
            cells.append(text)
        rows.append(f"{service['name']:<20} {service['status']:<16} {service['active']:<12} " + " ".join(cells))
    return "\n".join(rows)
