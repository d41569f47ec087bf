"""bcd.site_loss: a site is lost when every service probed there is down (by quorum in a cluster); the events
that say so and that it ended, and the plans they name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bcd.config import parse
from bcd.events import Event, EventKind, SiteLost, SiteRecovered
from bcd.health import SiteHealth
from bcd.model import SiteState
from bcd.policy import Quorum, Vote
from bcd.site_loss import SiteLoss, plans_for

CONFIG = """
sites: {dorset: {}, hampshire: {}}
services:
  directory:
    active: dorset
    sites:
      dorset: {probes: [{name: health, http: {url: "http://127.0.0.1:1/"}}]}
      hampshire: {probes: [{name: health, http: {url: "http://127.0.0.1:2/"}}]}
  sql:
    active: dorset
    sites:
      dorset: {probes: [{name: health, http: {url: "http://127.0.0.1:1/"}}]}
      hampshire: {probes: [{name: health, http: {url: "http://127.0.0.1:2/"}}]}
  archive:
    active: hampshire
    sites:
      hampshire: {probes: [{name: health, http: {url: "http://127.0.0.1:2/"}}]}
"""


class Emitted(list[tuple[Event, dict[str, Any]]]):
    """A RecordingSink for what SiteLoss emits."""

    def __call__(self, event: Event, **fields: Any) -> None:
        self.append((event, fields))


def health(service: str, site: str, state: SiteState, *, maintenance: bool = False) -> SiteHealth:
    return SiteHealth(service, site, state, maintenance_until=1e12 if maintenance else None)


def setup() -> tuple[SiteLoss, Emitted]:
    emitted = Emitted()
    loss = SiteLoss(emitted)
    table = {(name, site): health(name, site, SiteState.UP) for name in ("directory", "sql")
             for site in ("dorset", "hampshire")}
    loss.configure(parse(CONFIG), table)
    return loss, emitted


def test_every_service_down_there_loses_the_site_and_one_up_again_recovers_it() -> None:
    loss, emitted = setup()
    loss.update(health("directory", "dorset", SiteState.DOWN), 10.0, None)
    assert emitted == [] and loss.lost == {}
    loss.update(health("sql", "dorset", SiteState.DOWN), 11.0, None)
    event, fields = emitted[0]
    assert (event.kind, event.site, event.service, event.at) == (EventKind.SITE_LOST, "dorset", None, 11.0)
    assert event.data == SiteLost(("directory", "sql"), ())
    assert event.reason == "site dorset lost: every service probed there is down (directory, sql)"
    assert fields == {"services": ["directory", "sql"], "reason": event.reason}
    assert list(loss.lost) == ["dorset"]
    loss.confirm(12.0, None)  # nothing changed: nothing said again
    assert len(emitted) == 1

    loss.update(health("sql", "dorset", SiteState.UP), 40.0, None)
    event, _ = emitted[1]
    assert (event.kind, event.site, event.data) == (EventKind.SITE_RECOVERED, "dorset", SiteRecovered(
        ("directory", "sql"), 11.0))
    assert event.reason == "site dorset no longer lost after 29s: up again: sql"
    assert loss.lost == {}


def test_a_site_in_maintenance_is_not_lost() -> None:
    loss, emitted = setup()
    loss.update(health("directory", "dorset", SiteState.DOWN), 10.0, None)
    loss.update(health("sql", "dorset", SiteState.DOWN, maintenance=True), 11.0, None)
    assert emitted == []


def test_one_service_down_alone_in_its_site_is_not_a_site_lost() -> None:
    emitted = Emitted()
    loss = SiteLoss(emitted)
    loss.configure(parse(CONFIG.split("  sql:", maxsplit=1)[0]), {})  # directory alone
    loss.update(health("directory", "dorset", SiteState.DOWN), 5.0, None)
    assert emitted == [] and loss.lost == {}


def test_a_site_is_lost_with_all_of_its_services() -> None:
    loss, emitted = setup()
    loss.update(health("archive", "hampshire", SiteState.DOWN), 5.0, None)
    assert emitted == []  # directory and sql are probed in hampshire too, and up
    for name in ("directory", "sql"):
        loss.update(health(name, "hampshire", SiteState.DOWN), 6.0, None)
    assert [event.data for event, _ in emitted] == [SiteLost(("archive", "directory", "sql"), ())]


@dataclass
class FakeCluster:
    """A fake of the cluster link (etcd cannot run in a unit test): the vantages seeing each (service, site) down."""

    down: dict[tuple[str, str], int]

    def quorum(self, service: str, active: str) -> Quorum:
        votes = tuple(Vote(f"v{n}", SiteState.DOWN if n < self.down.get((service, active), 0) else SiteState.UP)
                      for n in range(3))
        return Quorum(True, votes, 2)


def test_in_a_cluster_each_service_needs_a_quorum_and_ticks_confirm() -> None:
    loss, emitted = setup()
    cluster = FakeCluster({("directory", "dorset"): 2, ("sql", "dorset"): 1})
    for name in ("directory", "sql"):
        loss.update(health(name, "dorset", SiteState.DOWN), 10.0, cluster)
    assert emitted == []  # in a cluster only a tick decides
    loss.confirm(10.5, cluster)
    assert emitted == []  # sql: 1 of 3 vantages, 2 needed
    cluster.down[("sql", "dorset")] = 2
    loss.confirm(11.0, cluster)
    assert [(event.kind, event.at) for event, _ in emitted] == [(EventKind.SITE_LOST, 11.0)]
    cluster.down[("sql", "dorset")] = 1
    loss.confirm(12.0, cluster)
    assert emitted[-1][0].kind is EventKind.SITE_RECOVERED
    assert emitted[-1][0].reason == "site dorset no longer lost after 1s: not confirmed by a quorum of vantages"


@dataclass
class Plan:
    from_site: str


def test_plans_are_read_when_the_config_has_them() -> None:
    class WithPlans:
        plans = {"evacuate-dorset": Plan("dorset"), "leave-hampshire": {"from": "hampshire"}, "b": Plan("dorset")}

    assert plans_for(WithPlans(), "dorset") == ("b", "evacuate-dorset")
    assert plans_for(WithPlans(), "hampshire") == ("leave-hampshire",)
    assert plans_for(parse(CONFIG), "dorset") == ()  # no `plans:` at all


def test_site_lost_names_the_plans() -> None:
    emitted = Emitted()
    loss = SiteLoss(emitted)

    class Config:
        services = parse(CONFIG).services
        plans = {"evacuate-dorset": Plan("dorset")}

    loss.configure(Config(), {})
    for name in ("directory", "sql"):
        loss.update(health(name, "dorset", SiteState.DOWN), 1.0, None)
    assert emitted[0][0].data == SiteLost(("directory", "sql"), ("evacuate-dorset",))
