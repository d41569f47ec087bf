"""Durations in the config: `500ms`, `10s`, `2m`, `1h`, `14d` (or a bare number of seconds)."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^\d+(\.\d+)?(ms|s|m|h|d)$"  # the canonical form, for schemas
MAINTENANCE = (1.0, 366 * 86400.0)  # shortest and longest maintenance: a longer one is a mistake, far ones overflow
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")


def parse_duration(value: Any) -> float:
    """Return seconds; raise ValueError with a plain message for anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 10s, 2m, 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _PATTERN.match(value)):
        amount, unit = float(match.group(1)), match.group(2)
        # dividing keeps 13ms == 0.013 (13 * 0.001 is 0.013000000000000001)
        seconds = amount / 1000 if unit == "ms" else amount * _UNITS[unit]
    else:
        raise ValueError(f"expected a duration such as 500ms, 10s, 2m, 1h; got {value!r}")
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite; got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_between(value: Any, low: float, high: float) -> float:
    """`parse_duration`, then refuse a duration shorter than `low` or longer than `high` seconds."""
    seconds = parse_duration(value)
    if seconds < low:
        raise ValueError(f"must be at least {format_duration(low)}; got {value!r}")
    if seconds > high:
        raise ValueError(f"must be at most {format_duration(high)}; got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
