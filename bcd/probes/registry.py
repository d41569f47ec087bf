"""The table of probe kinds: the config's kind key → the class that runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bcd.probes.base import Probe, ProbeContext, ProbeFactory, ProbeSetupError
from bcd.probes.command import CommandProbe
from bcd.probes.dns import DnsProbe
from bcd.probes.http import HttpProbe
from bcd.probes.mqtt import MqttProbe
from bcd.probes.tcp import TcpProbe

if TYPE_CHECKING:  # bcd.config imports bcd.probes.specs, which runs this package first
    from bcd.config import ProbeConfig

REGISTRY: dict[str, ProbeFactory] = {
    "http": HttpProbe,
    "tcp": TcpProbe,
    "dns": DnsProbe,
    "command": CommandProbe,
    "mqtt": MqttProbe,
}

__all__ = ["REGISTRY", "Probe", "ProbeContext", "ProbeFactory", "ProbeSetupError", "build_probe"]


def build_probe(config: ProbeConfig, timeout: float, ctx: ProbeContext) -> Probe:
    """The probe for one configured check, to be built once and `run()` every interval.

    Raises ProbeSetupError when the spec names files that cannot be loaded (TLS CA, client certificate).
    """
    return REGISTRY[config.kind](config.spec, timeout, ctx)
