"""The `rpo_exceeded` guard against a real PostgreSQL primary and streaming replica (tests/helpers/postgres.py):
`bcd run` as a subprocess, `payroll` active in dorset and standby in hampshire, hampshire's data lag measured by a
command probe (tests/data/scripts/pg-replay-lag: `now() - pg_last_xact_replay_timestamp()` on the replica, the
primary committing every 200 ms). Replay paused until the lag passes the rpo (3 s): the automatic failover is
blocked with the lag, an operator is refused; replay resumed: the lag falls to a fraction of a second and the
failover goes ahead by itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import postgres
from tests.helpers.postgres import PostgresPair
from tests.integration.runbooks.daemon_kit import Estate, sample

LAG_SCRIPT = Path(__file__).parents[2] / "data" / "scripts" / "pg-replay-lag"
RPO = 3.0


@pytest.fixture
def pg() -> Iterator[PostgresPair]:
    why = postgres.missing()
    if why is not None:
        pytest.skip(why)
    with postgres.postgres_pair() as pair:
        yield pair


def replica_probe(pair: PostgresPair) -> dict[str, object]:
    # psql on a loaded machine may be slow: a long timeout (a failed run would show hampshire degraded, and
    # an operator's request refused as standby_not_up rather than rpo_exceeded), many failures before it falls
    return {"name": "replica", "command": {"argv": [str(LAG_SCRIPT), str(pair.replica_port)]},
            "interval": "2s", "timeout": "1500ms", "fall": 10}


async def test_a_failover_waits_while_the_replica_lags_beyond_rpo_and_goes_once_it_catches_up(
    estate: Estate, pg: PostgresPair,
) -> None:
    service = estate.service()
    service["objectives"] = {"rpo": f"{RPO:g}s"}
    hampshire = service["sites"]["hampshire"]
    hampshire["probes"].append(replica_probe(pg))
    hampshire["data_lag"] = {"probe": "replica", "value": "lag"}
    daemon = await estate.start(estate.config(services={"payroll": service}))

    pg.pause_replay()
    lag = await daemon.poll(daemon.metrics, lambda text: (sample(text, "bcd_site_data_lag_seconds",
                                                                  site="hampshire") or 0) > RPO,
                            "bcd_site_data_lag_seconds of hampshire above the rpo")
    assert sample(lag, "bcd_site_data_lag_seconds", site="dorset") is None  # dorset measures no lag
    estate.dorset.status = 503

    blocked = await daemon.wait_service(lambda s: s["guard"] == "rpo_exceeded")
    assert (blocked["status"], blocked["active"]) == ("blocked", "dorset")
    said = re.search(r"failover blocked \(data lag of hampshire ([\d.]+)s \(probe replica, value lag, [\d.]+s ago\) "
                     r"exceeds rpo 3s\): active dorset down", blocked["reason"])
    assert said is not None, blocked["reason"]
    assert float(said[1]) > RPO
    refused = await daemon.transfer("failover")
    assert refused.status == 409, refused
    assert "exceeds rpo 3s (use force)" in refused.body["detail"]
    assert await daemon.runs() == []

    pg.resume_replay()
    run = await daemon.wait_first_run()
    assert run["result"] == "succeeded"
    assert run["reason"].startswith("payroll: starting failover to hampshire: active dorset down")
    moved = await daemon.wait_service(lambda s: s["status"] == "ok")
    assert moved["active"] == "hampshire"
