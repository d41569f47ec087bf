"""`bcd drill SERVICE` / `bcd drill --plan PLAN`: start a DR drill through the daemon's API
(`POST /api/v1/services/{service}/drill`, `POST /api/v1/plans/{plan}/drill`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any
from urllib.parse import quote

from bcd.cli.plans import ClientKit
from bcd.durations import parse_duration


def add_commands(commands: Any, kit: ClientKit) -> None:
    drill = commands.add_parser("drill", help="rehearse a recovery of a service: to a standby and back (operator)")
    kit.client_arguments(drill)
    drill.add_argument("service", nargs="?", help="the service to drill (or --plan)")
    drill.add_argument("--plan", help="drill this recovery plan: run it as a drill, hold, move its services back")
    drill.add_argument("--reason", required=True, help="why, for the journal")
    drill.add_argument("--kind", choices=("round_trip", "runbook"), default="round_trip",
                       help="round_trip: a real failover, hold, fail back; runbook: the service's drill_runbook")
    drill.add_argument("--hold", default="0s", help="round_trip, --plan: how long to stay on the standby (e.g. 10m)")
    drill.add_argument("--json", action="store_true", help="print the API's JSON")
    drill.set_defaults(handler=kit.api(lambda args: _drill(kit, args)))


def _drill(kit: ClientKit, args: argparse.Namespace) -> int:
    try:
        parse_duration(args.hold)
    except ValueError as exc:
        print(f"bcd drill: --hold: {exc}", file=sys.stderr)
        return 2
    if (args.service is None) == (args.plan is None) or (args.plan is not None and args.kind != "round_trip"):
        print("bcd drill: name a SERVICE or a --plan PLAN (one of them; --kind is a service's)", file=sys.stderr)
        return 2
    if args.plan is not None:
        answer = kit.call(args, "POST", f"/api/v1/plans/{quote(args.plan, safe='')}/drill",
                          {"reason": args.reason, "hold": args.hold})
    else:
        body = {"reason": args.reason, "kind": args.kind, "hold": args.hold}
        answer = kit.call(args, "POST", f"/api/v1/services/{quote(args.service, safe='')}/drill", body)
    print(json.dumps(answer, indent=2) if args.json else answer["detail"])
    return 0
