"""The recovery plans' families, from the estate view (the journal's plan runs): runs ended by result, and the
latest run of each configured plan — running or not, its duration, its services by state, a gate's wait."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bcd.plans.model import MoveState, PlanState
from bcd.view import EstateView

RESULTS = (PlanState.SUCCEEDED, PlanState.FAILED, PlanState.ABORTED)
RUNNING = (PlanState.RUNNING, PlanState.WAITING_GATE)


class PlanCollector(Collector):
    def __init__(self, estate: EstateView, clock: Callable[[], float] = time.time) -> None:
        self._estate = estate
        self._clock = clock

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        plans = list(self._estate.config.plans)
        results = self._estate.plan_results()
        total = CounterMetricFamily("bcd_plan_runs", "Recovery plan runs ended, by result.", labels=["plan", "result"])
        for plan, result in sorted({*((plan, str(r)) for plan in plans for r in RESULTS), *results}):
            total.add_metric([plan, result], results.get((plan, result), 0))
        yield total
        running = GaugeMetricFamily("bcd_plan_running", "Whether a run of the plan is in progress.", labels=["plan"])
        duration = GaugeMetricFamily("bcd_plan_duration_seconds", "The latest run's duration (so far, if running).",
                                     labels=["plan"])
        gate = GaugeMetricFamily("bcd_plan_gate_waiting_seconds", "How long the latest run has waited at a gate "
                                 "(0: not waiting).", labels=["plan"])
        services = GaugeMetricFamily("bcd_plan_services", "The latest run's services by state.",
                                     labels=["plan", "state"])
        now = self._clock()
        for plan in plans:
            latest = self._estate.plan_runs(plan, 1)
            run = latest[0] if latest else None
            running.add_metric([plan], int(run is not None and run.state in RUNNING))
            duration.add_metric([plan], 0.0 if run is None else (run.ended or now) - run.started)
            waiting = [g.at or now for g in run.gates if g.state == "waiting"] if run is not None else []
            gate.add_metric([plan], now - waiting[0] if waiting and run and run.state is PlanState.WAITING_GATE
                            else 0.0)
            counts = run.counts() if run is not None else {state.value: 0 for state in MoveState}
            for state, count in counts.items():
                services.add_metric([plan, state], count)
        yield from (running, duration, gate, services)
