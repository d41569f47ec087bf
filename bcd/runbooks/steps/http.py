"""`http:` step: one request; a 5xx answer or a connection error is worth retrying, other errors are not."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from bcd.runbooks.specs import HttpStep
from bcd.runbooks.steps.base import StepContext, StepError, StepOutcome, bounded

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
