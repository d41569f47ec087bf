"""Continuity reports: availability, incidents, recoveries against the RTO, drills and risks over a period,
computed from the journal (bcd.report.compute → bcd.report.model) and rendered as HTML, JSON, Markdown or PDF;
`bcd.report.make.make_report` is the way in.

This module stays light (the `bcd` command imports it for its arguments): what is heavy is imported where used.
"""

from __future__ import annotations

FORMATS = ("html", "json", "md")  # rendered by bcd.report.make.RENDERERS; pdf is printed from the html
MEDIA_TYPES = {"html": "text/html", "json": "application/json", "md": "text/markdown", "pdf": "application/pdf"}


class ReportError(Exception):
    """The report cannot be made as asked (bad dates, an unknown service, no journal): `str()` says why."""
