"""Fixtures of the runbook integration tests: a real Runner kit, a recording HTTP server, daemons."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers.recorder import Recorder
from tests.integration.runbooks.daemon_kit import Estate, open_estate
from tests.integration.runbooks.runner_kit import FakeHooks, Kit, open_journal


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """Records what runbook steps send; answers 200."""
    async with Recorder() as server:
        yield server


@pytest.fixture
async def kit(tmp_path: Path) -> AsyncIterator[Kit]:
    """A real Runner on a real journal (tmp SQLite file) and a real HTTP session; fake hooks only."""
    journal, runs = open_journal(tmp_path / "bcd.sqlite")
    async with aiohttp.ClientSession() as session:
        kit = Kit(runs, FakeHooks(), session)
        yield kit
        await kit.runner.stop()
    journal.close()


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    """daemon_kit's estate (two real HTTP targets, a recorder for runbook steps, a factory of daemons)."""
    async with open_estate(tmp_path) as estate:
        yield estate
