"""The client over TLS with a client certificate, against a real one-member etcd that requires one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bcd.coordination.etcd import EtcdClient, EtcdUnavailable
from tests.helpers import CertFiles, make_cert
from tests.helpers.etcd import EtcdCluster


@pytest.fixture(scope="module")
def tls_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EtcdCluster, CertFiles]]:
    certs = make_cert(tmp_path_factory.mktemp("etcd-tls-certs"), days=1)
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd-tls"), size=1, tls=certs)
    cluster.start()
    try:
        yield cluster, certs
    finally:
        cluster.stop_all()


async def test_put_and_range_over_tls(tls_etcd: tuple[EtcdCluster, CertFiles]) -> None:
    cluster, certs = tls_etcd
    assert cluster.endpoints[0].startswith("https://")
    async with EtcdClient(cluster.endpoints, ca_file=str(certs.cert), cert_file=str(certs.cert),
                          key_file=str(certs.key)) as client:
        revision = await client.put("/tls/k", b"v")
        kvs, _ = await client.range("/tls/k")
        assert [(kv.value, kv.mod_revision) for kv in kvs] == [(b"v", revision)]


async def test_unknown_server_certificate_is_refused(tls_etcd: tuple[EtcdCluster, CertFiles], tmp_path: Path) -> None:
    cluster, certs = tls_etcd
    stranger = make_cert(tmp_path, days=1, name="stranger")
    async with EtcdClient(cluster.endpoints, ca_file=str(stranger.cert), cert_file=str(certs.cert),
                          key_file=str(certs.key)) as client:
        with pytest.raises(EtcdUnavailable, match="certificate verify failed"):
            await client.put("/tls/k", b"v")


def test_cert_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="together"):
        EtcdClient(["https://127.0.0.1:1"], cert_file=str(tmp_path / "c.pem"))
