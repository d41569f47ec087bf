"""`http:` probe: one request on a new connection; status, body, latency and certificate are checked."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass
from yarl import URL

from bcd.credentials import CredentialFile
from bcd.durations import Duration
from bcd.model import ProbeResult, Result
from bcd.probes import json_values
from bcd.probes.base import Attempt, ProbeContext, ProbeKind, describe_os_error, guarded, one_line, seconds
from bcd.probes.http_client import BrokenBody, ClosedEarly, HttpRequest, InvalidResponse, Reply, exchange
from bcd.probes.tls import cert_expiry, client_context, expiry_verdict
from bcd.specs import FORBID, SHARED_EMPTY, check_regex

ValueName = Annotated[str, Field(min_length=1, max_length=128)]
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class HttpSpec:
    """`http:` probe: one request on a new connection."""

    url: Annotated[str, Field(pattern=r"^https?://", description="http:// or https:// URL")]
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    headers: Annotated[dict[str, str], SHARED_EMPTY] = Field({}, validate_default=True)
    body: str | None = Field(None, description="request body (POST/PUT)")
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(
        None, description="accepted status codes; default any 2xx"
    )
    body_regex: str | None = Field(None, description="regular expression the body must match")
    max_latency: Duration | None = Field(None, description="slower than this → warn")
    tls_verify: bool = True
    ca_file: CredentialFile | None = None
    cert_file: CredentialFile | None = Field(None, description="client certificate (PEM)")
    key_file: CredentialFile | None = Field(None, description="client key (PEM)")
    cert_expiry_warn: Duration | None = Field(
        None, description="certificate expiring sooner → warn; already expired → fail"
    )
    max_body_bytes: int = Field(65536, ge=0, description="bytes of the body read for body_regex or json_values")
    json_values: Annotated[dict[ValueName, Annotated[str, Field(min_length=1)]], SHARED_EMPTY] = Field(
        {}, validate_default=True,
        description="named numbers read from the JSON answer by dotted path, e.g. {lag: replication.lag_seconds}")

    _regex = field_validator("body_regex")(check_regex)

    @field_validator("headers")
    @classmethod
    def _one_line_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {name} contains a line break")
        return value


class HttpProbe:
    """Requests `spec.url` without following redirects. FAIL on an unexpected status, a body that does not
    match `body_regex`, any network/TLS error, or (with `cert_expiry_warn`) an expired certificate; WARN when
    slower than `max_latency` or when the server's certificate expires within `cert_expiry_warn`; OK otherwise."""

    # one object per configured probe, tens of thousands of them: slots, no __dict__ (as every probe kind)
    __slots__ = ("_ctx", "_regex", "_request", "_shown", "_spec", "_timeout")

    def __init__(self, spec: HttpSpec, timeout: float, ctx: ProbeContext) -> None:
        self._spec = spec
        self._timeout = timeout
        self._ctx = ctx
        url = URL(spec.url)
        shown = str(url.with_user(None))  # credentials in the URL never reach a reason
        self._shown = spec.url if shown == spec.url else shown  # the config's string when equal: not a copy each
        self._regex = re.compile(spec.body_regex) if spec.body_regex is not None else None
        tls = None
        if url.scheme == "https":
            tls = client_context(spec.tls_verify, spec.ca_file, spec.cert_file, spec.key_file)
        self._request = HttpRequest.build(url, spec.method, headers=spec.headers, body=spec.body,
                                          user_agent=ctx.user_agent, tls=tls,
                                          read_body=self._regex is not None or bool(spec.json_values))

    async def run(self) -> ProbeResult:
        """Check once (see the class docstring); never raises except CancelledError."""
        attempt = Attempt(self._timeout, self._ctx.clock, self._doing("connecting"))
        return await guarded(attempt, self._check(attempt), self._describe)

    async def _check(self, attempt: Attempt) -> ProbeResult:
        def on_phase(phase: str) -> None:
            attempt.doing = self._doing(phase)

        reply = await exchange(self._request, on_phase, self._spec.max_body_bytes, self._body_matches)
        judged = self._judge(attempt, reply)
        if not self._spec.json_values or judged.result is Result.FAIL:
            return judged
        truncated = len(reply.body) >= self._spec.max_body_bytes
        items, problem = json_values.read(reply.body, truncated, self._spec.json_values)
        reason = f"{judged.reason}; {problem}" if problem else judged.reason
        return replace(judged, reason=one_line(reason), perfdata=items)

    @property
    def _host(self) -> str:
        return self._request.host

    @property
    def _where(self) -> str:
        """host:port for reasons, [v6]:port for IPv6 addresses (built when needed: thousands of probes are kept)."""
        host = self._request.host
        return f"[{host}]:{self._request.port}" if ":" in host else f"{host}:{self._request.port}"

    def _doing(self, phase: str) -> str:
        """What a timeout in this phase was waiting for (formatted when needed: thousands of probes are kept)."""
        if phase == "resolving":
            return f"resolving {self._host}"
        if phase == "connecting":
            return f"connecting to {self._where}"
        if phase == "connected":
            return f"waiting for response from {self._shown}"
        return f"reading body of {self._shown}"

    def _body_matches(self, body: bytes) -> bool:
        # with json_values the whole body (up to max_body_bytes) is read: a match does not end the read
        if self._spec.json_values or self._regex is None:
            return False
        return self._regex.search(body.decode("utf-8", errors="replace")) is not None

    def _judge(self, attempt: Attempt, reply: Reply) -> ProbeResult:
        spec, status = self._spec, reply.status
        expiry = cert_expiry(reply.peer_cert)
        said = f"HTTP {status} from {self._shown}"
        if not self._status_ok(status):
            location = reply.headers.get("location")
            moved = f" (Location: {location})" if location and 300 <= status < 400 else ""
            return attempt.result(Result.FAIL, f"{said}, expected {self._expected()}{moved}", expiry)
        if self._regex is not None and not self._regex.search(_decode(reply.body, reply.charset)):
            return attempt.result(Result.FAIL, f"body does not match {self._regex.pattern!r} ({said})", expiry)
        cert = expiry_verdict(expiry, self._ctx.wall_clock(), spec.cert_expiry_warn, self._host)
        if cert is not None and cert[0] is Result.FAIL:
            return attempt.result(*cert, expiry)
        latency = attempt.elapsed()
        if spec.max_latency is not None and latency > spec.max_latency:
            slow = f"slow: {seconds(latency)} > max_latency {seconds(spec.max_latency)} ({said})"
            return attempt.result(Result.WARN, slow, expiry)
        if cert is not None:
            return attempt.result(*cert, expiry)
        return attempt.result(Result.OK, f"{said} in {seconds(latency)}", expiry)

    def _status_ok(self, status: int) -> bool:
        if self._spec.expect_status:
            return status in self._spec.expect_status
        return 200 <= status < 300

    def _expected(self) -> str:
        if self._spec.expect_status:
            return ", ".join(str(code) for code in self._spec.expect_status)
        return "2xx"

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, ClosedEarly):
            return f"{self._where} closed the connection without a complete response"
        if isinstance(exc, InvalidResponse):
            return f"invalid HTTP response from {self._shown}: {exc}"
        if isinstance(exc, BrokenBody):
            return f"broken body from {self._shown}: {exc}"
        return describe_os_error(exc, self._where)


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


KIND = ProbeKind("http", HttpSpec, HttpProbe)
