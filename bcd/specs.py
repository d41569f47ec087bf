"""What the config specs of every plug-in (probe kinds, runbook step kinds, alert receivers) share.

A plug-in's spec lives beside its code (`bcd/probes/http.py` holds `HttpSpec` and `HttpProbe`); these are the
pieces they have in common. A leaf module, so that a plug-in never pulls the config package in."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

FORBID = ConfigDict(extra="forbid")
"""Config of the pydantic dataclasses: unknown keys are errors (type `unexpected_keyword_argument`)."""


class Model(BaseModel):
    """The base of the config's models (the once-per-probe objects are slotted dataclasses with FORBID)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
