"""Fixtures for the coordination tests: one real three-member etcd cluster on loopback for the session.

Starting a cluster costs about two seconds (each new member probes its peers before it starts), so the
cluster is shared; each test works under its own key prefix, and members a test kills are started again
after it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest

from bcd.coordination.etcd import EtcdClient
from tests.helpers.etcd import EtcdCluster


@pytest.fixture(scope="session")
def etcd_cluster_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
async def etcd_cluster(etcd_cluster_session: EtcdCluster) -> AsyncIterator[EtcdCluster]:
    """The session's cluster with every member running, before and after the test."""
    for index, member in enumerate(etcd_cluster_session.members):
        if not member.running:
            await etcd_cluster_session.restart(index)
    yield etcd_cluster_session
    for index, member in enumerate(etcd_cluster_session.members):
        if not member.running:
            await etcd_cluster_session.restart(index)


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix of this test's own, e.g. /t/test_put_range/."""
    return "/t/" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name) + "/"


@pytest.fixture
async def client(etcd_cluster: EtcdCluster) -> AsyncIterator[EtcdClient]:
    async with EtcdClient(etcd_cluster.endpoints, request_timeout=1.0, deadline=2.0) as etcd:
        yield etcd
