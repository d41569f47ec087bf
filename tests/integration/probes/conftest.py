"""Fixtures for the probe integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bcd.probes.base import ProbeContext, make_context


@pytest.fixture
async def ctx() -> AsyncIterator[ProbeContext]:
    """The context probes share in the daemon: one HTTP session (new connection per request)."""
    context = await make_context()
    yield context
    await context.close()
