"""Run records in etcd (`bcd.cluster.records`): a `RemoteRun` parsed once from the store's bytes and written back
with the same keys; a malformed record is refused with the reason; which records the lock holder deletes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from bcd.cluster import RemoteRun, prunable
from bcd.cluster.records import ActiveSite, Holder, RecordUnreadable, RemoteStep, RunLedger, mirrored, mirrored_finished
from bcd.model import RunKind, RunResult

WRITTEN = {  # a record as a lock holder writes it (every key bcd has always written)
    "vantage": "hampshire", "holder": {"vantage": "hampshire", "lease": "7587"}, "token": 41, "service": "payroll",
    "result": "waiting_approval", "steps": [{"seq": 1, "phase": "main", "name": "drain", "outcome": "ok"},
                                            {"seq": 2, "phase": "main", "name": "hold", "outcome": "running"}],
    "step": {"seq": 2, "phase": "main", "name": "hold"}, "run_id": 7, "runbook": "move", "kind": "failback",
    "trigger": "olive", "reason": "olive: planned", "to": "dorset", "dry_run": False, "forced": True,
    "started": 1000.5, "ended": None, "detail": "", "evidence": {"needed": 2}, "acknowledged_by": None,
    "from": "hampshire",
}


def test_a_record_round_trips_with_the_keys_bcd_has_always_written() -> None:
    run = RemoteRun.from_json(json.dumps(WRITTEN).encode())
    assert run == RemoteRun(
        vantage="hampshire", token=41, service="payroll", result=RunResult.WAITING_APPROVAL, run_id=7,
        kind=RunKind.FAILBACK, holder=Holder("hampshire", "7587"), runbook="move", trigger="olive",
        reason="olive: planned", from_site="hampshire", to_site="dorset", dry_run=False, forced=True,
        started=1000.5, ended=None, detail="", evidence={"needed": 2}, acknowledged_by=None,
        steps=(RemoteStep(1, "main", "drain", "ok"), RemoteStep(2, "main", "hold")),
        step=RemoteStep(2, "main", "hold"))
    assert json.loads(run.to_json()) == WRITTEN
    assert RemoteRun.from_json(run.to_json()) == run
    assert (run.name, run.unfinished, run.needs_ack) == ("hampshire:7", True, False)


def test_the_fields_a_record_may_leave_out_take_their_defaults() -> None:
    run = RemoteRun.from_json('{"vantage": "dorset", "token": "12", "result": "failed", "run_id": 3, '
                              '"kind": "failover"}')
    assert (run.token, run.holder, run.steps, run.step, run.started, run.trigger) == (12, None, (), None, None, "auto")
    assert run.needs_ack


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object but list"),
    (json.dumps({**WRITTEN, "token": None}).encode(), "'token' is None"),
    (json.dumps({**WRITTEN, "result": "exploded"}).encode(), "'result' is 'exploded'"),
    (json.dumps({**WRITTEN, "kind": "sideways"}).encode(), "'kind' is 'sideways'"),
    (json.dumps({key: value for key, value in WRITTEN.items() if key != "run_id"}).encode(), "no 'run_id'"),
    (json.dumps({**WRITTEN, "vantage": 3}).encode(), "'vantage' is 3"),
    (json.dumps({**WRITTEN, "started": "yesterday"}).encode(), "'started' is 'yesterday'"),
    (json.dumps({**WRITTEN, "steps": {"seq": 1}}).encode(), "'steps' is {'seq': 1}, not a list"),
    (json.dumps({**WRITTEN, "steps": [{"name": "drain"}]}).encode(), "no 'seq'"),
], ids=["not json", "not an object", "no token", "unknown result", "unknown kind", "no run id", "vantage not text",
        "started not a time", "steps not a list", "a step without seq"])
def test_a_malformed_record_is_refused_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(RecordUnreadable) as refused:
        RemoteRun.from_json(raw)
    assert str(refused.value).startswith(reason)


def test_the_ledger_skips_an_unreadable_record_and_keeps_the_others() -> None:
    ledger = RunLedger("dorset")
    read = {"runs/payroll/41": json.dumps(WRITTEN).encode(), "runs/payroll/42": b'{"token": 42}',
            "locks/payroll": b'{"vantage": "hampshire", "lease": "7587"}', "active/payroll": b'{"site": "dorset"}'}
    with capture_logs() as logged:
        changed, actives = ledger.update(read)
        ledger.update(read)  # the same bytes again: reported once
    assert [(line["event"], line["key"], line["reason"]) for line in logged] == [
        ("run_record_unreadable", "runs/payroll/42", "no 'vantage'")]
    assert changed == {"payroll"}
    assert actives == {"payroll": ActiveSite("dorset")}
    assert [run.token for run in ledger.records["payroll"]] == [41]
    shown = ledger.remote_run("payroll", held_here=False)
    assert shown is not None
    assert (shown.id, shown.kind, shown.to_site, shown.waiting_approval, shown.step) == (
        "hampshire:7", RunKind.FAILBACK, "dorset", True, "hold")


def test_a_mirrored_run_finished_event_carries_the_run_kind_as_the_runner_does() -> None:
    run = RemoteRun.from_json(json.dumps({**WRITTEN, "result": "succeeded", "ended": 1010.0}).encode())
    record = mirrored(run, "payroll", orphaned=False, now=2000.0)
    event = mirrored_finished(record, run, 2000.0)
    assert event.to_json()["run_kind"] == "failback"  # not overwritten by the event's own kind
    assert event.to_json()["kind"] == "run_finished"


def test_a_drills_leg_is_mirrored_as_a_drills_so_it_starts_no_cooldown_on_the_other_instances() -> None:
    leg = RemoteRun.from_json(json.dumps({**WRITTEN, "result": "succeeded", "drill": "payroll@20261207T020000Z"}))
    assert leg.drill == "payroll@20261207T020000Z"
    assert json.loads(leg.to_json()) == {**WRITTEN, "result": "succeeded", "drill": "payroll@20261207T020000Z"}
    assert mirrored(leg, "payroll", orphaned=False, now=2000.0).evidence["drill"] == "payroll@20261207T020000Z"
    real = RemoteRun.from_json(json.dumps({**WRITTEN, "result": "succeeded"}))
    assert "drill" not in mirrored(real, "payroll", orphaned=False, now=2000.0).evidence

def records(*runs: tuple[int, str, str | None]) -> dict[str, RemoteRun | None]:
    """(token, result, acknowledged_by) -> the records as read from the store, by key."""
    return {f"runs/web/{token}": RemoteRun("hampshire", token, "web", RunResult(result), acknowledged_by=by)
            for token, result, by in runs}


CASES: list[tuple[str, dict[str, RemoteRun | None], int, list[str]]] = [
    ("nothing beyond the newest", records((1, "succeeded", None), (2, "succeeded", None)), 2, []),
    ("the oldest finished ones go, newest first",
     records((3, "succeeded", None), (1, "succeeded", None), (4, "succeeded", None), (2, "succeeded", None)), 2,
     ["runs/web/2", "runs/web/1"]),
    ("by token, not by key order", records((9, "succeeded", None), (10, "succeeded", None), (100, "succeeded", None)),
     1, ["runs/web/10", "runs/web/9"]),
    ("an unfinished record stays whatever its age",
     records((1, "running", None), (2, "waiting_approval", None), (3, "succeeded", None), (4, "succeeded", None)), 1,
     ["runs/web/3"]),
    ("a failure nobody acknowledged stays; an acknowledged one goes",
     records((1, "failed", None), (2, "interrupted", "olive"), (3, "rolled_back", None), (4, "aborted", "olive"),
             (5, "succeeded", None)), 1, ["runs/web/4", "runs/web/2"]),
    ("keep 0 deletes every finished record", records((1, "succeeded", None), (2, "dry_run", None)), 0,
     ["runs/web/2", "runs/web/1"]),
    ("an unreadable record counts as the oldest", {"runs/web/x": None, **records((1, "succeeded", None))}, 1,
     ["runs/web/x"]),
]


@pytest.mark.parametrize(("found", "keep", "deleted"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_prunable(found: dict[str, Any], keep: int, deleted: list[str]) -> None:
    assert prunable(found, keep) == deleted


def test_the_active_site_is_read_once_into_a_value() -> None:
    active = ActiveSite("hampshire", "dorset:4", 57, 1000.5)
    assert json.loads(active.to_json()) == {"site": "hampshire", "run": "dorset:4", "token": 57, "at": 1000.5}
    assert ActiveSite.from_json(active.to_json()) == active
    assert ActiveSite.from_json(b'{"run": "dorset:4"}') is None  # names no site: nothing to adopt
    assert ActiveSite.from_json(b"not json") is None
