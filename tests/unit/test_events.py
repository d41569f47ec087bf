"""Typed events: one payload per kind, one JSON form for the journal, the API, SSE and MQTT."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from bcd import events
from bcd.events import ENVELOPE, PAYLOADS, Event, EventKind, payload_from_json, payload_json
from bcd.journal import Journal

# each kind's payload and its JSON fields as the wire shows them (today's names: a change here is visible)
SAMPLES: dict[EventKind, tuple[events.Payload, dict[str, object]]] = {
    EventKind.SITE_TRANSITION: (events.SiteTransition("up", "down"), {"from": "up", "to": "down"}),
    EventKind.SITE_CHANGED_IN_MAINTENANCE: (events.SiteChangedInMaintenance("down"), {"effective": "down"}),
    EventKind.SERVICE_STATUS: (
        events.ServiceStatusChanged("ok", "blocked", "dorset", "cooldown"),
        {"from": "ok", "to": "blocked", "active": "dorset", "guard": "cooldown"},
    ),
    EventKind.ACTIVE_CHANGED: (
        events.ActiveChanged("dorset", "hampshire", 7), {"from": "dorset", "to": "hampshire", "run_id": 7},
    ),
    EventKind.ACKNOWLEDGED: (events.Acknowledged((3, 4), "olive"), {"runs": [3, 4], "by": "olive"}),
    EventKind.MAINTENANCE_STARTED: (
        events.MaintenanceStarted(("dorset",), 1700.0, "olive"), {"sites": ["dorset"], "until": 1700.0, "by": "olive"},
    ),
    EventKind.MAINTENANCE_ENDED: (events.MaintenanceEnded(("dorset", "hampshire"), "olive"),
                                  {"sites": ["dorset", "hampshire"], "by": "olive"}),
    EventKind.MAINTENANCE_EXTENDED: (events.MaintenanceExtended(1800.0), {"until": 1800.0}),
    EventKind.MAINTENANCE_BOOKED: (events.MaintenanceWindow("payroll@x", ("dorset",), 10.0, 20.0, "olive"),
                                   {"window": "payroll@x", "sites": ["dorset"], "start": 10.0, "end": 20.0,
                                    "by": "olive"}),
    EventKind.MAINTENANCE_WINDOW_REFUSED: (events.MaintenanceWindow("night", ("hampshire",), 10.0, 20.0, "calendar"),
                                           {"window": "night", "sites": ["hampshire"], "start": 10.0, "end": 20.0,
                                            "by": "calendar"}),
    EventKind.RUN_STARTED: (
        events.RunStarted(7, "failover", "payroll-failover", "dorset", "hampshire", "auto", False, True),
        {"run_id": 7, "run_kind": "failover", "runbook": "payroll-failover", "from": "dorset", "to": "hampshire",
         "trigger": "auto", "dry_run": False, "forced": True},
    ),
    EventKind.RUN_FINISHED: (
        events.RunFinished(7, "succeeded", "failover", "hampshire", "run-1a"),
        {"run_id": 7, "result": "succeeded", "run_kind": "failover", "to": "hampshire", "remote_run": "run-1a"},
    ),
    EventKind.APPROVAL_WAITING: (events.ApprovalWaiting(7, "switch DNS", 600.0),
                                 {"run_id": 7, "step": "switch DNS", "timeout": 600.0}),
    EventKind.APPROVAL_GIVEN: (events.ApprovalGiven(7, "switch DNS", "alice", ("bob", "alice"), 2),
                               {"run_id": 7, "step": "switch DNS", "by": "alice", "approvals": ["bob", "alice"],
                                "needed": 2}),
    EventKind.APPROVAL_REFUSED: (events.ApprovalRefused(7, "olive"), {"run_id": 7, "by": "olive"}),
    EventKind.STEP_STARTED: (
        events.StepStarted(7, 1, "dns", "command", "main", {"argv": ["true"]}),
        {"run_id": 7, "seq": 1, "step": "dns", "step_kind": "command", "phase": "main", "inputs": {"argv": ["true"]}},
    ),
    EventKind.STEP_FINISHED: (
        events.StepFinished(7, 1, "dns", "command", "main", "succeeded", "ok"),
        {"run_id": 7, "seq": 1, "step": "dns", "step_kind": "command", "phase": "main", "outcome": "succeeded",
         "output": "ok"},
    ),
    EventKind.VIEWS_CHANGED: (events.RunNotStarted("failover", "hampshire"), {"run_kind": "failover", "to": "hampshire"}),
    EventKind.JOURNAL_GAP: (events.JournalGap(2, 4.0, 5.0), {"dropped": 2, "from": 4.0, "to": 5.0}),
    EventKind.PLAN_STARTED: (events.PlanStarted("evacuate", 3, "dorset", "hampshire", 4, 30),
                             {"plan": "evacuate", "plan_run": 3, "from": "dorset", "to": "hampshire", "groups": 4,
                              "services": 30}),
    EventKind.PLAN_GROUP_STARTED: (events.PlanGroupStarted("evacuate", 3, 2, ("sql", "ldap")),
                                   {"plan": "evacuate", "plan_run": 3, "group": 2, "services": ["sql", "ldap"]}),
    EventKind.PLAN_SERVICE_MOVED: (events.PlanServiceMoved("evacuate", 3, "moved", 7),
                                   {"plan": "evacuate", "plan_run": 3, "state": "moved", "run_id": 7}),
    EventKind.PLAN_GATE_WAITING: (events.PlanGateWaiting("evacuate", 3, 1, 1800.0),
                                  {"plan": "evacuate", "plan_run": 3, "after_group": 1, "timeout": 1800.0}),
    EventKind.PLAN_FINISHED: (events.PlanFinished("evacuate", 3, "succeeded"),
                              {"plan": "evacuate", "plan_run": 3, "result": "succeeded"}),
    EventKind.SITE_LOST: (events.SiteLost(("directory", "sql"), ("evacuate-dorset",)),
                          {"services": ["directory", "sql"], "plans": ["evacuate-dorset"]}),
    EventKind.SITE_RECOVERED: (events.SiteRecovered(("directory",), 3.0), {"services": ["directory"], "lost_since": 3.0}),
    EventKind.TARGET_VERIFIED: (events.TargetVerified(7, "verify"), {"run_id": 7, "step": "verify"}),
    EventKind.DRILL_STARTED: (
        events.DrillStarted("payroll@20260106T020000Z", "round_trip", 600.0, "drills", "dorset", "hampshire",
                            "payroll-quarterly", 1767664800.0),
        {"drill": "payroll@20260106T020000Z", "drill_kind": "round_trip", "hold": 600.0, "by": "drills",
         "from": "dorset", "to": "hampshire", "name": "payroll-quarterly", "occurrence": 1767664800.0},
    ),
    EventKind.DRILL_FINISHED: (
        events.DrillFinished("payroll@20260106T020000Z", "round_trip", "succeeded", (7, 8)),
        {"drill": "payroll@20260106T020000Z", "drill_kind": "round_trip", "result": "succeeded", "runs": [7, 8]},
    ),
    EventKind.DRILL_SKIPPED: (events.DrillSkipped("payroll-quarterly", 1767664800.0, "round_trip"),
                              {"name": "payroll-quarterly", "occurrence": 1767664800.0, "drill_kind": "round_trip"}),
    EventKind.RUN_BOOKED: (events.BookedRun("1a2b3c4d", "failover", 10.0, "olive", "booked"),
                           {"booking": "1a2b3c4d", "booked_kind": "failover", "due": 10.0, "by": "olive",
                            "state": "booked"}),
    EventKind.BOOKING_CANCELLED: (events.BookedRun("1a2b3c4d", "plan", 10.0, "olive", "cancelled", "evacuate"),
                                  {"booking": "1a2b3c4d", "booked_kind": "plan", "due": 10.0, "by": "olive",
                                   "state": "cancelled", "plan": "evacuate"}),
    EventKind.DATA_LAG: (events.DataLag("crossing", 420.0, True, 300.0),
                         {"sample": "crossing", "lag": 420.0, "over": True, "rpo": 300.0}),
    EventKind.BOOKED_RUN_STARTED: (events.BookedRun("1a2b3c4d", "failover", 10.0, "olive", "started", run_id=7),
                                   {"booking": "1a2b3c4d", "booked_kind": "failover", "due": 10.0, "by": "olive",
                                    "state": "started", "run_id": 7}),
    EventKind.BOOKED_RUN_REFUSED: (events.BookedRun("1a2b3c4d", "plan", 10.0, "olive", "missed", "evacuate"),
                                   {"booking": "1a2b3c4d", "booked_kind": "plan", "due": 10.0, "by": "olive",
                                    "state": "missed", "plan": "evacuate"}),
}


def sample(kind: EventKind, event_id: int | None = 12) -> Event:
    return Event(kind, 1700.5, "payroll", "dorset", "because", SAMPLES[kind][0], event_id)


def test_every_kind_has_a_payload_type_and_a_sample() -> None:
    assert set(PAYLOADS) == set(EventKind) == set(SAMPLES)


@pytest.mark.parametrize("kind", list(EventKind))
def test_each_kind_round_trips_through_its_json_form(kind: EventKind) -> None:
    event = sample(kind)
    wire = json.loads(json.dumps(event.to_json()))
    assert wire == {**SAMPLES[kind][1], "id": 12, "kind": kind.value, "at": 1700.5, "service": "payroll",
                    "site": "dorset", "reason": "because"}
    assert Event.from_json(wire) == event


@pytest.mark.parametrize("kind", list(EventKind))
def test_each_kind_round_trips_through_the_journal(kind: EventKind, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    written = journal.append(sample(kind, None))
    journal.close()
    assert Journal(tmp_path / "j.sqlite").events() == [written]
    assert written.id is not None and written.data == SAMPLES[kind][0]


@pytest.mark.parametrize("payload", list(PAYLOADS.values()), ids=lambda cls: cls.__name__)
def test_no_payload_field_is_named_like_an_envelope_field(payload: type[events.Payload]) -> None:
    names = {f.metadata.get("json", f.name) for f in fields(payload)}
    assert not names & ENVELOPE


def test_an_optional_field_is_left_out_while_none_and_a_nullable_one_shown_as_null() -> None:
    adopted = Event(EventKind.ACTIVE_CHANGED, 1.0, "payroll", "hampshire", "cluster says so",
                    events.ActiveChanged("dorset", "hampshire"))
    assert "run_id" not in adopted.to_json()
    status = Event(EventKind.SERVICE_STATUS, 1.0, "payroll", None, "all up",
                   events.ServiceStatusChanged("at_risk", "ok", "dorset", None))
    assert status.to_json()["guard"] is None


def test_a_mirrored_run_keeps_its_run_kind_in_the_json_form() -> None:
    # the cluster's mirror once built its run_finished from a dict with `kind`; the API and SSE used to lose it
    payload = payload_from_json(EventKind.RUN_FINISHED, {"run_id": 9, "result": "succeeded", "kind": "failover",
                                                         "to": "hampshire", "remote_run": "run-1a"})
    mirrored = Event(EventKind.RUN_FINISHED, 1.0, "payroll", None, "run run-1a on hampshire succeeded: done", payload)
    assert mirrored.data == events.RunFinished(9, "succeeded", "failover", "hampshire", "run-1a")
    assert (mirrored.to_json()["kind"], mirrored.to_json()["run_kind"]) == ("run_finished", "failover")


def test_a_payload_of_another_kind_an_unknown_kind_or_a_missing_field_is_refused() -> None:
    with pytest.raises(TypeError, match="a run_started event carries a RunStarted, not a RunFinished"):
        Event(EventKind.RUN_STARTED, 1.0, "payroll", None, "r", SAMPLES[EventKind.RUN_FINISHED][0])
    with pytest.raises(ValueError, match="no_such_kind"):
        Event("no_such_kind", 1.0, None, None, "r", {})
    with pytest.raises(ValueError, match="a site_transition event needs 'to'; it has \\['from'\\]"):
        payload_from_json(EventKind.SITE_TRANSITION, {"from": "up"})


def test_payload_json_is_the_journal_data_column(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.append(sample(EventKind.ACKNOWLEDGED, None))
    (data,) = journal.execute("SELECT data FROM events").fetchone()
    assert json.loads(data) == payload_json(SAMPLES[EventKind.ACKNOWLEDGED][0]) == {"runs": [3, 4], "by": "olive"}


def test_a_mirrored_run_journaled_with_kind_reads_back_with_run_kind(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    old = {"run_id": 9, "result": "succeeded", "kind": "failback", "to": "dorset", "remote_run": "hampshire:3"}
    journal.execute("INSERT INTO events (at, kind, service, site, reason, data) VALUES (?, ?, ?, ?, ?, ?)",
                    (1.0, "run_finished", "payroll", None, "mirrored", json.dumps(old)))
    (event,) = journal.events()
    assert event.to_json()["run_kind"] == "failback" and event.to_json()["kind"] == "run_finished"
