"""The `drills:` section and a service's `drill_runbook`: each bad one as FILE:LINE: path: message."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from bcd.config import ConfigError, parse

PROBES = "sites: {dorset: {probes: [{name: t, tcp: {host: h, port: 1}}]}, hampshire: {probes: [{name: t, tcp: {host: h, port: 1}}]}}"
ESTATE = f"""\
sites: {{dorset: {{}}, hampshire: {{}}}}
runbooks: {{move: {{steps: [{{name: p, sleep: {{duration: 1s}}}}]}}}}
services:
  payroll: {{active: dorset, failover: {{runbook: move}}, failback: {{runbook: move}}, {PROBES}}}
  sql: {{active: dorset, failover: {{runbook: move}}, {PROBES}}}
"""


def issues_of(text: str, estate: str = ESTATE) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(estate + textwrap.dedent(text), "bcd.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_a_scheduled_drill_and_the_default_max_age() -> None:
    config = parse(ESTATE + textwrap.dedent("""\
        drills:
          payroll-quarterly: {service: payroll, kind: round_trip, hold: 10m,
                              at: "first Tuesday of Jan,Apr,Jul,Oct 02:00", timezone: Europe/London,
                              blackout: ["2026-12-20..2027-01-04"]}
        """), "bcd.yaml")
    drill = config.drills["payroll-quarterly"]
    assert (drill.service, drill.kind, drill.hold, config.defaults.drills_max_age) == (
        "payroll", "round_trip", 600.0, 365 * 86400.0)
    # the first Tuesday of January 2027 (the 5th) falls after the blackout: it is the first start after Christmas
    start = drill.next_start(datetime(2026, 12, 1, tzinfo=UTC))
    assert start is not None and start.isoformat() == "2027-01-05T02:00:00+00:00"
    assert drill.in_blackout(datetime(2027, 1, 4, 23, 0, tzinfo=UTC)) == "2026-12-20..2027-01-04"


def test_bad_drills_are_located() -> None:
    assert issues_of("""\
        drills:
          nosuch: {service: nosuch, at: "every day 02:00"}
          never: {service: payroll, at: "fifth Monday of Feb 10:00"}
          oneway: {service: sql, at: "every day 02:00"}
          nobook: {service: payroll, kind: runbook, at: "every day 02:00"}
          dark: {service: payroll, at: "first Monday of Jan 02:00", blackout: ["2000-01-01..2099-12-31"]}
          later: {service: archive, kind: runbook, at: "every day 02:00"}
        """, ESTATE + f"  archive: {{active: dorset, drill_runbook: move, {PROBES}}}\n") == [
        "bcd.yaml:8: drills.nosuch.service: unknown service 'nosuch'",
        "bcd.yaml:9: drills.never.at: 'fifth Monday of Feb 10:00' never fires outside the blackouts in the next "
        "8 years",
        "bcd.yaml:10: drills.oneway.kind: sql: a round trip needs a failback runbook",
        "bcd.yaml:11: drills.nobook.kind: payroll: a runbook drill needs the service's drill_runbook",
        "bcd.yaml:12: drills.dark.at: 'first Monday of Jan 02:00' never fires outside the blackouts in the next "
        "8 years",
    ]  # `later` is sound: archive has a drill_runbook


def test_bad_values() -> None:
    issues = issues_of("""\
        drills:
          a: {service: payroll, at: "every day"}
          b: {service: payroll, at: "every day 02:00", blackout: ["2027-01-04..2026-12-20"]}
          c: {service: payroll, at: "every day 02:00", blackout: ["Christmas"]}
          d: {service: payroll, at: "every day 02:00", hold: 2d}
        """)
    assert issues[0] == "bcd.yaml:7: drills.a.at: expected a time HH:MM at the end of 'every day'"
    assert issues[1].startswith("bcd.yaml:8: drills.b.blackout: blackout '2027-01-04..2026-12-20' ends before")
    assert issues[2].startswith("bcd.yaml:9: drills.c.blackout: a blackout reads FIRST..LAST")
    assert issues[3] == "bcd.yaml:10: drills.d.hold: must be between 0s and 1d"


def test_a_drill_the_runtime_would_always_refuse_is_a_config_error() -> None:
    lonely = "sites: {dorset: {probes: [{name: t, tcp: {host: h, port: 1}}]}}"
    estate = ESTATE + (f"  autoback: {{active: dorset, failover: {{runbook: move}}, "
                       f"failback: {{runbook: move, mode: auto}}, drill_runbook: move, {PROBES}}}\n"
                       f"  lonely: {{active: dorset, failover: {{runbook: move}}, failback: {{runbook: move}}, "
                       f"{lonely}}}\n")
    assert issues_of("""\
        drills:
          homesick: {service: autoback, kind: round_trip, at: "every day 02:00"}
          copy: {service: autoback, kind: runbook, at: "every day 02:00"}
          nowhere: {service: lonely, at: "every day 02:00"}
        """, estate) == [
        "bcd.yaml:9: drills.homesick.kind: autoback: its failback is automatic: the policy would move it home "
        "before the drill does (drill it with failback mode manual)",
        "bcd.yaml:11: drills.nowhere.kind: lonely: a round trip needs a standby site to move to",
    ]  # `copy` is sound: a runbook drill moves nothing, the automatic failback never acts on it


def test_a_runbook_drill_on_a_cluster_member_is_a_config_error() -> None:
    estate = ("vantage: dorset\ncluster: {name: c, etcd: {endpoints: ['https://127.0.0.1:2379']}}\n"
              + ESTATE.replace("failback: {runbook: move}, ", "failback: {runbook: move}, drill_runbook: move, "))
    assert issues_of("""\
        drills:
          copy: {service: payroll, kind: runbook, at: "every day 02:00"}
          trip: {service: payroll, kind: round_trip, at: "every day 02:00"}
        """, estate) == [
        "bcd.yaml:9: drills.copy.kind: a runbook drill is not carried out on a cluster member (use round_trip)"]


def test_a_drill_runbook_must_exist() -> None:
    text = ESTATE.replace("failback: {runbook: move}, ", "failback: {runbook: move}, drill_runbook: nosuch, ")
    with pytest.raises(ConfigError) as caught:
        parse(text, "bcd.yaml")
    assert [str(issue) for issue in caught.value.issues] == [
        "bcd.yaml:4: services.payroll.drill_runbook: unknown runbook 'nosuch'"]


def test_a_scheduled_plan_drill_names_exactly_one_existing_plan_and_no_kind() -> None:
    plans = "plans:\n  evacuate: {from: dorset, to: hampshire}\n"
    config = parse(ESTATE + plans + 'drills:\n  rehearse: {plan: evacuate, hold: 5m, at: "every Sun 02:00"}\n',
                   "bcd.yaml")
    drill = config.drills["rehearse"]
    assert (drill.plan, drill.service, drill.drill_kind, drill.hold) == ("evacuate", None, "plan", 300.0)
    assert issues_of("""\
        drills:
          both: {service: payroll, plan: evacuate, at: "every day 02:00"}
          neither: {at: "every day 02:00"}
          nosuch: {plan: nosuch, at: "every day 02:00"}
          kinded: {plan: evacuate, kind: round_trip, at: "every day 02:00"}
        """, ESTATE + plans) == [
        "bcd.yaml:9: drills.both: name exactly one of service and plan",
        "bcd.yaml:10: drills.neither: name exactly one of service and plan",
        "bcd.yaml:11: drills.nosuch.plan: unknown plan 'nosuch'",
        "bcd.yaml:12: drills.kinded.kind: a plan drill takes no kind: it moves what the plan moves, then moves it back",
    ]
