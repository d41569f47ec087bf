"""A report as JSON: every figure, machine-readable (the API's and `bcd report --format json`'s answer)."""

from __future__ import annotations

import json
from typing import Any

from bcd.report.model import Incident, Report, ServiceReport


def report_json(report: Report) -> dict[str, Any]:
    period = report.period
    return {
        "title": report.title, "instance": report.instance, "generated": report.generated,
        "period": {"from": period.start, "to": period.asked_end, "counted_to": period.end},
        "summary": {
            "availability": report.availability.to_json(), "services": len(report.services),
            "incidents": sum(len(s.incidents) for s in report.services),
            "recoveries": sum(len(s.recoveries) for s in report.services),
            "rto_missed": sum(len(s.rto_missed) for s in report.services),
            "drills": sum(len(s.drills) for s in report.services),
            "risks": len(report.risks), "risks_by_kind": report.risk_counts(),
        },
        "chain": None if report.chain is None else {"seq": report.chain.seq, "hash": report.chain.hash,
                                                    "at": report.chain.at},
        "drills_max_age": report.drills_max_age,
        "risks": [{"service": r.service, "kind": r.kind, "text": r.text} for r in report.risks],
        "services": [_service(s) for s in report.services],
        "notes": list(report.notes),
        "plan_drills": [drill.to_json() for drill in report.plan_drills],
    }


def _service(service: ServiceReport) -> dict[str, Any]:
    return {
        "name": service.name, "description": service.description,
        "objectives": {"rto": service.rto, "rpo": service.rpo}, "runbook": service.runbook,
        "availability": service.availability.to_json(),
        "sites": [{"site": s.site, "availability": s.availability.to_json(), "standby_seconds": s.standby_seconds,
                   "standby_not_up_seconds": s.standby_not_up, "standby_not_up_ratio": s.standby_not_up_ratio}
                  for s in service.sites],
        "incidents": [_incident(i) for i in service.incidents],
        "recoveries": [r.to_json() for r in service.recoveries],
        "drills": [d.to_json() for d in service.drills],
        "last_drill": service.last_drill,
        "data_lag": {"rpo": service.lag.rpo, "measured": service.lag.measured, "samples": service.lag.samples,
                     "worst": service.lag.worst, "accepted": list(service.lag.accepted),
                     "sites": [{"site": s.site, "worst": s.worst, "over_seconds": s.over_seconds,
                                "exceeded": s.exceeded} for s in service.lag.sites]},
    }


def _incident(incident: Incident) -> dict[str, Any]:
    recovery = incident.recovery
    return {"start": incident.start, "end": incident.end, "seconds": incident.seconds, "site": incident.site,
            "worst": incident.worst, "recovery": None if recovery is None else recovery.to_json()}


def render_json(report: Report) -> str:
    return json.dumps(report_json(report), indent=1) + "\n"
