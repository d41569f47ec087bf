"""Fixtures for the probe integration tests."""

from __future__ import annotations

import pytest

from bcd.probes.base import ProbeContext


@pytest.fixture
def ctx() -> ProbeContext:
    """The context probes share in the daemon."""
    return ProbeContext()
