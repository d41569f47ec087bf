"""The `bcd` command. Exit codes: 0 ok, 1 operation failed, 2 usage or config error (for `bcd run`, also a
state_dir or `server.listen` it cannot use: another bcd holds it, a port in use, an unusable journal).

One module per group of commands: `daemon.py` (run, check-config, schema, demo, files: on this machine),
`status.py` (`bcd status`, with `status_views.py` and `recovery_text.py` for what it prints under its table),
`operator.py` (failover, failback, ack, approve, abort, maintenance), `history.py` (events, runs, run-show,
recoveries), `plans.py`, `drills.py`, `bookings.py`, `reload.py`, `journal.py` (`bcd journal verify|export`,
and `bcd report`). Those that talk to the daemon's API share `api.py` (the client arguments, one call, a
refusal as one line) and `client.py` (the HTTP client, stdlib only: the CLI stays fast).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from bcd import __version__, tokens
from bcd.cli import bookings, daemon, drills, history, operator, reload, status
from bcd.cli.api import EXIT_USAGE, add_client_arguments, api, call, local, when
from bcd.cli.journal import add_journal_commands
from bcd.cli.plans import ClientKit, add_plan_commands


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
    except BrokenPipeError:  # `bcd events | head`: the reader has gone; no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # as a shell reports a command killed by SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bcd", description="Business-continuity failover daemon.")
    parser.add_argument("--version", action="version", version=f"bcd {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")
    daemon.add_commands(commands)
    status.add_command(commands)
    operator.add_commands(commands)
    history.add_commands(commands)
    add_plan_commands(commands, kit := ClientKit(api, call, add_client_arguments, when, local))
    for extra in (drills, bookings, reload):
        extra.add_commands(commands, kit)
    tokens.add_commands(commands)
    add_journal_commands(commands)
    return parser
