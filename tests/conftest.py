"""Fixtures shared by the whole suite: a real mosquitto broker, a self-signed certificate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Broker, CertFiles, make_cert, start_mosquitto, stop_process


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
