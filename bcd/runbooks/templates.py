"""Strings in runbook steps may use the templates `{service}`, `{from_site}`, `{to_site}`, `{run_id}`, `{trigger}`
(and `{fence_token}`; `{plan}` and `{plan_run}` for a recovery plan's move, empty otherwise); anything else
in braces is a config error. `{{` and `}}` are literal braces.

The bases of every step spec: `Spec` (frozen, unknown keys rejected) and `Templated` (templates checked)."""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Any

from pydantic import ValidationInfo, model_validator

from bcd.specs import Model

TEMPLATE_NAMES = frozenset({"service", "from_site", "to_site", "run_id", "trigger", "fence_token", "plan", "plan_run"})
RENDERED = {"rendered": True}
"""Validation context of a spec whose templates are already filled in: braces left in it are literal."""

Spec = Model
"""The base of step specs without templates (and of the runbook models)."""


def template_fields(text: str) -> Iterator[str]:
    """Names used as `{name}` in a template string; ValueError if the braces are malformed."""
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"invalid template {{{name}}}: use one of {', '.join(sorted(TEMPLATE_NAMES))}")
        yield name


def check_templates(value: Any) -> None:
    """Raise ValueError naming the first unknown template in any string inside `value`."""
    if isinstance(value, str):
        try:
            unknown = [name for name in template_fields(value) if name not in TEMPLATE_NAMES]
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if unknown:
            raise ValueError(
                f"unknown template {{{unknown[0]}}}; known: {', '.join('{' + n + '}' for n in sorted(TEMPLATE_NAMES))}"
            )
    elif isinstance(value, dict):
        for item in value.values():
            check_templates(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_templates(item)


class Templated(Spec):
    @model_validator(mode="before")
    @classmethod
    def _templates(cls, data: Any, info: ValidationInfo) -> Any:
        if not (info.context or {}).get("rendered"):
            check_templates(data)
        return data
