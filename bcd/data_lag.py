"""How far each site's data trails: its `data_lag:` names one measured value of one of its probes.

A perfdata label of a `command` probe, or a `json_values` name of an `http` probe: both arrive as the
observation's perfdata, read here in base units (`bcd.probes.perfdata`), into a `bcd.rpo.Lag` that the
policy's `rpo_exceeded` guard and the `bcd_site_data_lag_seconds` metric use. A lag counts for
`STALE_INTERVALS` intervals of its probe; after that it is unknown (see `bcd.rpo`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bcd.model import Observation, ProbeKey
from bcd.probes.perfdata import base_value, unit
from bcd.rpo import Lag

if TYPE_CHECKING:
    from bcd.config import Config

Lookup = Callable[[ProbeKey], Observation | None]
STALE_INTERVALS = 2  # a lag older than this many intervals of its probe is unknown
TIME_UNITS = frozenset({"", "s", "ms", "us"})  # a lag is a time: a byte count or a ratio is no lag in seconds


def lags(config: Config, service: str, last: Lookup) -> dict[str, Lag]:
    """The lag of each site of `service` that names a `data_lag`, from the last observation of its probe
    (`last(key)`: None when it has not run)."""
    found: dict[str, Lag] = {}
    for site, site_config in config.services[service].sites.items():
        ref = site_config.data_lag
        if ref is None:
            continue
        probe = next(probe for probe in site_config.probes if probe.name == ref.probe)
        lag = Lag(f"probe {ref.probe}, value {ref.value}", STALE_INTERVALS * config.timing(service, probe).interval)
        obs = last(ProbeKey(service, site, ref.probe))
        found[site] = lag if obs is None else measured(lag, obs, ref.value)
    return found


def snapshot_fields(config: Config, service: str, last: Lookup) -> dict[str, Any]:
    """`rpo` and `lags` for the policy's snapshot; nothing for a service none of whose sites measures a lag
    (most of a large estate: no objectives to work out there)."""
    found = lags(config, service, last)
    return {"rpo": config.objectives(service).rpo, "lags": found} if found else {}


def measured(lag: Lag, obs: Observation, name: str) -> Lag:
    """`lag` with the value `name` of this observation (perfdata, in base units), or why it has none."""
    text = next((text for label, text in obs.perfdata if label == name), None)
    if text is None:
        return Lag(lag.source, lag.max_age, missing=f"not reported ({obs.result}: {obs.reason})")
    value = base_value(text)
    if value is not None and unit(text) in TIME_UNITS:
        return Lag(lag.source, lag.max_age, value, obs.at)
    said = "no number" if value is None else f"not a time: {text.partition(';')[0]}"
    why = f"{said} ({obs.result}: {obs.reason})"
    return Lag(lag.source, lag.max_age, missing=why)
