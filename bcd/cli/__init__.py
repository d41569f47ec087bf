"""The `bcd` command. Exit codes: 0 ok, 1 operation failed, 2 usage or config error (for `bcd run`, also a
state_dir or `server.listen` it cannot use: another bcd holds it, a port in use, an unusable journal)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from bcd import __version__, sighup, tokens
from bcd.cli import bookings as cli_bookings
from bcd.cli import drills as cli_drills
from bcd.cli import reload as cli_reload
from bcd.cli.journal import add_journal_commands
from bcd.cli.plans import ClientKit, add_plan_commands
from bcd.config import Config, ConfigError, json_schema
from bcd.durations import format_duration

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_URL = "http://127.0.0.1:9847"


def main(argv: Sequence[str] | None = None) -> int:
    args = (parser := build_parser()).parse_args(argv)
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

    status = commands.add_parser("status", help="show services and sites of a running daemon")
    add_client_arguments(status)
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.add_argument("--views", action="store_true", help="in a cluster: the reason of every vantage's view")
    status.set_defaults(handler=cmd_status)
    add_operator_commands(commands)
    add_plan_commands(commands, kit := ClientKit(_api, _call, add_client_arguments, _when, _local))
    for extra in (cli_drills, cli_bookings, cli_reload):
        extra.add_commands(commands, kit)
    tokens.add_commands(commands)
    add_journal_commands(commands)
    return parser


def add_operator_commands(commands: Any) -> None:
    for kind in ("failover", "failback"):
        transfer = commands.add_parser(kind, help=f"start a {kind} of a service (operator)")
        add_client_arguments(transfer)
        transfer.add_argument("service")
        transfer.add_argument("--to", help="target site (default: the best healthy standby, or home)")
        transfer.add_argument("--reason", required=True, help="why, for the journal")
        transfer.add_argument("--dry-run", action="store_true", help="journal each step, execute none")
        transfer.add_argument("--force", action="store_true",
                              help="bypass the standby-health and cooldown guards (journaled as forced)")
        transfer.set_defaults(handler=cmd_transfer, kind=kind)
    ack = commands.add_parser("ack", help="acknowledge a blocked service's failed or interrupted run")
    add_client_arguments(ack)
    ack.add_argument("service")
    ack.add_argument("--reason", default="acknowledged")
    ack.set_defaults(handler=cmd_ack)
    for action in ("approve", "abort"):
        control = commands.add_parser(action, help=f"{action} a run")
        add_client_arguments(control)
        control.add_argument("run", type=int)
        control.add_argument("--reason", default="")
        control.set_defaults(handler=cmd_control, action=action)
    maintenance = commands.add_parser("maintenance", help="put a service (or one site) in maintenance now or "
                                      "later, or end it; `bcd maintenance list`: current and upcoming windows")
    add_client_arguments(maintenance)
    maintenance.add_argument("service")
    maintenance.add_argument("--site", help="only this site (default: every site of the service)")
    maintenance.add_argument("--for", dest="duration", help="how long, e.g. 30m, 2h")
    maintenance.add_argument("--reason", help="why, for the journal")
    maintenance.add_argument("--end", action="store_true", help="end the maintenance now")
    _booking_arguments(maintenance)
    maintenance.set_defaults(handler=cmd_maintenance)
    events = commands.add_parser("events", help="show the journal's events (and follow new ones)")
    add_client_arguments(events)
    events.add_argument("--service")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events as they happen")
    events.add_argument("--limit", type=int, default=50)
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.set_defaults(handler=cmd_events)
    runs = commands.add_parser("runs", help="list recent runs")
    add_client_arguments(runs)
    runs.add_argument("service", nargs="?")
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(handler=cmd_runs)
    recoveries = commands.add_parser("recoveries", help="a service's recoveries: their phases against the RTO")
    add_client_arguments(recoveries)
    recoveries.add_argument("service")
    recoveries.add_argument("--limit", type=int, default=20)
    recoveries.add_argument("--json", action="store_true")
    recoveries.set_defaults(handler=cmd_recoveries)
    show = commands.add_parser("run-show", help="show one run with its steps")
    add_client_arguments(show)
    show.add_argument("run", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_run_show)


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("BCD_URL", DEFAULT_URL), help="the daemon's API")
    parser.add_argument("--token-file", help="file holding the API token (else $BCD_TOKEN)")


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


def _call(args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    from bcd.cli.client import Client

    return Client.from_args(args).request(method, path, body)


def _api(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Client commands: an API refusal or an unreachable daemon is one line on stderr and exit 1."""

    def wrapped(args: argparse.Namespace) -> int:
        from bcd.cli.client import ApiError

        try:
            return func(args)
        except ApiError as exc:
            print(f"bcd: {exc}", file=sys.stderr)
            return EXIT_FAILED
        except OSError as exc:
            print(f"bcd: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return wrapped


@_api
def cmd_transfer(args: argparse.Namespace) -> int:
    body = {"reason": args.reason, "dry_run": args.dry_run, "force": args.force}
    if args.to:
        body["to"] = args.to
    run = _call(args, "POST", f"/api/v1/services/{args.service}/{args.kind}", body)
    flags = (" (dry run)" if run["dry_run"] else "") + (" (forced)" if run["forced"] else "")
    print(f"run {run['id']}: {run['kind']} of {run['service']} from {run['from']} to {run['to']} started{flags}")
    return EXIT_OK


@_api
def cmd_ack(args: argparse.Namespace) -> int:
    result = _call(args, "POST", f"/api/v1/services/{args.service}/ack", {"reason": args.reason})
    ids = ", ".join(str(i) for i in result["acknowledged"]) or "nothing to acknowledge"
    print(f"{args.service}: acknowledged {ids}")
    return EXIT_OK


@_api
def cmd_control(args: argparse.Namespace) -> int:
    _call(args, "POST", f"/api/v1/runs/{args.run}/{args.action}", {"reason": args.reason})
    print(f"run {args.run}: {args.action} sent")
    return EXIT_OK


@_api
def cmd_runs(args: argparse.Namespace) -> int:
    path = "/api/v1/runs" + (f"?service={args.service}" if args.service else "")
    runs = _call(args, "GET", path)["runs"]
    if args.json:
        print(json.dumps(runs, indent=2))
        return EXIT_OK
    print(f"{'RUN':>5} {'SERVICE':<18} {'KIND':<9} {'FROM→TO':<22} {'TRIGGER':<12} {'RESULT':<16} STARTED")
    for run in runs:
        moved = f"{run['from']}→{run['to']}"
        print(f"{run['id']:>5} {run['service']:<18} {run['kind']:<9} {moved:<22} {run['trigger']:<12} "
              f"{run['result']:<16} {_when(run['started'])}")
    return EXIT_OK


@_api
def cmd_recoveries(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from bcd.cli.recovery_text import recoveries_table

    page = _call(args, "GET", f"/api/v1/services/{quote(args.service, safe='')}/recoveries?limit={args.limit}")
    print(json.dumps(page, indent=2) if args.json else "\n".join(recoveries_table(page)))
    return EXIT_OK


@_api
def cmd_run_show(args: argparse.Namespace) -> int:
    run = _call(args, "GET", f"/api/v1/runs/{args.run}")
    if args.json:
        print(json.dumps(run, indent=2))
        return EXIT_OK
    print(f"run {run['id']}: {run['kind']} of {run['service']} {run['from']} → {run['to']} "
          f"({run['runbook']}), trigger {run['trigger']}{' FORCED' if run['forced'] else ''}"
          f"{' DRY RUN' if run['dry_run'] else ''}")
    print(f"  reason: {run['reason']}")
    print(f"  result: {run['result']} {run['detail']}")
    for step in run["steps"]:
        print(f"  {step['seq']:>2}. [{step['phase']}] {step['name']} ({step['kind']}): {step['outcome']}"
              f", {step['attempts']} attempt(s)")
        for line in (step["output"] or "").splitlines()[:5]:
            print(f"        {line}")
    return EXIT_OK


def _booking_arguments(maintenance: argparse.ArgumentParser) -> None:
    maintenance.add_argument("--from", dest="start", help="book a window starting then (e.g. 2026-12-10T22:00, "
                             "this machine's local time unless an offset is given)")
    maintenance.add_argument("--force", action="store_true", help="book it even if it leaves no site outside")


@_api
def cmd_maintenance(args: argparse.Namespace) -> int:
    if args.end:
        query = f"?site={args.site}" if args.site else ""
        result = _call(args, "DELETE", f"/api/v1/services/{args.service}/maintenance{query}")
        print(f"{args.service}: maintenance ended for {', '.join(result['ended']) or 'no site (none was set)'}")
        return EXIT_OK
    if args.service == "list" and not args.duration:
        for window in _call(args, "GET", "/api/v1/maintenance")["windows"]:
            print(f"{'NOW ' if window['active'] else '    '}{_when(window['start'])} to {_when(window['end'])}  "
                  f"{window['name']}: {', '.join(window['services'])} at {', '.join(window['sites'])}: "
                  f"{window['reason']} ({window['every'] or window['by']})")
        return EXIT_OK
    if not args.duration or not args.reason:
        print("bcd maintenance: --for and --reason are required (or --end)", file=sys.stderr)
        return EXIT_USAGE
    body = {"duration": args.duration, "reason": args.reason, **({"site": args.site} if args.site else {}),
            **({"from": _local(args.start), "force": args.force} if args.start else {})}
    result = _call(args, "POST", f"/api/v1/services/{args.service}/maintenance", body)
    booked = f" ({result['detail']})" if args.start else ""
    print(f"{args.service}: {', '.join(result['sites'])} in maintenance until {_when(result['until'])}{booked}")
    return EXIT_OK


def _local(text: str) -> str:
    """An ISO time without an offset is this machine's local time (the API takes it as UTC)."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text).astimezone().isoformat()
    except ValueError:
        return text  # the API says what is wrong with it


@_api
def cmd_events(args: argparse.Namespace) -> int:
    query = f"&service={args.service}" if args.service else ""
    page = _call(args, "GET", f"/api/v1/events?tail={args.limit}{query}")
    for event in page["events"]:
        _print_event(event, args.json)
    since = page["next"]
    if not args.follow:
        return EXIT_OK
    from bcd.cli.client import Client

    for event in Client.from_args(args).stream(f"/api/v1/events/stream?{query.lstrip('&')}", since):
        _print_event(event, args.json)
    return EXIT_OK


def _print_event(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(event), flush=True)
        return
    where = event["service"] or "-"
    if event.get("site"):
        where += f"@{event['site']}"
    print(f"{_when(event['at'])} {event['id']:>6} {event['kind']:<18} {where:<28} {event['reason']}", flush=True)


def _when(timestamp: float | None) -> str:
    import datetime as dt

    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_status(args: argparse.Namespace) -> int:
    from bcd.cli.client import ApiError, Client

    client = Client.from_args(args)
    try:
        data = client.get("/api/v1/services")
    except ApiError as exc:
        print(f"bcd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(data, indent=2))
        return EXIT_OK
    from bcd.cli.recovery_text import objectives_block

    table = status_table(data["services"], colour=sys.stdout.isatty(), every_view=args.views)
    print("\n".join([table, *objectives_block(data["services"])]))
    return EXIT_OK


COLOURS = {"up": "32", "degraded": "33", "down": "31", "flapping": "35", "maintenance": "36", "unknown": "90"}


def status_table(services: list[dict[str, Any]], colour: bool, every_view: bool = False) -> str:
    """One row per service. In a cluster (the API adds `views` and `lock`), every site cell also shows each
    vantage's view of it, side by side (`stale` when older than the lease), a LOCK column names the instance
    holding the service's lock, and the lines under the table each view's age and reasons (`views_block`)."""
    from bcd.cli.status_views import view_mark, views_block

    sites = sorted({site for service in services for site in service["sites"]})
    cluster = any("views" in service for service in services)
    if not cluster:
        header = f"{'SERVICE':<20} {'STATUS':<16} {'ACTIVE':<12} " + " ".join(f"{s:<12}" for s in sites)
        rows = [header]
        for service in services:
            cells = [_state_cell(service["sites"].get(site, {}).get("state", "-"), "", 12, colour) for site in sites]
            rows.append(f"{service['name']:<20} {service['status']:<16} {service['active']:<12} " + " ".join(cells))
        return "\n".join([*rows, *impact_lines(services)])
    table: list[tuple[dict[str, Any], list[tuple[str, str]]]] = []
    for service in services:
        pairs: list[tuple[str, str]] = []  # (state, every vantage's view of it)
        for site in sites:
            state = service["sites"].get(site, {}).get("state", "-")
            views = service.get("views") or {}
            seen = ", ".join(f"{vantage}: {view.get('sites', {}).get(site, {}).get('state', '-')}{view_mark(view)}"
                             for vantage, view in views.items())
            pairs.append((state, f" ({seen})" if seen else ""))
        table.append((service, pairs))
    widths = [max([12, *(len(pairs[i][0]) + len(pairs[i][1]) for _, pairs in table)]) for i in range(len(sites))]
    header = (f"{'SERVICE':<20} {'STATUS':<16} {'ACTIVE':<12} {'LOCK':<12} "
              + " ".join(f"{s:<{w}}" for s, w in zip(sites, widths, strict=True)))
    rows = [header.rstrip()]
    for service, pairs in table:
        lock = service.get("lock") or {}
        holder = str(lock.get("holder") or "-")
        text = " ".join(_state_cell(state, seen, width, colour)
                        for (state, seen), width in zip(pairs, widths, strict=True))
        rows.append(f"{service['name']:<20} {service['status']:<16} {service['active']:<12} {holder:<12} "
                    + text)
    coordination = sorted({str(s["coordination"]) for s in services if "coordination" in s})
    if coordination:
        rows.append(f"coordination (etcd): {', '.join(coordination)}")
    rows.extend(views_block(services, every_view))
    rows.extend(impact_lines(services))
    return "\n".join(rows)


def impact_lines(services: list[dict[str, Any]]) -> list[str]:
    """A line for each site of a service whose state a dependency being down there explains (its alerts are
    held: the dependency pages)."""
    lines = [f"{service['name']} at {site}: impacted by {health['impacted_by']} (its alerts are held)"
             for service in services for site, health in sorted(service["sites"].items())
             if health.get("impacted_by")]
    return ["", *lines] if lines else []


def _state_cell(state: str, extra: str, width: int, colour: bool) -> str:
    """`state` (coloured on a terminal) followed by `extra`, padded to `width`."""
    padding = " " * max(0, width - len(state) - len(extra))
    if colour and state in COLOURS:
        return f"\x1b[{COLOURS[state]}m{state}\x1b[0m{extra}{padding}"
    return f"{state}{extra}{padding}"
