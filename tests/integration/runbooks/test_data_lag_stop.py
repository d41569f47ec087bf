"""The highest data lag measured just before the daemon stops reaches the journal: `bcd run` as a subprocess,
hampshire's lag read from its own HTTP answer (`json_values`) — 100 s, then 250 s, then 180 s against an RPO of
300 s, all within one 5-minute stretch — then a clean stop (SIGTERM). The journal (its SQLite file, read after the
daemon has gone) holds the crossing that said where the lag stood and the stretch's maximum, 250 s."""

from __future__ import annotations

import json

from bcd.journal import Journal
from tests.integration.runbooks.daemon_kit import Bcd, Estate, sample


async def test_the_maximum_pending_at_a_clean_stop_is_journaled(estate: Estate) -> None:
    service = estate.service()
    service["objectives"] = {"rpo": "300s"}
    hampshire = service["sites"]["hampshire"]
    hampshire["probes"][0]["http"]["json_values"] = {"lag": "replication.lag_seconds"}
    hampshire["data_lag"] = {"probe": "health", "value": "lag"}
    estate.hampshire.body = json.dumps({"replication": {"lag_seconds": 100}})
    daemon = await estate.start(estate.config(services={"payroll": service}))
    for lag in (100, 250, 180):
        estate.hampshire.body = json.dumps({"replication": {"lag_seconds": lag}})
        await daemon.wait_until(lambda lag=lag: _lag_is(daemon, lag))
    assert await daemon.stop() == 0

    journal = Journal(estate.state_dir / "bcd.sqlite")
    found = [(e.reason.split(" over the last ")[0], e.data) for e in journal.events(0, limit=1000)
             if e.kind == "data_lag"]
    journal.close()
    assert [(reason, data.sample, data.lag) for reason, data in found] == [  # type: ignore[union-attr]
        ("payroll at hampshire: data lag 100 s is within the RPO of 300 s", "crossing", 100.0),
        ("payroll at hampshire: highest data lag 250 s", "max", 250.0)]


async def _lag_is(daemon: Bcd, lag: float) -> bool:
    """Whether the daemon shows hampshire's lag as `lag` (it has observed it)."""
    return sample(await daemon.metrics(), "bcd_site_data_lag_seconds", service="payroll", site="hampshire") == lag
