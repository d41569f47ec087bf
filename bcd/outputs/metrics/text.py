"""The hand-rendered families: every family with a series per probe, site or service.

A large estate has tens of thousands of these series. They are rendered directly in the text exposition
format from plain counters, through %-templates and label strings escaped once and kept: prometheus-client's
generic sample path costs several microseconds a line, which at 20,000 probes blows the scrape budget (the
bench's scrape figures). Everything else goes through prometheus-client (`bcd.outputs.metrics.families`).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from bcd.health import SiteHealth
from bcd.model import Observation, ProbeKey, Result, ServiceStatus, SiteState
from bcd.probes.perfdata import PERFDATA_HELP, Perfdata, samples
from bcd.view import EstateView, ServiceState

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RESULTS = (Result.OK, Result.WARN, Result.FAIL)
SITE_STATES = tuple(SiteState)
SERVICE_STATUSES = tuple(ServiceStatus)
CHUNK = 250  # items per piece of a scrape: a piece renders in a few ms, the first scrape (labels made) too
T = TypeVar("T")


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**pairs: str) -> str:
    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs.items())


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _lines(name: str, suffixes: Iterable[str], value: str = "%d") -> str:
    """A %-template shared by every series of a family: each line takes the series' label set (`%s`), then
    its value (rendering fills the template per series instead of keeping each series' text)."""
    return "".join(f"{name}{{%s{suffix}}} {value}\n" for suffix in suffixes)


_BOUNDS = [f',le="{bound!r}"' for bound in DURATION_BUCKETS] + [',le="+Inf"']
HISTOGRAM_LINES = (
    _lines("bcd_probe_duration_seconds_bucket", _BOUNDS)
    + _lines("bcd_probe_duration_seconds_sum", [""], "%r")
    + _lines("bcd_probe_duration_seconds_count", [""])
)
HISTOGRAM_ARGS = 2 * (len(_BOUNDS) + 2)  # a label set and a value per line
RESULTS_LINES = _lines("bcd_probe_results_total", [f',result="{result}"' for result in RESULTS])


def _one_hot(name: str, label: str, values: Iterable[str]) -> dict[str, str]:
    """For each value, the lines of a family that shows 1 for that value and 0 for the others."""
    values = list(values)
    return {
        value: "".join(f'{name}{{%s,{label}="{other}"}} {int(other == value)}\n' for other in values)
        for value in values
    }


SITE_HEALTH_LINES = _one_hot("bcd_site_health", "state", SITE_STATES)
SERVICE_STATUS_LINES = _one_hot("bcd_service_status", "status", SERVICE_STATUSES)


@dataclass(slots=True)
class ProbeStat:
    """One probe's accumulators: plain numbers, rendered through the shared templates at scrape time."""

    label: str
    cumulative: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))  # last: +Inf
    total: float = 0.0
    ok: int = 0  # runs by result: three fields, not a list of three (80 bytes a probe more)
    warn: int = 0
    fail: int = 0
    success: int = 0
    cert_expiry: float | None = None

    def histogram(self, args: list[object]) -> str:
        """The histogram's lines; `args` is a scratch list of HISTOGRAM_ARGS items, reused across probes."""
        cumulative = self.cumulative
        args[0::2] = (self.label,) * (HISTOGRAM_ARGS // 2)
        args[1:2 * len(cumulative):2] = cumulative
        args[-3], args[-1] = self.total, cumulative[-1]
        return HISTOGRAM_LINES % tuple(args)

    def results_lines(self) -> str:
        label = self.label
        return RESULTS_LINES % (label, self.ok, label, self.warn, label, self.fail)


def _count(cumulative: list[int], start: int) -> None:
    """One more observation in bucket `start` (and so in every bucket above it). Kept cumulative, which is
    cheaper here than at every scrape; neighbours with equal counts keep sharing one int object (a count
    above 256 is an object of its own: 12 per probe would be 8 MB at 20,000 probes)."""
    old: int | None = None
    new = 0
    for index in range(start, len(cumulative)):
        value = cumulative[index]
        if value is not old:
            old, new = value, value + 1
        cumulative[index] = new


class ProbeMetrics:
    """Per-probe accumulators, fed with every observation (the hot path: keep it cheap)."""

    def __init__(self) -> None:
        self.stats: dict[ProbeKey, ProbeStat] = {}
        # the last run's perfdata, only for probes whose last run reported some (command probes): no field
        # on ProbeStat, so the 20,000 HTTP probes of a large estate do not pay for it
        self.perfdata: dict[ProbeKey, Perfdata] = {}

    def record(self, obs: Observation) -> None:
        stat = self.stats.get(obs.key)
        if stat is None:
            key = obs.key
            stat = self.stats[key] = ProbeStat(labels(service=key.service, site=key.site, probe=key.probe))
        _count(stat.cumulative, bisect.bisect_left(DURATION_BUCKETS, obs.latency))
        stat.total += obs.latency
        result = obs.result
        if result is Result.OK:
            stat.ok += 1
            stat.success = 1
        elif result is Result.FAIL:
            stat.fail += 1
            stat.success = 0
        else:
            stat.warn += 1
            stat.success = 1
        if obs.cert_expiry is not None:
            stat.cert_expiry = obs.cert_expiry
        if obs.perfdata:
            self.perfdata[obs.key] = obs.perfdata
        elif self.perfdata:
            self.perfdata.pop(obs.key, None)

    def retain(self, keys: set[ProbeKey]) -> None:
        """Forget probes removed by a reload."""
        for key in set(self.stats) - keys:
            del self.stats[key]
        for key in set(self.perfdata) - keys:
            del self.perfdata[key]


def _family(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def chunks(items: list[T], size: int = CHUNK) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def render_probes(metrics: ProbeMetrics) -> Iterator[str]:
    stats = list(metrics.stats.values())
    yield _family("bcd_probe_success", "gauge", "Whether the last run of the probe passed (warn counts as passed).")
    for part in chunks(stats):
        yield "".join([f"bcd_probe_success{{{s.label}}} {s.success}\n" for s in part])
    yield _family("bcd_probe_results_total", "counter", "Probe runs by result.")
    for part in chunks(stats):
        yield "".join([s.results_lines() for s in part])
    yield _family("bcd_probe_duration_seconds", "histogram", "Duration of probe runs.")
    args: list[object] = [None] * HISTOGRAM_ARGS
    for part in chunks(stats):
        yield "".join([s.histogram(args) for s in part])
    yield _family(
        "bcd_probe_cert_expiry_timestamp_seconds", "gauge", "Earliest expiry of the certificates a TLS probe saw."
    )
    yield "".join(
        f"bcd_probe_cert_expiry_timestamp_seconds{{{s.label}}} {_fmt(s.cert_expiry)}\n"
        for s in stats
        if s.cert_expiry is not None
    )
    yield _family("bcd_probe_perfdata", "gauge", PERFDATA_HELP)
    yield "".join([
        f'bcd_probe_perfdata{{{stat.label},label="{escape(label)}"}} {_fmt(value)}\n'
        for key, items in list(metrics.perfdata.items()) if (stat := metrics.stats.get(key)) is not None
        for label, value in samples(items)
    ])


class Labels:
    """The escaped label sets of every site and service, kept between scrapes (about 3 MB at 20,000 sites;
    escaping them afresh was the largest cost of a scrape after the probe histograms). When the config
    changes, removed ones are dropped (into new dicts: a scrape in progress keeps the ones it took) and only
    new ones are made."""

    def __init__(self) -> None:
        self._config: object = None
        self.sites: dict[tuple[str, str], str] = {}
        self.services: dict[str, str] = {}
        self._monitored: object = None  # the mapping `monitored` was made from
        self.monitored: dict[str, str] = {}

    def follow(self, estate: EstateView) -> None:
        """Make sure every site and service of the estate has its label set."""
        sites, services = estate.sites, estate.services
        if estate.config is not self._config:
            self._config = estate.config
            if self.sites.keys() - sites.keys():
                self.sites = {key: label for key, label in self.sites.items() if key in sites}
            if self.services.keys() - services.keys():
                self.services = {name: label for name, label in self.services.items() if name in services}
        if len(self.sites) != len(sites):
            for key in sites.keys() - self.sites.keys():  # the estate's own key: not a new tuple for each site
                self.sites[key] = labels(service=key[0], site=key[1])
        if len(self.services) != len(services):
            for name in services.keys() - self.services.keys():
                self.services[name] = labels(service=name)

    def monitored_lines(self, monitored: Mapping[str, float]) -> dict[str, str]:
        """The `bcd_service_monitored_since_timestamp_seconds` line of each service in `monitored`, made again only
        when that mapping is replaced (a config load that names a new service): otherwise the same every scrape."""
        if monitored is not self._monitored:
            self.monitored = {name: f"bcd_service_monitored_since_timestamp_seconds"
                              f"{{{self.services.get(name) or labels(service=name)}}} {_fmt(at)}\n"
                              for name, at in monitored.items()}
            self._monitored = monitored
        return self.monitored


def render_estate(estate: EstateView, names: Labels) -> Iterator[str]:
    """The site and service families. The estate's tables are copied here at once (cheap copies of their
    items, which are immutable), so that the pieces agree with each other while the engine, or a reload,
    changes the tables between them; each piece then renders CHUNK items, never the whole estate at once."""
    sites = list(estate.sites.items())
    services = list(estate.services.items())
    views = dict(services)
    transitions = list(estate.transitions.items())
    lost = [(site, int(site in estate.lost_sites)) for site in estate.config.sites]
    monitored = names.monitored_lines(estate.monitored_since())
    return itertools.chain(_render_sites(sites, transitions, names.sites),
                           _render_services(services, sites, views, names), _render_lost(lost),
                           _render_monitored(services, monitored))


def _render_lost(lost: list[tuple[str, int]]) -> Iterator[str]:
    yield _family("bcd_site_lost", "gauge", "Whether a site is lost: every service probed there is down (1).")
    yield "".join([f"bcd_site_lost{{{labels(site=site)}}} {value}\n" for site, value in lost])


def _render_sites(sites: list[tuple[tuple[str, str], SiteHealth]],
                  transitions: list[tuple[tuple[str, str, str, str], int]],
                  label: dict[tuple[str, str], str]) -> Iterator[str]:
    yield _family("bcd_site_health", "gauge", "Health state of a service in a site (1 for the current state).")
    width = len(SITE_STATES)
    for part in chunks(sites):
        yield "".join([SITE_HEALTH_LINES[site.state] % ((label[key],) * width) for key, site in part])
    yield _family("bcd_site_up", "gauge", "Whether the service is up in the site.")
    for part in chunks(sites):
        yield "".join([f"bcd_site_up{{{label[key]}}} {int(site.state is SiteState.UP)}\n" for key, site in part])
    yield _family("bcd_health_transitions_total", "counter", "Health state transitions of a service in a site.")
    for counts in chunks(transitions):
        yield "".join([
            f'bcd_health_transitions_total{{{label.get(k[:2]) or labels(service=k[0], site=k[1])},'
            f'from="{k[2]}",to="{k[3]}"}} {n}\n'
            for k, n in counts
        ])


def _render_services(services: list[tuple[str, ServiceState]], sites: list[tuple[tuple[str, str], SiteHealth]],
                     views: dict[str, ServiceState], names: Labels) -> Iterator[str]:
    yield _family("bcd_service_status", "gauge", "Status of a service (1 for the current status).")
    width, label = len(SERVICE_STATUSES), names.services
    for part in chunks(services):
        yield "".join([SERVICE_STATUS_LINES[view.status] % ((label[name],) * width) for name, view in part])
    yield _family("bcd_service_active_site", "gauge", "Which site is active for a service (1 for the active one).")
    site_label = names.sites
    for lines in chunks(sites):
        yield "".join([
            f"bcd_service_active_site{{{site_label[key]}}} {int(views[key[0]].active == key[1])}\n"
            for key, _ in lines if key[0] in views
        ])


def _render_monitored(services: list[tuple[str, ServiceState]], lines: dict[str, str]) -> Iterator[str]:
    yield _family("bcd_service_monitored_since_timestamp_seconds", "gauge", "When bcd first monitored the service, "
                  "as its journal keeps it (BcdDrillOverdue counts a service never drilled successfully from then).")
    for part in chunks(services):
        yield "".join([lines[name] for name, _ in part if name in lines])


def render_runner(estate: EstateView, names: Labels) -> Iterator[str]:
    """The per-service runbook families (rendered by hand: one line per service, like the estate); none
    before the runner starts."""
    running = estate.running()
    if running is None:
        return iter(())
    return _render_runner(list(estate.services.items()), running, names.services)


def _render_runner(services: list[tuple[str, ServiceState]], running: set[str],
                   label: dict[str, str]) -> Iterator[str]:
    yield _family("bcd_runbook_running", "gauge", "Whether a runbook of the service is running.")
    for part in chunks(services):
        yield "".join([f"bcd_runbook_running{{{label[name]}}} {int(name in running)}\n" for name, _ in part])
    yield _family("bcd_service_blocked", "gauge", "1 with the guard's reason while a service is blocked.")
    for part in chunks(services):
        yield "".join([_blocked_line(label[name], _guard(view)) for name, view in part])


def _blocked_line(label: str, guard: str | None) -> str:
    return f'bcd_service_blocked{{{label},reason="{guard or "none"}"}} {int(guard is not None)}\n'


def _guard(view: ServiceState) -> str | None:
    return str(view.guard) if view.status is ServiceStatus.BLOCKED and view.guard is not None else None
