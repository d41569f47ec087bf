"""`bcd_site_data_lag_seconds{service,site}`: how far each site's data trails, for the sites that name a
`data_lag:` (`bcd.data_lag`). A site whose lag is unknown (not measured within two probe intervals) has no
series: a stale number on a dashboard would read as a fresh one."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bcd import data_lag
from bcd.model import Observation, ProbeKey
from bcd.view import EstateView


class DataLagCollector(Collector):
    """Reads the lags from the estate view at scrape time; the services that measure one are found once
    per config (most of a large estate measures none)."""

    def __init__(self, estate: EstateView, clock: Callable[[], float] = time.time) -> None:
        self._estate = estate
        self._clock = clock
        self._config: object = None
        self._services: list[str] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        config = self._estate.config
        if config is not self._config:
            self._config = config
            self._services = [name for name, service in config.services.items()
                              if any(site.data_lag is not None for site in service.sites.values())]
        family = GaugeMetricFamily("bcd_site_data_lag_seconds", "How far the site's data trails (its data_lag "
                                   "value), while measured within two probe intervals.", labels=["service", "site"])
        now = self._clock()

        def last(key: ProbeKey) -> Observation | None:  # on this config, even if a reload comes meanwhile
            probes = [probe for probe in config.services[key.service].sites[key.site].probes
                      if probe.name == key.probe]
            return next(self._estate.last_observations(key.service, key.site, probes), None)

        for service in self._services:
            for site, lag in data_lag.lags(config, service, last).items():
                value = lag.fresh(now)
                if value is not None:
                    family.add_metric([service, site], value)
        yield family
