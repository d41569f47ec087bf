"""The table of alert receivers. To add one, write `bcd/outputs/alerts/<name>.py` (its settings model, the
`Target` that delivers to it, and `KIND = ReceiverKind(...)`) and list its KIND here: its key under `alerts:`
in the config and the dispatch follow."""

from __future__ import annotations

from typing import Any

from bcd.outputs.alerts import alertmanager, webhook
from bcd.outputs.alerts.delivery import ReceiverKind

RECEIVERS: tuple[ReceiverKind[Any], ...] = (
    alertmanager.KIND,
    webhook.KIND,
)
