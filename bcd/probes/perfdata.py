"""Nagios perfdata, read: what a `command:` probe's plugin reported, as numbers for the API and the metrics.

`bcd.probes.command.parse_perfdata` splits a plugin's output into (label, text) items, and the observation
keeps them as they are (shared with the metrics, never copied; a probe without perfdata keeps the shared
empty tuple, so HTTP, TCP, DNS and MQTT probes cost nothing). They are read here when shown:

- on the probe's API entry as the plugin said them: value and unit, warn and crit ranges, min and max;
- as `bcd_probe_perfdata` in base units: `s`/`ms`/`us` → seconds; `B`/`KB`/`MB`/`GB`/`TB` → bytes, counted in
  1024s as the monitoring-plugins do (`KiB`… too); `%` → a ratio (50% → 0.5); `c` (a counter), no unit, and
  any other unit → the number as reported. A `U` (unknown) value, or one that is not a number, is left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

Perfdata = tuple[tuple[str, str], ...]

PERFDATA_HELP = ("A value reported by a command probe's plugin (Nagios perfdata), in base units: seconds for s/ms/us, "
        "bytes for B/KB/MB/GB/TB (1024-based), a ratio (0-1) for %, as reported for c and other units.")

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SCALE = {
    "s": 1.0, "ms": 1e-3, "us": 1e-6, "%": 0.01,
    "B": 1.0, "KB": 1024.0, "MB": 1024.0**2, "GB": 1024.0**3, "TB": 1024.0**4,
    "KiB": 1024.0, "MiB": 1024.0**2, "GiB": 1024.0**3, "TiB": 1024.0**4,
}


def _number(text: str) -> float | None:
    match = _NUMBER.fullmatch(text)
    return float(match.group()) if match else None


def _value(text: str) -> tuple[float | None, str]:
    """The number and unit of `value[UOM]` (None for `U` or what is not a number)."""
    match = _NUMBER.match(text)
    if match is None:
        return None, ""
    number = float(match.group())
    return (number if math.isfinite(number) else None), text[match.end():]


def unit(text: str) -> str:
    """The unit of one item's text (`value[UOM];…`): "" when it has none, or is not a number."""
    return _value(text.partition(";")[0])[1]


def base_value(text: str) -> float | None:
    """The value of one item's text (`value[UOM];…`) in base units (see the module docstring), or None."""
    number, unit = _value(text.partition(";")[0])
    return None if number is None else number * _SCALE.get(unit, 1.0)


def as_json(label: str, text: str) -> dict[str, Any]:
    """One item as the plugin said it: label, value (None for `U`), unit, warn, crit (ranges, as text), min,
    max (None when not given)."""
    fields = text.split(";")
    value, unit = _value(fields[0])
    rest = [*fields[1:5], "", "", "", ""][:4]
    return {"label": label, "value": value, "unit": unit, "warn": rest[0] or None, "crit": rest[1] or None,
            "min": _number(rest[2]), "max": _number(rest[3])}


def perfdata_entry(perfdata: Perfdata) -> dict[str, Any]:
    """`{"perfdata": [...]}` for the API entry of a probe that reported some, else `{}` (the entry of every
    other probe stays as it was)."""
    return {"perfdata": [as_json(label, text) for label, text in perfdata]} if perfdata else {}


def samples(perfdata: Perfdata) -> Iterator[tuple[str, float]]:
    """(label, value in base units) of each item with a number; a label given twice counts once (the first:
    a series must not appear twice in a scrape)."""
    seen: set[str] = set()
    for label, text in perfdata:
        value = base_value(text)
        if value is not None and label not in seen:
            seen.add(label)
            yield label, value
