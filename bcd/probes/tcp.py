"""`tcp:` probe: connect (optionally with TLS), optionally send a line and expect a reply."""

from __future__ import annotations

import asyncio
import re

from pydantic import Field, field_validator
from pydantic.dataclasses import dataclass

from bcd.credentials import CredentialFile
from bcd.durations import Duration
from bcd.model import ProbeResult, Result
from bcd.probes.base import Attempt, ProbeContext, ProbeKind, close_politely, describe_os_error, guarded, seconds
from bcd.probes.tls import client_context, expiry_verdict, peer_cert_expiry
from bcd.specs import FORBID, check_regex

MAX_REPLY = 65536
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|[nrt0\\])")
_SIMPLE = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}


def unescape(text: str) -> bytes:
    r"""`text` as UTF-8 with \n \r \t \0 \\ and \xNN escapes turned into bytes; other backslashes stay."""
    out, pos = bytearray(), 0
    for match in _ESCAPE.finditer(text):
        out += text[pos : match.start()].encode()
        code = match.group(1)
        out += bytes([int(code[1:], 16)]) if code.startswith("x") else _SIMPLE[code]
        pos = match.end()
    out += text[pos:].encode()
    return bytes(out)


@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class TcpSpec:
    """`tcp:` probe: connect, optionally send and expect."""

    host: str
    port: int = Field(ge=1, le=65535)
    send: str | None = Field(None, description="text sent after connecting (\\n escapes allowed)")
    expect: str | None = Field(None, description="regular expression the reply must match")
    tls: bool = False
    tls_verify: bool = True
    ca_file: CredentialFile | None = None
    server_name: str | None = None
    cert_expiry_warn: Duration | None = Field(
        None, description="certificate expiring sooner → warn; already expired → fail"
    )

    _regex = field_validator("expect")(check_regex)


class TcpProbe:
    """Connects to host:port (TLS when `tls`), sends `send`, reads until `expect` matches (at most 64 KiB).
    FAIL on a refused/failed connection, a TLS error, a reply that ends or times out without matching, or
    (with `cert_expiry_warn`) an expired certificate; WARN when the certificate expires within
    `cert_expiry_warn`; OK otherwise. With TLS the server certificate's expiry is reported in `cert_expiry`."""

    __slots__ = ("_ctx", "_expect", "_send", "_spec", "_ssl", "_timeout", "_where")

    def __init__(self, spec: TcpSpec, timeout: float, ctx: ProbeContext) -> None:
        self._spec = spec
        self._timeout = timeout
        self._ctx = ctx
        self._where = f"{spec.host}:{spec.port}"
        self._send = unescape(spec.send) if spec.send is not None else None
        self._expect = re.compile(spec.expect.encode()) if spec.expect is not None else None
        self._ssl = client_context(spec.tls_verify, spec.ca_file) if spec.tls else None

    async def run(self) -> ProbeResult:
        """Check once (see the class docstring); never raises except CancelledError."""
        attempt = Attempt(self._timeout, self._ctx.clock, f"connecting to {self._where}")
        return await guarded(attempt, self._check(attempt), lambda exc: describe_os_error(exc, self._where))

    async def _check(self, attempt: Attempt) -> ProbeResult:
        server_name = (self._spec.server_name or self._spec.host) if self._ssl else None
        reader, writer = await asyncio.open_connection(
            self._spec.host, self._spec.port, ssl=self._ssl, server_hostname=server_name
        )
        try:
            result = await self._converse(attempt, reader, writer)
        except BaseException:
            writer.transport.abort()  # failed or out of time: no goodbyes
            raise
        attempt.doing = f"closing the connection to {self._where}"
        await close_politely(writer, attempt)
        return result

    async def _converse(
        self, attempt: Attempt, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> ProbeResult:
        expiry = peer_cert_expiry(writer.get_extra_info("ssl_object"))
        cert = expiry_verdict(expiry, self._ctx.wall_clock(), self._spec.cert_expiry_warn, self._spec.host)
        if cert is not None and cert[0] is Result.FAIL:
            return attempt.result(*cert, expiry)
        result = await self._talk(attempt, reader, writer, expiry)
        if cert is not None and result.result is Result.OK:
            return attempt.result(*cert, expiry)
        return result

    async def _talk(
        self, attempt: Attempt, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, expiry: float | None
    ) -> ProbeResult:
        if self._send is not None:
            attempt.doing = f"sending to {self._where}"
            writer.write(self._send)
            await writer.drain()
        if self._expect is None:
            return attempt.result(Result.OK, f"connected to {self._where} in {seconds(attempt.elapsed())}", expiry)
        return await self._read_reply(attempt, reader, expiry)

    async def _read_reply(self, attempt: Attempt, reader: asyncio.StreamReader, expiry: float | None) -> ProbeResult:
        assert self._expect is not None
        pattern = self._expect.pattern.decode(errors="replace")
        reply = bytearray()
        while len(reply) < MAX_REPLY:
            attempt.doing = f"waiting for a reply matching {pattern!r} from {self._where} (got {_preview(reply)})"
            chunk = await reader.read(MAX_REPLY - len(reply))
            if not chunk:
                break
            reply += chunk
            if self._expect.search(reply):
                return attempt.result(Result.OK, f"reply from {self._where} matches {pattern!r}", expiry)
        ended = "connection closed" if len(reply) < MAX_REPLY else f"{MAX_REPLY // 1024} KiB read"
        return attempt.result(
            Result.FAIL, f"reply from {self._where} does not match {pattern!r} ({ended}; got {_preview(reply)})", expiry
        )


def _preview(data: bytes | bytearray, limit: int = 60) -> str:
    if not data:
        return "nothing"
    text = repr(bytes(data[:limit]))
    return text + ("…" if len(data) > limit else "")


KIND = ProbeKind("tcp", TcpSpec, TcpProbe)
