"""The table of runbook step kinds. To add one, write `bcd/runbooks/steps/<kind>.py` (its spec, the class that
runs it and a `KIND = StepPlugin(...)` line) and list its KIND here: the `<kind>:` key of a step and the
dispatch follow."""

from __future__ import annotations

from typing import Any

from bcd.runbooks.steps import approval, command, http, mqtt_publish, sleep, wait_healthy
from bcd.runbooks.steps.base import StepPlugin

KINDS: tuple[StepPlugin[Any], ...] = (
    http.KIND,
    command.KIND,
    mqtt_publish.KIND,
    wait_healthy.KIND,
    sleep.KIND,
    approval.KIND,
)
BY_NAME = {kind.name: kind for kind in KINDS}
