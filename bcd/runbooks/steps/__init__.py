"""Runbook step kinds, one module each behind the `StepKind` protocol, picked from one table."""

from __future__ import annotations

from bcd.runbooks.steps.approval import ApprovalKind
from bcd.runbooks.steps.base import StepContext, StepError, StepKind, StepOutcome
from bcd.runbooks.steps.command import CommandKind
from bcd.runbooks.steps.http import HttpKind
from bcd.runbooks.steps.mqtt_publish import MqttPublishKind
from bcd.runbooks.steps.sleep import SleepKind
from bcd.runbooks.steps.wait_healthy import WaitHealthyKind

REGISTRY: dict[str, StepKind] = {
    "http": HttpKind(),
    "command": CommandKind(),
    "mqtt_publish": MqttPublishKind(),
    "wait_healthy": WaitHealthyKind(),
    "sleep": SleepKind(),
    "approval": ApprovalKind(),
}

__all__ = ["REGISTRY", "StepContext", "StepError", "StepKind", "StepOutcome"]
