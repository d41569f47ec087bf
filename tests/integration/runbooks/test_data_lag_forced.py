"""An operator forces a failover past `rpo_exceeded`: `bcd run` as a subprocess, hampshire's data lag read from
its own HTTP answer (`json_values`). Unknown first (the answer has no such value), then 42 s against an rpo of
5 s: blocked both times with the lag in the reason; forced, the run goes and its journaled reason keeps the lag
the operator accepted."""

from __future__ import annotations

import json

from tests.integration.runbooks.daemon_kit import Estate, sample


async def test_a_forced_failover_past_the_rpo_journals_the_lag_accepted(estate: Estate) -> None:
    service = estate.service()
    service["objectives"] = {"rpo": "5s"}
    hampshire = service["sites"]["hampshire"]
    hampshire["probes"][0]["http"]["json_values"] = {"lag": "replication.lag_seconds"}
    hampshire["data_lag"] = {"probe": "health", "value": "lag"}
    estate.hampshire.body = json.dumps({"replication": {"state": "streaming"}})
    daemon = await estate.start(estate.config(services={"payroll": service}))
    estate.dorset.status = 503

    unknown = await daemon.wait_service(lambda s: s["guard"] == "rpo_exceeded")
    assert ("failover blocked (data lag of hampshire unknown (probe health, value lag: no number (ok: HTTP 200 "
            f"from {estate.hampshire.url} in ") in unknown["reason"]
    assert "no value at replication.lag_seconds)); rpo 5s)" in unknown["reason"]

    estate.hampshire.body = json.dumps({"replication": {"lag_seconds": 42}})
    lagging = await daemon.wait_service(lambda s: "exceeds rpo" in s["reason"])
    assert (lagging["status"], lagging["guard"]) == ("blocked", "rpo_exceeded")
    assert "failover blocked (data lag of hampshire 42s (probe health, value lag, " in lagging["reason"]
    shown = lagging["sites"]["hampshire"]["probes"]["health"]["perfdata"]
    assert shown == [{"label": "lag", "value": 42.0, "unit": "", "warn": None, "crit": None, "min": None,
                      "max": None}]
    assert sample(await daemon.metrics(), "bcd_site_data_lag_seconds", service="payroll", site="hampshire") == 42
    assert await daemon.runs() == []

    forced = await daemon.transfer("failover", force=True, reason="dorset burnt down")
    assert forced.status == 202, forced
    run = await daemon.wait_first_run()
    assert run["result"] == "succeeded"
    assert run["reason"].startswith("olive: dorset burnt down (accepted: data lag of hampshire 42s (probe health, "
                                    "value lag, ")
    assert run["reason"].endswith(" exceeds rpo 5s) (forced)")
