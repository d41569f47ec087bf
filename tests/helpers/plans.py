"""Estates for recovery-plan tests: services in dependency levels, and checks of a plan run's order read from
the journal's run and step records (when each run's first step started, when each run ended)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def levels(counts: Sequence[int]) -> dict[str, list[str]]:
    """Service names in levels (`l1s0`, `l2s3`…), each depending on one or two services of the level below:
    service -> what it depends on."""
    graph: dict[str, list[str]] = {}
    below: list[str] = []
    for level, count in enumerate(counts, start=1):
        names = [f"l{level}s{index}" for index in range(count)]
        for index, name in enumerate(names):
            graph[name] = sorted({below[index % len(below)], below[(index + 1) % len(below)]}) if below else []
        below = names
    return graph


def services_yaml(graph: Mapping[str, Sequence[str]], probes: Mapping[str, str], *, runbook: str = "move",
                  runbooks: Mapping[str, str] | None = None, mode: str = "manual") -> str:
    """The `services:` section: each service active on dorset, with a failover by `runbook` (or
    `runbooks[service]`; "" for none) and a probe per site (`probes[site]`: a flow-style probe list)."""
    lines = ["services:"]
    for name, needs in graph.items():
        book = (runbooks or {}).get(name, runbook)
        failover = f"failover: {{runbook: {book}, mode: {mode}, cooldown: 0s}}, " if book else ""
        sites = ", ".join(f"{site}: {{probes: {probe}}}" for site, probe in probes.items())
        lines.append(f"  {name}: {{active: dorset, depends_on: [{', '.join(needs)}], {failover}sites: {{{sites}}}}}")
    return "\n".join(lines) + "\n"


def order_violations(graph: Mapping[str, Sequence[str]], runs: Mapping[str, Any],
                     first_steps: Mapping[str, float]) -> list[str]:
    """Each dependent whose first step started before one of its dependencies' runs ended (or succeeded)."""
    wrong = []
    for name, needs in graph.items():
        for need in needs:
            if name in first_steps and (need not in runs or runs[need].result != "succeeded"
                                        or first_steps[name] < runs[need].ended):
                wrong.append(f"{name} started before {need} succeeded")
    return wrong


def most_at_once(intervals: Sequence[tuple[float, float]]) -> int:
    """The largest number of intervals (start, end) open at one time."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, change in edges:
        current += change
        most = max(most, current)
    return most
