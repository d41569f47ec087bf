"""`bcd bookings …` and `--at`: runs booked for a set time, through the daemon's API.

`bcd failover SERVICE --at TIME --reason …` (and `failback`, and `bcd plan run PLAN --at TIME`) books the run
instead of starting it; `bcd bookings` lists the bookings (runs and maintenance windows: those to come or in
progress, then the latest over), `bcd bookings show ID` shows one, `bcd bookings cancel ID` cancels one to come
(or ends a maintenance window in progress, on every instance).
TIME is ISO 8601; without an offset it is this machine's local time (sent to the daemon with the offset).

`bcd.cli` hands in its client plumbing (`ClientKit`), so that this module does not import it back."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bcd.cli.plans import ClientKit, Handler

AT_HELP = "book it for then instead of starting it now (ISO 8601, e.g. 2026-12-10T22:15: this machine's local " \
          "time unless an offset is given)"


def add_commands(commands: Any, kit: ClientKit) -> None:
    """`bcd bookings [list|show|cancel]`, and `--at` on `bcd failover` and `bcd failback`."""
    for kind in ("failover", "failback"):
        transfer: argparse.ArgumentParser = commands.choices[kind]
        transfer.add_argument("--at", help=AT_HELP)
        now = transfer.get_default("handler")
        transfer.set_defaults(handler=_booked_or(kit, now))
    bookings = commands.add_parser("bookings", help="runs and maintenance windows booked for later: list, show, "
                                   "cancel")
    kit.client_arguments(bookings)
    bookings.add_argument("--json", action="store_true", help="print the API's JSON")
    bookings.set_defaults(handler=kit.api(lambda args: _list(kit, args)))
    actions = bookings.add_subparsers(metavar="ACTION")
    for name, help_text, handler in (("list", "every booking to come or in progress, then the latest over", _list),
                                     ("show", "one booking", _show),
                                     ("cancel", "cancel a booking to come, or end a maintenance window in progress "
                                      "(operator)", _cancel)):
        parser = actions.add_parser(name, help=help_text)
        kit.client_arguments(parser)
        parser.add_argument("--json", action="store_true", help="print the API's JSON")
        if name != "list":
            parser.add_argument("id")
        if name == "cancel":
            parser.add_argument("--reason", default="", help="why, for the journal")
        parser.set_defaults(handler=kit.api(_with(kit, handler)))


def _with(kit: ClientKit, handler: Any) -> Handler:
    return lambda args: handler(kit, args)


def _booked_or(kit: ClientKit, now: Handler) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        if not args.at:
            return now(args)
        body = {"kind": args.kind, "service": args.service, "to": args.to, "force": args.force}
        return kit.api(lambda _: kit.book(args, body))(args)

    return handler


def _list(kit: ClientKit, args: argparse.Namespace) -> int:
    bookings = kit.call(args, "GET", "/api/v1/bookings")["bookings"]
    if args.json:
        print(json.dumps(bookings, indent=2))
        return 0
    print(f"{'ID':<10} {'STATE':<12} {'WHEN (UTC)':<21} {'WHAT':<36} {'BY':<12} REASON / OUTCOME")
    for booking in bookings:
        print(_line(kit, booking))
    return 0


def _line(kit: ClientKit, booking: dict[str, Any]) -> str:
    target = booking["plan"] if booking["kind"] == "plan" else booking["service"]
    what = f"{booking['kind']} {target}"
    if booking["kind"] == "maintenance":
        what += f" {','.join(booking['sites'])}"
    elif booking["to"]:
        what += f" to {booking['to']}"
    said = booking["detail"] or booking["reason"]
    return (f"{booking['id']:<10} {booking['state']:<12} {kit.when(booking['at']):<21} {what:<36} "
            f"{booking['by']:<12} {said}")


def _show(kit: ClientKit, args: argparse.Namespace) -> int:
    booking = kit.call(args, "GET", f"/api/v1/bookings/{args.id}")
    if args.json:
        print(json.dumps(booking, indent=2))
        return 0
    print(_line(kit, booking))
    return 0


def _cancel(kit: ClientKit, args: argparse.Namespace) -> int:
    answer = kit.call(args, "POST", f"/api/v1/bookings/{args.id}/cancel", {"reason": args.reason})
    print(json.dumps(answer, indent=2) if args.json else answer["detail"])
    return 0
