"""The `plans:` section: what it accepts, and each bad reference as FILE:LINE: path: message."""

from __future__ import annotations

import textwrap

import pytest

from bcd.config import ConfigError, parse

PROBES = "sites: {dorset: {probes: [{name: t, tcp: {host: h, port: 1}}]}, hampshire: {probes: [{name: t, tcp: {host: h, port: 1}}]}}"
ESTATE = f"""\
sites: {{dorset: {{}}, hampshire: {{}}}}
services:
  directory: {{active: dorset, {PROBES}}}
  sql: {{active: dorset, depends_on: [directory], {PROBES}}}
"""


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(ESTATE + textwrap.dedent(text), "bcd.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_a_plan_with_every_key() -> None:
    config = parse(ESTATE + textwrap.dedent("""\
        plans:
          evacuate-dorset:
            description: Leave Dorset
            from: dorset
            to: hampshire
            services: [directory, sql]
            parallel: 2
            gates: [{after_group: 1, approval: {timeout: 30m}}]
            on_service_failure: stop
            trigger: auto
            objective: 2h
        """))
    plan = config.plans["evacuate-dorset"]
    assert (plan.from_site, plan.to_site, plan.parallel, plan.on_service_failure, plan.trigger) == (
        "dorset", "hampshire", 2, "stop", "auto")
    assert plan.gates[0].approval.timeout == 1800.0 and plan.objective == 7200.0


def test_defaults() -> None:
    plan = parse(ESTATE + "plans: {p: {from: dorset, to: hampshire}}\n").plans["p"]
    assert (plan.services, plan.parallel, plan.gates, plan.on_service_failure, plan.trigger) == (
        "all", 4, [], "continue", "manual")


def test_unknown_sites_services_and_gates_are_located() -> None:
    assert issues_of("""\
        plans:
          evacuate:
            from: dorset
            to: nowhere
            services: [sql, nosuch]
          ok:
            from: dorset
            to: hampshire
            gates:
              - after_group: 1
              - after_group: 2
                approval: {timeout: 10m}
        """) == [
        "bcd.yaml:8: plans.evacuate.to: site 'nowhere' is not declared under sites",
        "bcd.yaml:9: plans.evacuate.services.1: unknown service 'nosuch'",
        "bcd.yaml:15: plans.ok.gates.1.after_group: no group follows group 2: with every selected service active "
        "on 'dorset' this plan has 2 group(s)",
    ]


def test_a_label_selector_matching_nothing_has_no_group_to_gate() -> None:
    assert issues_of("""\
        plans:
          p: {from: dorset, to: hampshire, services: {labels: {owner: x}}, gates: [{after_group: 1}]}
        """) == ["bcd.yaml:6: plans.p.gates.0.after_group: no group follows group 1: with every selected service "
                 "active on 'dorset' this plan has 0 group(s)"]


def test_a_plan_to_where_it_comes_from() -> None:
    assert issues_of("plans: {p: {from: dorset, to: dorset}}\n") == [
        "bcd.yaml:5: plans.p.to: a plan moves services away from 'dorset': `to` must be another site"]


def test_bad_values_and_unknown_keys() -> None:
    assert sorted(issues_of("""\
        plans:
          p: {from: dorset, to: dorset, parallel: 0, on_service_failure: maybe, colour: red}
        """)) == [
        "bcd.yaml:6: plans.p.colour: unknown key",
        "bcd.yaml:6: plans.p.on_service_failure: Input should be 'continue' or 'stop'",
        "bcd.yaml:6: plans.p.parallel: Input should be greater than or equal to 1",
    ]
