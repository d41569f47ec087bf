"""Fixtures of the runbook integration tests: daemons on an estate (the Runner kit and the recorder are in
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.runbooks.daemon_kit import Estate, open_estate


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    """daemon_kit's estate (two real HTTP targets, a recorder for runbook steps, a factory of daemons)."""
    async with open_estate(tmp_path) as estate:
        yield estate
