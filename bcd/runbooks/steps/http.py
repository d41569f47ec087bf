"""`http:` step: one request; a 5xx answer or a connection error is worth retrying, other errors are not."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from bcd.credentials import CredentialFile
from bcd.lazy import lazy_import
from bcd.runbooks.steps.base import StepContext, StepError, StepOutcome, StepPlugin, bounded
from bcd.runbooks.templates import Templated

if TYPE_CHECKING:
    import aiohttp
else:  # loaded on first use: the config, which imports every step kind, does not need it
    aiohttp = lazy_import("aiohttp")


class HttpStep(Templated):
    """`http:` step: one request; 5xx and connection errors may be retried."""

    url: Annotated[str, Field(pattern=r"^https?://")]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = {}
    body: str | None = None
    json_body: dict[str, Any] | None = Field(None, alias="json", description="JSON request body")
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(None, description="default any 2xx")
    tls_verify: bool = True
    ca_file: CredentialFile | None = None


DEFAULT_TIMEOUT = 30.0


class HttpKind:
    retry_timeouts = True

    def default_timeout(self, spec: Any) -> float:
        return DEFAULT_TIMEOUT

    async def execute(self, spec: HttpStep, ctx: StepContext) -> StepOutcome:
        ssl_option: ssl.SSLContext | bool = True
        if not spec.tls_verify:
            ssl_option = False
        elif spec.ca_file:
            ssl_option = ssl.create_default_context(cafile=spec.ca_file)
        try:
            async with ctx.http.request(
                spec.method, spec.url, headers=spec.headers, data=spec.body, json=spec.json_body, ssl=ssl_option
            ) as response:
                body = bounded((await response.content.read(8192)).decode(errors="replace"))
        except aiohttp.ClientError as exc:
            raise StepError(f"{spec.method} {spec.url}: {exc}", retryable=True) from None
        expected = spec.expect_status
        passed = response.status in expected if expected else 200 <= response.status < 300
        summary = f"{spec.method} {spec.url}: HTTP {response.status}"
        if passed:
            return StepOutcome(summary, body)
        raise StepError(f"{summary} (expected {expected or '2xx'})", retryable=response.status >= 500, output=body)


KIND = StepPlugin("http", HttpStep, HttpKind())
