"""The planner: which services a plan run takes, in which groups, what it skips and why, and the dry run."""

from __future__ import annotations

from bcd.config import Config, parse
from bcd.plans import planner
from bcd.plans.model import MoveState

PROBES = "sites: {dorset: {probes: [{name: t, tcp: {host: h, port: 1}}]}, hampshire: {probes: [{name: t, tcp: {host: h, port: 1}}]}}"
ONLY_DORSET = "sites: {dorset: {probes: [{name: t, tcp: {host: h, port: 1}}]}}"


def estate(plan: str = "{from: dorset, to: hampshire}") -> Config:
    return parse(f"""
sites: {{dorset: {{}}, hampshire: {{}}, kent: {{}}}}
runbooks: {{move: {{steps: [{{name: s, sleep: {{duration: 1s}}}}]}}}}
services:
  directory: {{active: dorset, labels: {{tier: infra}}, failover: {{runbook: move}}, {PROBES}}}
  sql: {{active: dorset, depends_on: [directory], labels: {{tier: infra}}, failover: {{runbook: move}}, {PROBES}}}
  payroll: {{active: dorset, depends_on: [sql], failover: {{runbook: move}}, {PROBES}}}
  printers: {{active: dorset, depends_on: [directory], {PROBES}}}
  library: {{active: hampshire, failover: {{runbook: move}}, {PROBES}}}
  archive: {{active: dorset, failover: {{runbook: move}}, {ONLY_DORSET}}}
plans:
  evacuate: {plan}
""")


def test_groups_by_depth_with_skips_and_manual_services() -> None:
    config = estate()
    active = {name: service.active for name, service in config.services.items()}
    planned = planner.plan(config.plans["evacuate"], config.services, active, {})
    assert [[(m.service, m.state) for m in group] for group in planned.groups] == [
        [("directory", MoveState.PENDING)],
        [("printers", MoveState.MANUAL), ("sql", MoveState.PENDING)],
        [("payroll", MoveState.PENDING)],
    ]
    skipped = {m.service: m.reason for m in planned.moves if m.state is MoveState.SKIPPED}
    assert skipped == {"library": "already there", "archive": "no site 'hampshire'"}


def test_the_estate_at_the_start_decides_what_moves() -> None:
    config = estate()
    active = {name: service.active for name, service in config.services.items()} | {"sql": "hampshire"}
    planned = planner.plan(config.plans["evacuate"], config.services, active, {})
    # sql is already there: payroll needs nothing left to move but directory, through sql
    assert [[m.service for m in group] for group in planned.groups] == [["directory"], ["payroll", "printers"]]


def test_a_label_selector_takes_only_those_services() -> None:
    config = estate("{from: dorset, to: hampshire, services: {labels: {tier: infra}}}")
    active = {name: service.active for name, service in config.services.items()}
    planned = planner.plan(config.plans["evacuate"], config.services, active, {})
    assert [[m.service for m in group] for group in planned.groups] == [["directory"], ["sql"]]


def test_the_dry_run_names_groups_skips_gates_and_the_critical_path() -> None:
    config = estate("{from: dorset, to: hampshire, gates: [{after_group: 1, approval: {timeout: 10m}}], "
                    "objective: 2h}")
    active = {name: service.active for name, service in config.services.items()}
    seconds = {"directory": 30.0, "sql": 60.0, "payroll": 20.0}
    planned = planner.plan(config.plans["evacuate"], config.services, active, seconds)
    assert planned.critical.services == ("directory", "sql", "payroll")
    text = planner.describe("evacuate", config.plans["evacuate"], planned, seconds)
    assert text.splitlines() == [
        "plan evacuate: dorset -> hampshire, 4 at once per group, on failure: continue",
        "group 1:",
        "  directory (~30s)",
        "gate: an operator approves before group 2 (timeout 600s)",
        "group 2:",
        "  printers manual: no failover runbook: move it by hand, then `bcd plan done RUN SERVICE`",
        "  sql (~60s)",
        "group 3:",
        "  payroll (~20s)",
        "skipped:",
        "  archive: no site 'hampshire'",
        "  library: already there",
        "critical path: 110s: directory -> sql -> payroll (3 of 3 durations recorded)",
        "objective: 7200s",
    ]
