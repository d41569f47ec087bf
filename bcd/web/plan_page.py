"""The status page's recovery plans: each plan run in progress (or interrupted) as groups of services, with each
service's state, run and elapsed time, the gate waiting for approval, and the plan's elapsed time against its
objective. Server-rendered (the page reloads it; every value escaped)."""

from __future__ import annotations

from html import escape
from typing import Any

from bcd.plans.model import OPEN_STATES
from bcd.view import EstateView

OPEN = frozenset(str(state) for state in OPEN_STATES)


def collect(estate: EstateView) -> list[dict[str, Any]]:
    """The open plan runs (running, at a gate, interrupted), newest first, in the API's JSON shape."""
    return [run.to_json() for run in estate.plan_runs(None, 20) if run.state in OPEN_STATES]


def section(runs: list[dict[str, Any]], readable: bool, now: float) -> str:
    body = "".join(_run(run, now) for run in runs)
    if not body:
        body = '<p class="empty">No recovery plan is running.</p>' if readable else ""
    return (f'<section aria-labelledby="plans-heading" id="plans"><h2 id="plans-heading">Recovery plans</h2>'
            f"{body}</section>")


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _seconds(value: float) -> str:
    value = max(0.0, value)
    return f"{value / 60:.0f} min" if value >= 120 else f"{value:.0f} s"


def _gate(gate: dict[str, Any], run_id: int) -> str:
    """A gate waiting: before which group, why (`require_approval`), and the approvals so far of how many."""
    why = f' — {_e(gate["why"])}' if gate.get("why") else ""
    needed = gate.get("approvers", 1)
    given = gate.get("approvals", [])
    names = _e(", ".join(given)) or "none yet"
    count = f"; {len(given)} of {needed} approvals ({names})" if needed > 1 or given else ""
    return (f'<p class="gate">Waiting for approval before group {gate["after_group"] + 1}{why}{count} '
            f'(bcd plan approve {run_id})</p>')


def _run(run: dict[str, Any], now: float) -> str:
    elapsed = (run["ended"] or now) - run["started"]
    objective = run["objective"]
    against = f" of {_seconds(objective)} objective" if objective else ""
    late = " late" if objective and elapsed > objective else ""
    gates = "".join(_gate(gate, run["id"]) for gate in run["gates"] if gate["state"] == "waiting")
    moves = {move["service"]: move for move in run["services"]}
    rows = "".join(
        f'<tr><th scope="row">Group {number}</th><td><ul class="plan-services">'
        + "".join(_service(moves[name], now) for name in group) + "</ul></td></tr>"
        for number, group in enumerate(run["groups"], start=1)
    )
    skipped = [move for move in run["services"] if move["group"] == 0]
    listed = ", ".join(f"{_e(m['service'])} ({_e(m['reason'])})" for m in skipped)
    skips = f'<p class="skipped">Skipped: {listed}</p>' if skipped else ""
    return (
        f'<article class="plan-run plan-{_e(run["state"])}" data-plan-run="{run["id"]}">'
        f'<h3>Plan run {run["id"]}: {_e(run["plan"])} {_e(run["from"])} → {_e(run["to"])}</h3>'
        f'<p class="plan-state"><strong>{_e(run["state"].replace("_", " "))}</strong>, '
        f'<span class="elapsed{late}">{_seconds(elapsed)}{against}</span>'
        f'{" — " + _e(run["detail"]) if run["detail"] else ""}</p>{gates}'
        f'<table class="plan-groups"><tbody>{rows}</tbody></table>{skips}</article>'
    )


def _service(move: dict[str, Any], now: float) -> str:
    started, ended = move["started"], move["ended"]
    elapsed = f" {_seconds((ended or now) - started)}" if started else ""
    run = f" run {move['run_id']}" if move["run_id"] is not None else ""
    why = f' title="{_e(move["reason"])}"' if move["reason"] else ""
    return (f'<li class="move move-{_e(move["state"])}"{why}>{_e(move["service"])} '
            f'<span class="move-state">{_e(move["state"])}</span>{run}{elapsed}</li>')
