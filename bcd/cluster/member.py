"""How the composition root (bcd.app) makes a cluster member's coordination: the etcd client, the coordinator on it,
and how the engine makes the cluster link it decides and runs through."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from bcd.cluster import ClusterLink, Preference
from bcd.coordination import EtcdCoordinator
from bcd.coordination.etcd import EtcdClient

if TYPE_CHECKING:
    from bcd.config import Config
    from bcd.engine import Engine

log = structlog.get_logger("bcd.app")

Coordination = tuple[EtcdClient | None, EtcdCoordinator | None, Callable[["Engine"], ClusterLink] | None]


def coordination(config: Config, reprobe: Callable[[str, str], object]) -> Coordination:
    """A cluster member: an etcd client and coordinator, and how the engine makes the cluster link (which
    re-probes through `reprobe` what another vantage sees failing). A lone instance has none. Nothing runs yet."""
    cluster_config = config.cluster
    if cluster_config is None:
        return None, None, None
    assert config.vantage is not None  # the config refuses a cluster member without one
    etcd_config = cluster_config.etcd  # its *_file paths are resolved by the config (bcd.credentials)
    etcd = EtcdClient(
        etcd_config.endpoints, request_timeout=max(0.1, cluster_config.call_timeout / 2),
        deadline=cluster_config.call_timeout, ca_file=etcd_config.ca_file, cert_file=etcd_config.cert_file,
        key_file=etcd_config.key_file,
    )
    link: ClusterLink

    def lost(service: str) -> None:  # the coordinator is made first: the link is made from it (by the engine)
        link.lost(service)

    coordinator = EtcdCoordinator(etcd, cluster=cluster_config.name, vantage=config.vantage,
                                  lease_ttl=cluster_config.lease_ttl, keepalive=cluster_config.keepalive_interval,
                                  on_lost=lost, full_read_every=cluster_config.full_read_every)
    vantage, preference = config.vantage, Preference.configured(config.vantage, cluster_config)

    def made_by(engine: Engine) -> ClusterLink:
        nonlocal link
        link = ClusterLink(coordinator, engine, vantage=vantage, quorum=cluster_config.quorum,
                           lease_ttl=cluster_config.lease_ttl, call_timeout=cluster_config.call_timeout,
                           preference=preference, reprobe=reprobe)
        return link
    log.info("cluster_member", cluster=cluster_config.name, vantage=config.vantage,
             endpoints=etcd_config.endpoints, quorum=cluster_config.quorum, lease_ttl=cluster_config.lease_ttl)
    return etcd, coordinator, made_by
