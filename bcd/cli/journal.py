"""`bcd journal verify` and `bcd journal export`: the tamper-evident ledger (bcd.journal.ledger) checked and exported,
with or without a running daemon (the journal is opened read-only). Exit codes: 0 intact, 1 not, 2 usage."""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from pathlib import Path
from typing import Any

from bcd import config as config_module
from bcd.config import ConfigError
from bcd.journal.ledger import SEAL_EVERY
from bcd.journal.ledger_check import Report, check_database, check_lines, export, has_ledger, open_readonly
from bcd.report import ReportError, dates
from bcd.report.cli import add_report_command
from bcd.state_dir import JOURNAL_NAME

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
SHOWN = 10  # problems printed after the first


def add_journal_commands(commands: Any) -> None:
    journal = commands.add_parser("journal", help="check or export the journal's hash chain")
    actions = journal.add_subparsers(metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check the chain (exit 0 intact, 1 not)")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument("-c", "--config", help="the daemon's config: checks the journal in its state_dir")
    source.add_argument("--file", help="an export (JSON lines), checked offline")
    verify.set_defaults(handler=cmd_verify)
    dump = actions.add_parser("export", help="write the chain's entries as JSON lines, with their hashes")
    dump.add_argument("-c", "--config", required=True)
    dump.add_argument("--from", dest="start", type=moment, help="from this UTC date or time (2026-07-01)")
    dump.add_argument("--to", dest="end", type=last_moment,
                      help="last day, included (2026-09-30), or a UTC time (up to, not including, it)")
    dump.add_argument("-o", "--output", help="file to write (default: standard output)")
    dump.set_defaults(handler=cmd_export)
    add_report_command(commands)  # `bcd report` reads the journal the same way (bcd.report.cli)


def moment(text: str, *, end: bool = False) -> float:
    """A date or ISO time, UTC unless it says otherwise, read as `bcd report` reads it (bcd.report.dates): a date
    alone as an end means the end of that day."""
    try:
        return dates.moment(text, end=end)
    except ReportError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def last_moment(text: str) -> float:
    """`--to`: a date alone includes its whole day, as `bcd report --to` does."""
    return moment(text, end=True)


def journal_path(config_path: str) -> Path | None:
    try:
        config = config_module.load(config_path)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return None
    path = Path(config.state_dir) / JOURNAL_NAME
    if not path.exists():
        print(f"{path}: no journal there (state_dir of {config_path})", file=sys.stderr)
        return None
    return path


def cmd_verify(args: argparse.Namespace) -> int:
    report = Report()
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as lines:
                check_lines(lines, report)
        except OSError as exc:
            print(f"{args.file}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        if not report.entries:
            print(f"{args.file}: nothing verified: the file holds no entries (an export of an empty period, or not "
                  "an export)")
            return EXIT_FAILED
        where = args.file
    else:
        path = journal_path(args.config)
        if path is None:
            return EXIT_USAGE
        try:
            with contextlib.closing(open_readonly(path)) as db:
                if not has_ledger(db):
                    print(f"{path}: NOT intact: the journal has no ledger (written by a bcd before the chain "
                          "existed): the daemon starts one at its next start")
                    return EXIT_FAILED
                report = check_database(db)
        except sqlite3.Error as exc:
            print(f"{path}: cannot be read as a journal: {exc}", file=sys.stderr)
            return EXIT_USAGE
        where = str(path)
    return _print(where, report, rows=args.file is None)


def _print(where: str, report: Report, *, rows: bool) -> int:
    seq, digest = report.head
    span = f"{report.entries} entries (seq {report.first}..{seq})" if report.entries else "no entries"
    start = "from genesis" if report.first <= 1 else f"after {report.starts_after}"
    checked = f", {report.rows} rows checked against them" if rows else " (an export: the rows are not in it)"
    if report.intact:
        waiting = (f"; the newest {report.unsealed} events entries are not sealed yet (the daemon seals them within "
                   f"{SEAL_EVERY:.0f} s)" if report.unsealed else "")
        print(f"{where}: intact: {span} {start}{checked}; head {seq} {digest}{waiting}")
        return EXIT_OK
    first_seq, first = report.problems[0]
    print(f"{where}: NOT intact: the chain breaks at entry {first_seq}: {first}")
    for _, text in report.problems[1:SHOWN + 1]:
        print(f"  also: {text}")
    if len(report.problems) > SHOWN + 1:
        print(f"  … and {len(report.problems) - SHOWN - 1} more")
    print(f"  walked {span}; head {seq} {digest}")
    return EXIT_FAILED


def cmd_export(args: argparse.Namespace) -> int:
    if args.start is not None and args.end is not None and args.end <= args.start:
        print("bcd journal export: the period must end after it starts (--to is not after --from)", file=sys.stderr)
        return EXIT_USAGE
    path = journal_path(args.config)
    if path is None:
        return EXIT_USAGE
    try:
        with contextlib.closing(open_readonly(path)) as db, contextlib.ExitStack() as stack:
            if not has_ledger(db):
                print(f"{path}: the journal has no ledger yet (the daemon starts one at its next start)",
                      file=sys.stderr)
                return EXIT_FAILED
            out = stack.enter_context(open(args.output, "w", encoding="utf-8")) if args.output else sys.stdout
            count = export(db, out, args.start, args.end)
    except (sqlite3.Error, OSError) as exc:
        print(f"cannot export {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"exported {count} entries from {path}", file=sys.stderr)
    return EXIT_OK
