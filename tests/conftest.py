"""Fixtures shared by the whole suite: a real mosquitto broker, a self-signed certificate, a real runbook Runner
kit with a recording HTTP server, bcd daemons stopped after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import Broker, CertFiles, make_cert, start_mosquitto, stop_process
from tests.helpers.daemon import Daemons
from tests.helpers.etcd import EtcdCluster
from tests.helpers.recorder import Recorder
from tests.helpers.runner_kit import FakeHooks, Kit, open_journal


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port for the whole session (anonymous access)."""
    process, broker = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    stop_process(process)


@pytest.fixture(scope="session")
def short_lived_cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    """A self-signed certificate for localhost/127.0.0.1 that expires in one day."""
    return make_cert(tmp_path_factory.mktemp("tls"), days=1)


# One real three-member etcd on loopback for the whole session. Starting one costs about two seconds (each new
# member probes its peers), so it is shared: tests use their own key prefixes or cluster names, and members a
# test kills are started again after it.
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
async def daemons() -> AsyncIterator[Daemons]:
    """`await daemons.start(DaemonProcess(...))` starts `bcd run` and waits until it is ready; every daemon
    still running is stopped after the test."""
    started = Daemons()
    yield started
    await started.stop_all()
