"""The cross checks of a config that has field errors, so that one run of `check-config` reports both.

`Config._cross_checks` runs only once every field is valid. When some are not, the checks run again on a copy
of the data without what failed: an unknown key is dropped (it means nothing), a service whose active site is
not one of its sites is checked as if its first site were active, any other invalid named entry (a service,
runbook, plan, site or maintenance window) is left out whole. What the checks then say about the
entries left out (e.g. "unknown service 'x'" for a service whose own error is already reported) would be a
cascade, not news, and is dropped. An invalid setting outside the named entries (say `defaults.interval`)
changes what every check would see: the cross checks wait for it to be fixed.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import ValidationError

from bcd.config.models import Config

NAMED = ("services", "runbooks", "plans", "sites", "maintenance")
UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")
Problem = tuple[tuple[str | int, ...], str]


def checks_on_what_validated(data: dict[str, Any], exc: ValidationError, up_to: int) -> list[Problem]:
    """The problems of Config's cross checks on the parts of `data` that validated (see the module's doc); none
    past `up_to` field errors (only the first ones are printed: validating twice would double the wait)."""
    if exc.error_count() > up_to:
        return []
    pruned = copy.deepcopy(data)
    left_out: set[str] = set()
    for error in exc.errors():
        loc = tuple(error["loc"])
        if error["type"] in UNKNOWN_KEY:
            _drop(pruned, loc)
        elif _active_not_a_site(error) and _serve_from_first_site(pruned, loc):
            pass  # the service's other problems are still worth reporting
        elif len(loc) >= 2 and loc[0] in NAMED and isinstance(pruned.get(loc[0]), dict):
            pruned[loc[0]].pop(loc[1], None)
            left_out.add(repr(loc[1]))
        else:
            return []
    try:
        Config.model_validate(pruned)
    except ValidationError as again:
        return [(tuple(loc), message) for error in again.errors() if error["type"] == "cross_check" and not error["loc"]
                for loc, message in error["ctx"]["problems"]
                if not any(name in message for name in left_out)]
    return []


def _active_not_a_site(error: Any) -> bool:
    return error["type"] == "cross_check" and [loc for loc, _ in error["ctx"]["problems"]] == [("active",)]


def _serve_from_first_site(data: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    """For the cross checks only: a service whose `active` is not one of its sites (already reported) is
    checked as if its first site were active."""
    service = data.get("services", {}).get(loc[1]) if len(loc) == 2 and loc[0] == "services" else None
    if not isinstance(service, dict) or not isinstance(service.get("sites"), dict) or not service["sites"]:
        return False
    service["active"] = next(iter(service["sites"]))
    return True


def _drop(data: Any, loc: tuple[Any, ...]) -> None:
    for part in loc[:-1]:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return
    if isinstance(data, dict):
        data.pop(loc[-1], None)
