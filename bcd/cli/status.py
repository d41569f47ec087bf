"""`bcd status`: the services and sites of a running daemon, as a table (in a cluster, with every vantage's
view and the lock holder), from the API's JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bcd.cli.api import EXIT_FAILED, EXIT_OK, add_client_arguments


def add_command(commands: Any) -> None:
    status = commands.add_parser("status", help="show services and sites of a running daemon")
    add_client_arguments(status)
    status.add_argument("--json", action="store_true", help="print the API's JSON")
    status.add_argument("--views", action="store_true", help="in a cluster: the reason of every vantage's view")
    status.set_defaults(handler=cmd_status)


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
