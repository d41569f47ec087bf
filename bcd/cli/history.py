"""What happened, through the daemon's API: `bcd events [--follow]`, `bcd runs`, `bcd run-show`,
`bcd recoveries`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bcd.cli.api import EXIT_OK, add_client_arguments, api, call, when


def add_commands(commands: Any) -> None:
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


@api
def cmd_runs(args: argparse.Namespace) -> int:
    path = "/api/v1/runs" + (f"?service={args.service}" if args.service else "")
    runs = call(args, "GET", path)["runs"]
    if args.json:
        print(json.dumps(runs, indent=2))
        return EXIT_OK
    print(f"{'RUN':>5} {'SERVICE':<18} {'KIND':<9} {'FROM→TO':<22} {'TRIGGER':<12} {'RESULT':<16} STARTED")
    for run in runs:
        moved = f"{run['from']}→{run['to']}"
        print(f"{run['id']:>5} {run['service']:<18} {run['kind']:<9} {moved:<22} {run['trigger']:<12} "
              f"{run['result']:<16} {when(run['started'])}")
    return EXIT_OK


@api
def cmd_recoveries(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from bcd.cli.recovery_text import recoveries_table

    page = call(args, "GET", f"/api/v1/services/{quote(args.service, safe='')}/recoveries?limit={args.limit}")
    print(json.dumps(page, indent=2) if args.json else "\n".join(recoveries_table(page)))
    return EXIT_OK


@api
def cmd_run_show(args: argparse.Namespace) -> int:
    run = call(args, "GET", f"/api/v1/runs/{args.run}")
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


@api
def cmd_events(args: argparse.Namespace) -> int:
    query = f"&service={args.service}" if args.service else ""
    page = call(args, "GET", f"/api/v1/events?tail={args.limit}{query}")
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
    print(f"{when(event['at'])} {event['id']:>6} {event['kind']:<18} {where:<28} {event['reason']}", flush=True)
