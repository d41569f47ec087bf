"""`http:` probe: one request on a new connection; status, body, latency and certificate are checked."""

from __future__ import annotations

import re
import ssl

import aiohttp
from yarl import URL

from bcd.durations import format_duration
from bcd.model import ProbeResult, Result
from bcd.probes.base import (
    Attempt,
    PeerCertResponse,
    ProbeContext,
    describe_os_error,
    guarded,
    seconds,
)
from bcd.probes.specs import HttpSpec
from bcd.probes.tls import cert_expiry, client_context, describe_expiry, peer_cert_expiry

_CHUNK = 16384


class HttpProbe:
    """Requests `spec.url` without following redirects. FAIL on an unexpected status, a body that does not
    match `body_regex`, or any network/TLS error; WARN when slower than `max_latency` or when the server's
    certificate expires within `cert_expiry_warn`; OK otherwise."""

    def __init__(self, spec: HttpSpec, timeout: float, ctx: ProbeContext) -> None:
        self._spec = spec
        self._timeout = timeout
        self._ctx = ctx
        self._url = URL(spec.url)
        self._shown = str(self._url.with_user(None))  # credentials in the URL never reach a reason
        self._where = f"{self._url.host}:{self._url.port}"
        self._regex = re.compile(spec.body_regex) if spec.body_regex is not None else None
        self._ssl: ssl.SSLContext | bool = True
        if self._url.scheme == "https":
            self._ssl = client_context(spec.tls_verify, spec.ca_file, spec.cert_file, spec.key_file)

    async def run(self) -> ProbeResult:
        """Check once (see the class docstring); never raises except CancelledError."""
        attempt = Attempt(self._timeout, self._ctx.clock, f"connecting to {self._where}")
        return await guarded(attempt, self._check(attempt), self._describe)

    async def _check(self, attempt: Attempt) -> ProbeResult:
        def on_phase(phase: str) -> None:
            attempt.doing = {
                "resolving": f"resolving {self._url.host}",
                "connecting": f"connecting to {self._where}",
                "connected": f"waiting for response from {self._shown}",
            }.get(phase, attempt.doing)

        # The connector has force_close=True: a new connection every time. aiohttp silently retries an
        # idempotent request once when a connection drops before the response: acceptable for a probe, the
        # deadline still holds and a persistent failure still shows.
        async with self._ctx.http.request(
            self._spec.method,
            self._url,
            headers=self._spec.headers,
            data=self._spec.body,
            ssl=self._ssl,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            trace_request_ctx=on_phase,
        ) as response:
            expiry = _cert_expiry(response)
            attempt.doing = f"reading body of {self._shown}"
            matched = await self._body_matches(response)
            return self._judge(attempt, response, matched, expiry)

    async def _body_matches(self, response: aiohttp.ClientResponse) -> bool:
        """Read at most max_body_bytes, in chunks, stopping as soon as body_regex matches."""
        if self._regex is None:
            return True
        body = bytearray()
        limit = self._spec.max_body_bytes
        chunk_size = max(_CHUNK, limit // 8)  # few regex searches even for a large limit
        while True:
            if self._regex.search(_decode(body, response.charset)):
                return True
            if len(body) >= limit:
                return False
            chunk = await response.content.read(min(chunk_size, limit - len(body)))
            if not chunk:
                return False
            body += chunk

    def _judge(
        self, attempt: Attempt, response: aiohttp.ClientResponse, matched: bool, expiry: float | None
    ) -> ProbeResult:
        spec, status = self._spec, response.status
        said = f"HTTP {status} from {self._shown}"
        if not self._status_ok(status):
            location = response.headers.get("Location")
            moved = f" (Location: {location})" if location and 300 <= status < 400 else ""
            return attempt.result(Result.FAIL, f"{said}, expected {self._expected()}{moved}", expiry)
        if not matched:
            assert self._regex is not None
            return attempt.result(Result.FAIL, f"body does not match {self._regex.pattern!r} ({said})", expiry)
        latency = attempt.elapsed()
        if spec.max_latency is not None and latency > spec.max_latency:
            slow = f"slow: {seconds(latency)} > max_latency {seconds(spec.max_latency)} ({said})"
            return attempt.result(Result.WARN, slow, expiry)
        now = self._ctx.wall_clock()
        if spec.cert_expiry_warn is not None and expiry is not None and expiry - now < spec.cert_expiry_warn:
            soon = (
                f"certificate of {self._url.host} {describe_expiry(expiry, now)}, "
                f"within cert_expiry_warn {format_duration(spec.cert_expiry_warn)}"
            )
            return attempt.result(Result.WARN, soon, expiry)
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
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return describe_os_error(exc.certificate_error, self._where)
        if isinstance(exc, aiohttp.ClientConnectorError):
            return describe_os_error(exc.os_error, self._where)
        if isinstance(exc, aiohttp.ServerDisconnectedError):
            return f"{self._where} closed the connection without a complete response"
        if isinstance(exc, aiohttp.ClientResponseError):
            return f"invalid HTTP response from {self._shown}: {exc.message}"
        if isinstance(exc, aiohttp.ClientPayloadError):
            return f"broken body from {self._shown}: {exc}"
        return describe_os_error(exc, self._where)


def _cert_expiry(response: aiohttp.ClientResponse) -> float | None:
    if isinstance(response, PeerCertResponse):
        return cert_expiry(response.peer_cert_der)
    # a session not made by make_http_session(): the connection is still there unless the body was empty
    connection = response.connection
    transport = connection.transport if connection is not None else None
    return peer_cert_expiry(transport.get_extra_info("ssl_object") if transport is not None else None)


def _decode(body: bytes | bytearray, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")
