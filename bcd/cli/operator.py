"""The operator's actions through the daemon's API: `bcd failover`, `bcd failback`, `bcd ack`, `bcd approve`,
`bcd abort`, `bcd maintenance`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bcd.cli.api import EXIT_OK, EXIT_USAGE, add_client_arguments, api, call, local, when


def add_commands(commands: Any) -> None:
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


@api
def cmd_transfer(args: argparse.Namespace) -> int:
    body = {"reason": args.reason, "dry_run": args.dry_run, "force": args.force}
    if args.to:
        body["to"] = args.to
    run = call(args, "POST", f"/api/v1/services/{args.service}/{args.kind}", body)
    flags = (" (dry run)" if run["dry_run"] else "") + (" (forced)" if run["forced"] else "")
    print(f"run {run['id']}: {run['kind']} of {run['service']} from {run['from']} to {run['to']} started{flags}")
    return EXIT_OK


@api
def cmd_ack(args: argparse.Namespace) -> int:
    result = call(args, "POST", f"/api/v1/services/{args.service}/ack", {"reason": args.reason})
    ids = ", ".join(str(i) for i in result["acknowledged"]) or "nothing to acknowledge"
    print(f"{args.service}: acknowledged {ids}")
    return EXIT_OK


@api
def cmd_control(args: argparse.Namespace) -> int:
    call(args, "POST", f"/api/v1/runs/{args.run}/{args.action}", {"reason": args.reason})
    print(f"run {args.run}: {args.action} sent")
    return EXIT_OK


def _booking_arguments(maintenance: argparse.ArgumentParser) -> None:
    maintenance.add_argument("--from", dest="start", help="book a window starting then (e.g. 2026-12-10T22:00, "
                             "this machine's local time unless an offset is given)")
    maintenance.add_argument("--force", action="store_true", help="book it even if it leaves no site outside")


@api
def cmd_maintenance(args: argparse.Namespace) -> int:
    if args.end:
        query = f"?site={args.site}" if args.site else ""
        result = call(args, "DELETE", f"/api/v1/services/{args.service}/maintenance{query}")
        print(f"{args.service}: maintenance ended for {', '.join(result['ended']) or 'no site (none was set)'}"
              f"{_where(result)}")
        return EXIT_OK
    if args.service == "list" and not args.duration:
        for window in call(args, "GET", "/api/v1/maintenance")["windows"]:
            print(f"{'NOW ' if window['active'] else '    '}{when(window['start'])} to {when(window['end'])}  "
                  f"{window['name']}: {', '.join(window['services'])} at {', '.join(window['sites'])}: "
                  f"{window['reason']} ({window['every'] or window['by']})")
        return EXIT_OK
    if not args.duration or not args.reason:
        print("bcd maintenance: --for and --reason are required (or --end)", file=sys.stderr)
        return EXIT_USAGE
    body = {"duration": args.duration, "reason": args.reason, **({"site": args.site} if args.site else {}),
            **({"from": local(args.start), "force": args.force} if args.start else {})}
    result = call(args, "POST", f"/api/v1/services/{args.service}/maintenance", body)
    booked = f" ({result['detail']})" if args.start else _where(result)
    print(f"{args.service}: {', '.join(result['sites'])} in maintenance until {when(result['until'])}{booked}")
    return EXIT_OK


def _where(result: dict[str, Any]) -> str:
    """On a cluster member, the answer's detail says where maintenance now was set or ended: on every instance
    (a window booked now), or on this one only (etcd out of reach)."""
    detail = str(result.get("detail", ""))
    return f" ({detail})" if "instance" in detail else ""
