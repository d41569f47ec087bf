"""`dns:` probe: ask one server for one name and type; every `expect` record must be in the answer.

The probe itself is in `dns_query.py`, imported when the first `dns:` probe is built: a daemon (or a
`check-config`) without one never loads dnspython."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from pydantic.dataclasses import dataclass

from bcd.lazy import lazy_import
from bcd.probes.base import Probe, ProbeContext, ProbeKind
from bcd.specs import FORBID, SHARED_EMPTY

_query = lazy_import("bcd.probes.dns_query")


@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class DnsSpec:
    """`dns:` probe: resolve a name against a given server."""

    name: str
    server: str = Field(description="IP address of the DNS server")
    port: int = Field(53, ge=1, le=65535)
    type: Literal["A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "PTR", "SOA"] = "A"
    expect: Annotated[list[str], SHARED_EMPTY] = Field(
        [], validate_default=True, description="records that must all be present in the answer")
    transport: Literal["udp", "tcp"] = "udp"


def build(spec: DnsSpec, timeout: float, ctx: ProbeContext) -> Probe:
    """A `dns_query.DnsProbe` (see its docstring)."""
    probe: Probe = _query.DnsProbe(spec, timeout, ctx)
    return probe


KIND = ProbeKind("dns", DnsSpec, build)
