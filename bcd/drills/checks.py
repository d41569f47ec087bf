"""PURE drill preconditions: from a snapshot of one service (`Facts`), why a drill may not start now, and, while
one holds on the standby, why it must stop. No I/O, no clock: the caller passes what it read and `now`.

Before the start, in order: the config lets the service be drilled that way (`unfit`: its runbooks; for a round
trip a standby and a failback that is not automatic, which would move it home before the drill does), no drill
of it is under way, no run is in progress, no failed or interrupted run waits for an acknowledgement, no site is
in maintenance or flapping, every site is `up`, the service itself is `ok`, and `now` is outside the blackouts of
the drills configured for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bcd.health import SiteHealth
from bcd.model import ServiceStatus, SiteState


@dataclass(frozen=True, slots=True)
class Facts:
    """What the checks look at, read from the estate view at one moment."""

    service: str
    kind: str
    status: ServiceStatus
    active: str
    sites: Mapping[str, SiteHealth]
    unfit: str | None = None  # why the config cannot drill it this way (bcd.config.drills.unfit)
    drilling: str | None = None  # the drill of this service under way
    running: int | None = None  # the run in progress
    unacknowledged: int | None = None  # a failed or interrupted run nobody acknowledged
    blackout: str | None = None  # the blackout `now` falls in ("payroll-quarterly: 2026-12-20..2027-01-04")


def refusal(facts: Facts) -> str | None:
    """Why a drill of `facts.service` may not start now (one sentence), or None."""
    name = facts.service
    if facts.unfit is not None:
        return f"{name}: {facts.unfit}"
    if facts.drilling is not None:
        return f"drill {facts.drilling} of {name} is under way"
    if facts.running is not None:
        return f"run {facts.running} of {name} is in progress"
    if facts.unacknowledged is not None:
        return f"run {facts.unacknowledged} of {name} needs acknowledging first (bcd ack)"
    for site, health in facts.sites.items():
        if health.maintenance_until is not None:
            return f"site {site} of {name} is in maintenance"
        if health.flapping:
            return f"site {site} of {name} is flapping"
    for site, health in facts.sites.items():
        if health.state is not SiteState.UP:
            return f"site {site} of {name} is {health.state}, not up" + (f" ({health.reason})" if health.reason else "")
    if facts.status is not ServiceStatus.OK:
        return f"{name} is {facts.status}, not ok"
    if facts.blackout is not None:
        return f"{name} is in a drill blackout ({facts.blackout})"
    return None


def degraded(sites: Mapping[str, SiteHealth], origin: str, target: str) -> str | None:
    """Why a drill holding on `target` must stop (the target, or the origin it returns to, is no longer `up`),
    or None."""
    for role, site in (("target", target), ("origin", origin)):
        health = sites.get(site)
        if health is None:
            return f"{role} {site} is no longer configured"
        if health.state is not SiteState.UP:
            return f"{role} {site} is {health.state}" + (f" ({health.reason})" if health.reason else "")
    return None


def unwell(sites: Mapping[str, SiteHealth]) -> str | None:
    """Why a runbook drill must stop (a site of its service is no longer `up`), or None."""
    for site, health in sites.items():
        if health.state is not SiteState.UP:
            return f"site {site} is {health.state}" + (f" ({health.reason})" if health.reason else "")
    return None
