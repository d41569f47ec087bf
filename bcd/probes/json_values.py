"""`json_values:` of an `http` probe: named numbers read from its JSON answer, carried as perfdata items.

`{lag: replication.lag_seconds}` reads `body["replication"]["lag_seconds"]` (a dotted path; a list is
indexed by a number, `members.0.lag`) and reports it as the item `lag` (no unit: used as it is). A value
that is missing or not a number is the item `lag=U`, and the probe's reason says why; the probe's result
is not changed by it (the answer came, the site serves: only what it measures is unknown).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from bcd.json_nesting import too_nested

MAX_NESTING = 64
Perfdata = tuple[tuple[str, str], ...]


def read(body: bytes, truncated: bool, paths: Mapping[str, str]) -> tuple[Perfdata, str]:
    """(items, problem): one item per name (its number, or `U`), and "" or what went wrong, in one line."""
    document, problem = _parse(body, truncated)
    items: list[tuple[str, str]] = []
    problems: list[str] = [problem] if problem else []
    for name, path in paths.items():
        value, why = _lookup(document, path) if not problem else (None, problem)
        items.append((name, "U" if value is None else repr(value)))
        if value is None and not problem:
            problems.append(f"{name}: {why} at {path}")
    return tuple(items), "; ".join(problems)


def _parse(body: bytes, truncated: bool) -> tuple[Any, str]:
    if truncated:
        return None, "json_values: body larger than max_body_bytes"
    if too_nested(body, MAX_NESTING):
        return None, f"json_values: JSON nested deeper than {MAX_NESTING}"
    try:
        return json.loads(body), ""
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"json_values: body is not JSON ({exc})"


def _lookup(document: Any, path: str) -> tuple[float | None, str]:
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None, "no value"
    if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
        return None, f"not a number ({json.dumps(node)[:40]})"
    return float(node), ""
