"""Sharing an operator's acknowledgement with the other instances: written into the run records in etcd."""

from __future__ import annotations

from dataclasses import replace

import structlog

from bcd.cluster.records import RunLedger
from bcd.coordination import Coordinator, Lock

log = structlog.get_logger("bcd.cluster")


async def write_acknowledgements(coordinator: Coordinator, ledger: RunLedger, pending: dict[str, str], service: str,
                                 lock: Lock) -> None:
    """Holding `lock`: write the service's pending acknowledgement (`pending[service]`: who) into every
    unacknowledged finished record (fenced), then forget it unless a newer one came meanwhile."""
    by = pending.get(service)
    if by is None:
        return
    for key, raw in (await coordinator.read(f"runs/{service}/")).items():
        run = ledger.parse(key, raw)
        if run is not None and run.needs_ack:
            await coordinator.fenced_put(lock, key, replace(run, acknowledged_by=by).to_json())
    if pending.get(service) == by:
        del pending[service]
    log.info("acknowledgement_shared", service=service, by=by)
