"""What `bcd recoveries` prints of the API's JSON, and the objectives under `bcd status`."""

from __future__ import annotations

from typing import Any

from bcd.cli.recovery_text import objectives_block, recoveries_table, seconds_text


def recovery(met: bool | None, total: float | None, plan: str | None = None) -> dict[str, Any]:
    return {"run_id": 7, "service": "payroll", "kind": "failover", "trigger": "auto", "plan": plan, "from": "dorset",
            "to": "hampshire", "result": "succeeded" if total else "failed", "timeline": {"started": 0.0},
            "phases": {"detection": 31.0, "decision": 0.0, "execution": 126.0, "verification": total and 12.4},
            "total": total, "rto": 900.0, "rto_met": met}


def test_each_recovery_is_a_line_with_its_phases_and_the_rto_met_or_missed() -> None:
    page = {"service": "payroll", "objectives": {"rto": 900.0, "rpo": None},
            "recoveries": [recovery(False, 1200.0), recovery(True, 169.4), recovery(None, None)]}
    lines = recoveries_table(page)
    assert lines[0] == "payroll: RTO 15m, RPO none"
    assert lines[1].split()[-6:] == ["DETECT", "DECIDE", "EXECUTE", "VERIFY", "TOTAL", "RTO"]
    assert lines[2].split()[-6:] == ["31.0s", "0.0s", "2.1m", "12.4s", "20.0m", "MISSED"]
    assert lines[3].endswith(" 2.8m met")
    assert lines[4].split()[-3:] == ["-", "-", "-"]  # failed: nothing verified, no verdict


def test_no_recoveries_yet() -> None:
    assert recoveries_table({"service": "payroll", "objectives": {"rto": None, "rpo": None},
                             "recoveries": []})[-1] == "(no recoveries yet)"


def test_seconds_read_in_the_unit_that_fits() -> None:
    assert [seconds_text(v) for v in (None, 0.04, 119.0, 120.0, 7199.0, 7200.0)] == [
        "-", "0.0s", "119.0s", "2.0m", "120.0m", "2.0h"]


def test_status_shows_the_objectives_of_the_services_that_have_some() -> None:
    services = [
        {"name": "payroll", "status": "ok", "active": "dorset", "sites": {"dorset": {"state": "up"}},
         "objectives": {"rto": 1800.0, "rpo": 300.0}},
        {"name": "library", "status": "ok", "active": "dorset", "sites": {"dorset": {"state": "up"}},
         "objectives": {"rto": None, "rpo": None}},
    ]
    assert objectives_block(services) == ["", "objectives (RTO / RPO):", "  payroll  30m / 5m"]
    assert objectives_block(services[1:]) == []
