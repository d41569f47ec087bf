"""What the config specs of every plug-in (probe kinds, runbook step kinds, alert receivers) share.

A plug-in's spec lives beside its code (`bcd/probes/http.py` holds `HttpSpec` and `HttpProbe`); these are the
pieces they have in common. A leaf module, so that a plug-in never pulls the config package in."""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

from pydantic import AfterValidator, BaseModel, ConfigDict

FieldT = TypeVar("FieldT")

FORBID = ConfigDict(extra="forbid")
"""Config of the pydantic dataclasses: unknown keys are errors (type `unexpected_keyword_argument`)."""


class Model(BaseModel):
    """The base of the config's models (the once-per-probe objects are slotted dataclasses with FORBID)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_NO_ITEMS: dict[Any, Any] = {}
_NO_NAMES: list[Any] = []


def shared_empty(value: FieldT) -> FieldT:
    """An empty dict or list as the one shared empty dict or list; any other value as it is. The config is
    never mutated (code that changes it copies it first), which makes sharing them safe."""
    if isinstance(value, dict) and not value:
        return cast(FieldT, _NO_ITEMS)
    if isinstance(value, list) and not value:
        return cast(FieldT, _NO_NAMES)
    return value


SHARED_EMPTY = AfterValidator(shared_empty)
"""For a dict or list field that most configs leave empty, with `Field({}, validate_default=True)` (or `[]`):
every empty one is the same object, so 20,000 probes do not keep 40,000 empty dicts (64 bytes each) of their
own (pydantic copies a mutable default for each instance; validating the default swaps the copy out)."""


def check_regex(value: str | None) -> str | None:
    """A field validator: `value` must compile as a regular expression."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def absolute_argv(argv: list[str]) -> list[str]:
    """Commands run without a shell and without a PATH search: argv[0] must be an absolute path."""
    if not argv[0].startswith("/"):
        raise ValueError(f"argv[0] must be an absolute path, got {argv[0]!r}")
    return argv


def positive(value: float) -> float:
    """A field validator: `value` (a duration) must be more than zero."""
    if value <= 0:
        raise ValueError("must be positive")
    return value
