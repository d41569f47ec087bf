"""Config models of every probe kind (parsed once, frozen, unknown keys rejected).

There is one spec per probe, tens of thousands in a large estate: they are frozen, slotted pydantic dataclasses
(no `__dict__` or fields-set per instance), a quarter of the memory of BaseModels.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic.dataclasses import dataclass

from bcd.credentials import CredentialFile
from bcd.durations import Duration

FORBID = ConfigDict(extra="forbid")
"""Config of the pydantic dataclasses: unknown keys are errors (type `unexpected_keyword_argument`)."""


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def absolute_argv(argv: list[str]) -> list[str]:
    """Commands run without a shell and without a PATH search: argv[0] must be an absolute path."""
    if not argv[0].startswith("/"):
        raise ValueError(f"argv[0] must be an absolute path, got {argv[0]!r}")
    return argv


@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class HttpSpec:
    """`http:` probe: one request on a new connection."""

    url: Annotated[str, Field(pattern=r"^https?://", description="http:// or https:// URL")]
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field({})
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
    max_body_bytes: int = Field(65536, ge=0, description="bytes of the body read for body_regex")

    _regex = field_validator("body_regex")(_check_regex)

    @field_validator("headers")
    @classmethod
    def _one_line_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if "\r" in text or "\n" in text:
                raise ValueError(f"header {name} contains a line break")
        return value


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

    _regex = field_validator("expect")(_check_regex)


@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class DnsSpec:
    """`dns:` probe: resolve a name against a given server."""

    name: str
    server: str = Field(description="IP address of the DNS server")
    port: int = Field(53, ge=1, le=65535)
    type: Literal["A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "PTR", "SOA"] = "A"
    expect: list[str] = Field([], description="records that must all be present in the answer")
    transport: Literal["udp", "tcp"] = "udp"


@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class CommandSpec:
    """`command:` probe: a Nagios/monitoring-plugins check run without a shell."""

    argv: Annotated[list[str], Field(min_length=1)]
    env: dict[str, str] = Field({})

    _absolute = field_validator("argv")(absolute_argv)


@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class MqttSpec:
    """`mqtt:` probe: connect to a broker, optionally round-trip a message."""

    url: Annotated[str, Field(pattern=r"^mqtts?://")]
    topic: str | None = Field(None, description="publish to and receive from this topic")
    username: str | None = None
    password_file: CredentialFile | None = Field(None, description="relative to $CREDENTIALS_DIRECTORY")
    tls_verify: bool = True
    ca_file: CredentialFile | None = None
