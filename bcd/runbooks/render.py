"""Templates in step inputs, and masking of secrets before inputs are journaled or shown."""

from __future__ import annotations

import re
import string
from typing import Any

MASK = "***"
SECRET_KEYS = re.compile(r"authorization|token|secret|password|passwd|api[-_]?key|cookie", re.IGNORECASE)


class _Variables(dict[str, str]):
    def __missing__(self, key: str) -> str:  # config validation makes this unreachable; be safe anyway
        return "{" + key + "}"


def render(value: Any, variables: dict[str, str]) -> Any:
    """`value` with `{name}` templates filled in every string (dict keys stay as they are)."""
    if isinstance(value, str):
        return string.Formatter().vformat(value, (), _Variables(variables))
    if isinstance(value, dict):
        return {key: render(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, variables) for item in value]
    return value


def mask(value: Any, secrets: frozenset[str], key: str = "") -> Any:
    """A copy safe to journal and show: values under secret-looking keys and known secret strings hidden."""
    if isinstance(value, dict):
        return {k: mask(item, secrets, str(k)) for k, item in value.items()}
    if isinstance(value, list):
        return [mask(item, secrets, key) for item in value]
    if isinstance(value, str):
        if key and SECRET_KEYS.search(key):
            return MASK
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, MASK)
    return value
