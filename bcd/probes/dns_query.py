"""The `dns:` probe itself (`dns.py` loads it on first use: dnspython is some fifty modules)."""

from __future__ import annotations

import ipaddress

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdata
import dns.rdatatype

from bcd.model import ProbeResult, Result
from bcd.probes.base import Attempt, ProbeContext, describe_os_error, guarded
from bcd.probes.dns import DnsSpec


class DnsProbe:
    """Queries `spec.server:spec.port` over UDP (TCP if truncated, or always with transport tcp), following
    CNAMEs inside the answer. FAIL on NXDOMAIN, SERVFAIL or any other error code, an empty answer, a
    missing `expect` record, no answer in time; OK otherwise. Names compare without case or trailing dot,
    addresses in canonical form, TXT by content."""

    __slots__ = ("_ctx", "_rdtype", "_spec", "_timeout", "_wanted", "_where")

    def __init__(self, spec: DnsSpec, timeout: float, ctx: ProbeContext) -> None:
        self._spec = spec
        self._timeout = timeout
        self._ctx = ctx
        self._rdtype = dns.rdatatype.from_text(spec.type)
        self._where = f"{spec.server}:{spec.port}"
        self._wanted = {normalise(self._rdtype, text): text for text in spec.expect}

    async def run(self) -> ProbeResult:
        """Check once (see the class docstring); never raises except CancelledError."""
        doing = f"waiting for {self._where} to answer {self._spec.type} {self._spec.name}"
        attempt = Attempt(self._timeout, self._ctx.clock, doing)
        return await guarded(attempt, self._check(attempt), self._describe)

    async def _check(self, attempt: Attempt) -> ProbeResult:
        query = dns.message.make_query(self._spec.name, self._rdtype)
        server, port = self._spec.server, self._spec.port
        if self._spec.transport == "tcp":
            response = await dns.asyncquery.tcp(query, server, port=port)
        else:
            # Not udp_with_fallback: it takes any garbage with the TC bit set for a truncated answer and tries
            # TCP, so a malformed answer was reported as "connection refused". Only a well-formed one says TC.
            response = await dns.asyncquery.udp(query, server, port=port, raise_on_truncation=False)
            if response.flags & dns.flags.TC:
                attempt.doing = f"waiting for {self._where} to answer {self._spec.type} {self._spec.name} over TCP"
                response = await dns.asyncquery.tcp(query, server, port=port)
        return self._judge(attempt, response)

    def _judge(self, attempt: Attempt, response: dns.message.Message) -> ProbeResult:
        name, kind = self._spec.name, self._spec.type
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            return attempt.result(Result.FAIL, f"{dns.rcode.to_text(rcode)} for {name} from {self._where}")
        if not isinstance(response, dns.message.QueryMessage):
            return attempt.result(Result.FAIL, f"{self._where} did not answer with a query response")
        rrset = response.resolve_chaining().answer
        if rrset is None or len(rrset) == 0:
            return attempt.result(Result.FAIL, f"no {kind} records for {name} from {self._where}")
        got = {normalise(self._rdtype, _rdata_text(rdata)): _rdata_text(rdata) for rdata in rrset}
        shown = ", ".join(sorted(got.values()))
        missing = [text for key, text in self._wanted.items() if key not in got]
        if missing:
            return attempt.result(Result.FAIL, f"{kind} {name} lacks {', '.join(missing)} (got {shown})")
        return attempt.result(Result.OK, f"{kind} {name}: {shown}")

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, dns.exception.DNSException):
            return f"malformed DNS answer from {self._where}: {exc}"
        return describe_os_error(exc, self._where)


def _rdata_text(rdata: dns.rdata.Rdata) -> str:
    strings = getattr(rdata, "strings", None)  # TXT/SPF: the content, not the quoted zone-file form
    if strings is not None:
        return b"".join(strings).decode(errors="replace")
    return str(rdata.to_text())


def normalise(rdtype: dns.rdatatype.RdataType, text: str) -> str:
    """Comparable form of a record: IPs canonical, names lower-case without trailing dots, TXT verbatim."""
    text = text.strip()
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            return text.lower()
    if rdtype == dns.rdatatype.TXT:
        return text.removeprefix('"').removesuffix('"') if len(text) >= 2 and text[0] == text[-1] == '"' else text
    return " ".join(token.rstrip(".") for token in text.lower().split())
