"""Fixtures of the cluster tests: one real three-member etcd for the session (each test runs its own bcd
cluster under its own name), members a test kills started again after it; probe targets, a recorder, and
the members of each test stopped at its end."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.etcd import EtcdCluster
from tests.helpers.recorder import Recorder
from tests.integration.cluster.kit import ClusterEstate, VantageTarget


@pytest.fixture
def cluster_etcd(etcd_cluster: EtcdCluster) -> EtcdCluster:
    """The session's shared etcd (tests/conftest.py), every member running before and after the test."""
    return etcd_cluster


@pytest.fixture
async def estate(tmp_path: Path, cluster_etcd: EtcdCluster, request: pytest.FixtureRequest,
                 ) -> AsyncIterator[ClusterEstate]:
    dorset, hampshire = await VantageTarget().start(), await VantageTarget().start()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    async with Recorder() as steps:
        estate = ClusterEstate(tmp_path, cluster_etcd, dorset, hampshire, steps, name)
        try:
            yield estate
        finally:
            await estate.close()
    await dorset.stop()
    await hampshire.stop()
