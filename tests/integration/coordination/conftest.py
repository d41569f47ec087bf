"""Fixtures for the coordination tests; the shared three-member etcd (`etcd_cluster`) is in tests/conftest.py
and each test works under its own key prefix."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from bcd.coordination.etcd import EtcdClient
from tests.helpers.etcd import EtcdCluster


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own, e.g. /t/test_put_range/."""
    return "/t/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name) + "/"


@pytest.fixture
async def client(etcd_cluster: EtcdCluster) -> AsyncIterator[EtcdClient]:
    async with EtcdClient(etcd_cluster.endpoints, request_timeout=1.0, deadline=2.0) as etcd:
        yield etcd
