"""The table of probe kinds. To add one, write `bcd/probes/<kind>.py` (its spec, its probe and a
`KIND = ProbeKind(...)` line) and list its KIND here: the config's `<kind>:` key and the dispatch follow."""

from __future__ import annotations

from typing import Any, Protocol

from bcd.probes import command, dns, http, mqtt, tcp
from bcd.probes.base import Probe, ProbeContext, ProbeKind, ProbeSetupError

KINDS: tuple[ProbeKind[Any], ...] = (
    http.KIND,
    tcp.KIND,
    dns.KIND,
    command.KIND,
    mqtt.KIND,
)
BY_NAME = {kind.name: kind for kind in KINDS}

__all__ = ["BY_NAME", "KINDS", "Probe", "ProbeContext", "ProbeKind", "ProbeSetupError", "build_probe"]


class Configured(Protocol):
    """A configured probe (`bcd.config.ProbeConfig`): its kind's name and the spec given under it."""

    @property
    def kind(self) -> str: ...

    @property
    def spec(self) -> Any: ...


def build_probe(config: Configured, timeout: float, ctx: ProbeContext) -> Probe:
    """The probe for one configured check, to be built once and `run()` every interval.

    Raises ProbeSetupError when the spec names files that cannot be loaded (TLS CA, client certificate).
    """
    return BY_NAME[config.kind].build(config.spec, timeout, ctx)
