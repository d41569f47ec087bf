"""The MQTT output's figures for /metrics (`bcd_mqtt_*`), owned by the output and its command reader."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class MqttStats:
    """`dropped` counts events lost before they were published: pushed out of the full buffer, or dropped by
    the bus before they reached it (counted as the output next takes from the bus)."""

    enabled: bool = False  # `mqtt:` is configured: the families are rendered only then
    connected: bool = False
    published: int = 0
    dropped: int = 0
    dropped_replies: int = 0
    commands: Counter[str] = field(default_factory=Counter)
