"""`bcd report`: a continuity report from the journal in the config's state_dir, with or without a running
daemon. Exit codes: 0 written, 2 usage (bad dates, unknown service, no journal, bad config, no Chromium)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bcd.report import FORMATS, ReportError

EXIT_OK, EXIT_USAGE = 0, 2


def add_report_command(commands: Any) -> None:
    report = commands.add_parser("report", help="a continuity report over a period, from the journal")
    report.add_argument("-c", "--config", required=True, help="the daemon's config: reads the journal in its state_dir")
    report.add_argument("--from", dest="start", required=True, help="first day (2026-07-01) or a UTC time")
    report.add_argument("--to", dest="end", required=True, help="last day, included (2026-09-30), or a UTC time")
    report.add_argument("--service", action="append", help="only this service (repeat for more)")
    report.add_argument("--format", choices=(*FORMATS, "pdf"), default="html", help="html (default), json, md or pdf")
    report.add_argument("-o", "--output", help="file to write (default: standard output)")
    report.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    # imported here: every `bcd` command builds this one's arguments, only `bcd report` needs the rest
    import asyncio

    from bcd import config as config_module
    from bcd.config import ConfigError
    from bcd.report.dates import period
    from bcd.report.make import RENDERERS, make_report
    from bcd.report.pdf import chromium, html_to_pdf, not_installed

    try:
        config = config_module.load(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.format == "pdf" and chromium() is None:  # said before the report's seconds of work
            raise ReportError(not_installed("--format pdf", "--format html"))
        start, end = period(args.start, args.end)
        report = make_report(config, start, end, args.service)
        text = RENDERERS["html" if args.format == "pdf" else args.format](report)
        data = asyncio.run(html_to_pdf(text)) if args.format == "pdf" else text.encode()
    except ReportError as exc:
        print(f"bcd report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return EXIT_OK
    try:
        with open(args.output, "wb") as out:
            out.write(data)
    except OSError as exc:
        print(f"bcd report: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.output} ({len(report.services)} services, {len(report.risks)} risks)", file=sys.stderr)
    return EXIT_OK
