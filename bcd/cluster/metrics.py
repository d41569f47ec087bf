"""The cluster's Prometheus families, built from the link at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bcd.cluster.executor import ClusterLink
from bcd.model import SiteState


class ClusterCollector(Collector):
    """bcd_cluster_members, bcd_cluster_coordination_up, bcd_vantage_view_age_seconds, bcd_site_votes,
    bcd_lock_held."""

    def __init__(self, link: ClusterLink) -> None:
        self._link = link

    def collect(self) -> Iterable[GaugeMetricFamily]:
        link = self._link
        peers = link.peers()
        members = GaugeMetricFamily("bcd_cluster_members", "Live vantages whose view this instance sees.",
                                    labels=["vantage"])
        ages = GaugeMetricFamily("bcd_vantage_view_age_seconds", "Seconds since each vantage's view was written.",
                                 labels=["vantage"])
        if not link.suspect:
            members.add_metric([link.vantage], 1)
            ages.add_metric([link.vantage], 0.0)
        for vantage, peer in sorted(peers.items()):
            members.add_metric([vantage], 1)
            ages.add_metric([vantage], peer.age)
        yield members
        yield GaugeMetricFamily("bcd_cluster_coordination_up", "Whether coordination (etcd and our lease) is up.",
                                value=int(link.available))
        yield ages
        votes = GaugeMetricFamily("bcd_site_votes", "Live vantages seeing the site in each state.",
                                  labels=["service", "site", "state"])
        held = GaugeMetricFamily("bcd_lock_held", "Whether this instance holds the service's run lock.",
                                 labels=["service"])
        engine = link.engine
        for name, service in engine.config.services.items():
            for site in service.sites:
                counts = dict.fromkeys(SiteState, 0)
                for vote in link.votes(name, site):
                    counts[vote.state] += 1
                for state, count in counts.items():
                    votes.add_metric([name, site, str(state)], count)
            held.add_metric([name], int(link.holds(name)))
        yield votes
        yield held
