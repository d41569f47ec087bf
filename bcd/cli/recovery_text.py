"""What `bcd recoveries` and `bcd status` print of recoveries and objectives, from the API's JSON only."""

from __future__ import annotations

import datetime as dt
from typing import Any

from bcd.durations import format_duration
from bcd.recoveries import PHASES

HEADINGS = {"detection": "DETECT", "decision": "DECIDE", "execution": "EXECUTE", "verification": "VERIFY"}


def seconds_text(value: float | None) -> str:
    """`-` when unknown; seconds under 2 minutes, else minutes, else hours."""
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def objective_text(value: float | None) -> str:
    """An objective as configured (`30m`), `none` when there is none."""
    return "none" if value is None else format_duration(value)


def recoveries_table(page: dict[str, Any]) -> list[str]:
    """One line per recovery, newest first: its phases, total and the RTO met or missed."""
    objectives = page["objectives"]
    lines = [f"{page['service']}: RTO {objective_text(objectives['rto'])}, RPO {objective_text(objectives['rpo'])}",
             f"{'RUN':>5} {'STARTED':<20} {'KIND':<9} {'TRIGGER':<10} {'FROM→TO':<22} {'RESULT':<12} "
             + " ".join(f"{HEADINGS[phase]:>8}" for phase in PHASES) + f" {'TOTAL':>8} RTO"]
    for recovery in page["recoveries"]:
        started = dt.datetime.fromtimestamp(recovery["timeline"]["started"], dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        moved = f"{recovery['from']}→{recovery['to']}"
        met = {True: "met", False: "MISSED", None: "-"}[recovery["rto_met"]]
        kind = recovery["kind"] + (f" ({recovery['plan']})" if recovery.get("plan") else "")
        lines.append(f"{recovery['run_id']:>5} {started:<20} {kind:<9} {recovery['trigger']:<10} {moved:<22} "
                     f"{recovery['result']:<12} "
                     + " ".join(f"{seconds_text(recovery['phases'][phase]):>8}" for phase in PHASES)
                     + f" {seconds_text(recovery['total']):>8} {met}")
    if not page["recoveries"]:
        lines.append("(no recoveries yet)")
    return lines


def objectives_block(services: list[dict[str, Any]]) -> list[str]:
    """Under `bcd status`'s table, after a blank line: each service's objectives (nothing when no service has
    one)."""
    rows = [(service["name"], service.get("objectives") or {}) for service in services]
    rows = [(name, objectives) for name, objectives in rows if any(objectives.values())]
    if not rows:
        return []
    width = max(len(name) for name, _ in rows)
    return ["", "objectives (RTO / RPO):", *(f"  {name:<{width}}  {objective_text(objectives.get('rto'))} / "
                                        f"{objective_text(objectives.get('rpo'))}" for name, objectives in rows)]
