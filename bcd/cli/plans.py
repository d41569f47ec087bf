"""`bcd plan …`: recovery plans through the daemon's API (list, show, run, resume, abort, approve, done).

`bcd.cli` hands in its client plumbing (`ClientKit`), so that this module does not import it back."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class ClientKit:
    api: Callable[[Handler], Handler]  # an API refusal is one line on stderr and exit 1
    call: Callable[..., Any]  # (args, method, path, body=None) -> the JSON answer
    client_arguments: Callable[[argparse.ArgumentParser], None]
    when: Callable[[float | None], str]  # a timestamp as the CLI shows it
    local: Callable[[str], str] = str  # an ISO time given without an offset, in this machine's local time

    def book(self, args: argparse.Namespace, body: dict[str, Any]) -> int:
        """`--at`: POST the booking (`body` plus the time and reason of `args`) and print what was booked (a dry
        run is not booked: exit 2)."""
        if args.dry_run:
            print("bcd: a dry run is not booked: leave out --at (or --dry-run)", file=sys.stderr)
            return 2
        answer = self.call(args, "POST", "/api/v1/bookings", {**body, "at": self.local(args.at),
                                                               "reason": args.reason})
        if getattr(args, "json", False):
            print(json.dumps(answer, indent=2))
            return 0
        booking = answer["booking"]
        here = dt.datetime.fromtimestamp(booking["at"]).astimezone().strftime("%Y-%m-%d %H:%M %Z here")
        print(f"{answer['detail']} ({here}); cancel with: bcd bookings cancel {booking['id']}")
        return 0


def add_plan_commands(commands: Any, kit: ClientKit) -> None:
    plan = commands.add_parser("plan", help="recovery plans: list, show, run, resume, abort, approve, done")
    actions = plan.add_subparsers(metavar="ACTION", required=True)

    def action(name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        kit.client_arguments(parser)
        parser.add_argument("--json", action="store_true", help="print the API's JSON")
        parser.set_defaults(handler=kit.api(handler))
        return parser

    action("list", "every plan and its last run", lambda args: _list(kit, args))
    action("show", "a plan: the order a run would take now, and its recent runs",
           lambda args: _show(kit, args)).add_argument("name")
    run = action("run", "start a run of a plan (operator)", lambda args: _run(kit, args))
    run.add_argument("name")
    run.add_argument("--reason", required=True, help="why, for the journal")
    run.add_argument("--dry-run", action="store_true", help="print what it would do, run nothing")
    run.add_argument("--force", action="store_true", help="each move bypasses the standby-health and cooldown "
                     "guards (journaled as forced)")
    run.add_argument("--at", help="book the run for then (bcd bookings); local time unless an offset is given")
    for name, help_text in (("resume", "go on with an interrupted plan run (operator)"),
                            ("approve", "approve the gate a plan run waits at (operator)"),
                            ("status", "show one plan run")):
        action(name, help_text, _acting(kit, name)).add_argument("run", type=int)
    abort = action("abort", "start no more moves of a plan run (operator)", lambda args: _act(kit, args, "abort"))
    abort.add_argument("run", type=int)
    abort.add_argument("--now", action="store_true", help="abort the moves in progress too (their rollback runs)")
    done = action("done", "mark a manual or blocked service of a plan run done (operator)",
                  lambda args: _act(kit, args, "done"))
    done.add_argument("run", type=int)
    done.add_argument("service")


def _acting(kit: ClientKit, what: str) -> Handler:
    return lambda args: _act(kit, args, what)


def _list(kit: ClientKit, args: argparse.Namespace) -> int:
    plans = kit.call(args, "GET", "/api/v1/plans")["plans"]
    if args.json:
        print(json.dumps(plans, indent=2))
        return 0
    print(f"{'PLAN':<24} {'FROM→TO':<24} {'TRIGGER':<8} LAST RUN")
    for plan in plans:
        last = plan["last_run"]
        seen = f"{last['id']} {last['state']}" if last else "never run"
        print(f"{plan['name']:<24} {plan['from'] + '→' + plan['to']:<24} {plan['trigger']:<8} {seen}")
    return 0


def _show(kit: ClientKit, args: argparse.Namespace) -> int:
    plan = kit.call(args, "GET", f"/api/v1/plans/{args.name}")
    if args.json:
        print(json.dumps(plan, indent=2))
        return 0
    print(plan["order"])
    for run in plan["runs"]:
        print(f"run {run['id']}: {run['state']} {kit.when(run['started'])} by {run['by']}: {run['detail']}")
    return 0


def _run(kit: ClientKit, args: argparse.Namespace) -> int:
    if args.at:
        return kit.book(args, {"kind": "plan", "plan": args.name, "force": args.force})
    body = {"reason": args.reason, "dry_run": args.dry_run, "force": args.force}
    answer = kit.call(args, "POST", f"/api/v1/plans/{args.name}/run", body)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(answer["detail"])
    return 0


def _act(kit: ClientKit, args: argparse.Namespace, what: str) -> int:
    base = f"/api/v1/plan-runs/{args.run}"
    if what == "status":
        answer = {"plan_run": kit.call(args, "GET", base), "detail": ""}
    elif what == "done":
        answer = kit.call(args, "POST", f"{base}/services/{args.service}/done", {})
    else:
        answer = kit.call(args, "POST", f"{base}/{what}", {"now": args.now} if what == "abort" else {})
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    if answer["detail"]:
        print(answer["detail"])
    if what == "status":
        print(plan_run_text(answer["plan_run"]))
    return 0


def plan_run_text(run: dict[str, Any]) -> str:
    """A plan run as lines: its state, then each group's services with state, run and reason."""
    ended = run["ended"] or time.time()
    lines = [f"plan run {run['id']} of {run['plan']}: {run['state']} ({run['from']} → {run['to']}, "
             f"{ended - run['started']:.0f}s) {run['detail']}".rstrip()]
    moves = {move["service"]: move for move in run["services"]}
    for number, group in enumerate(run["groups"], start=1):
        lines.append(f"group {number}:")
        for name in group:
            move = moves[name]
            runs = f" run {move['run_id']}" if move["run_id"] is not None else ""
            lines.append(f"  {name:<24} {move['state']:<8}{runs} {move['reason']}".rstrip())
    skipped = [move for move in run["services"] if move["group"] == 0]
    lines.extend(f"  {move['service']:<24} skipped  {move['reason']}" for move in skipped)
    lines.extend(f"gate after group {gate['after_group']}: {gate['state']}" + (f" by {gate['by']}" if gate["by"]
                 else "") for gate in run["gates"])
    return "\n".join(lines)
