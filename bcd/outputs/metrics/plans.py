"""The recovery plans' families, from the estate view (the journal's plan runs): runs ended by result, and the
latest run of each configured plan — running or not, its duration, its services by state, a gate's wait; and
which services each plan covers (`bcd_plan_service_info`, from the config)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bcd.config import Config
from bcd.outputs.metrics.text import chunks, labels
from bcd.plans.model import MoveState, PlanState
from bcd.view import EstateView

RESULTS = (PlanState.SUCCEEDED, PlanState.FAILED, PlanState.ABORTED)
RUNNING = (PlanState.RUNNING, PlanState.WAITING_GATE)
MEMBERS_HEAD = ("# HELP bcd_plan_service_info The services each recovery plan covers (selected, with both of its "
                "sites): 1.\n# TYPE bcd_plan_service_info gauge\n")


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


class PlanMembers:
    """`bcd_plan_service_info{plan,service}`: a series per service a plan covers, what a dashboard joins on to show
    a service's plans. Rendered by hand, in pieces of CHUNK services the first time (the event loop runs between
    them), then kept as text until the config changes: a plan of `services: all` in a large estate has a line per
    service, and a scrape then costs one string, not a sample per line."""

    def __init__(self, estate: EstateView) -> None:
        self._estate = estate
        self._text: tuple[Config, str] | None = None

    def parts(self) -> Iterator[str]:
        config = self._estate.config
        if self._text is not None and self._text[0] is config:
            yield self._text[1]
            return
        pieces = [MEMBERS_HEAD]
        yield MEMBERS_HEAD
        for plan in sorted(config.plans):
            for part in chunks(sorted(config.plans[plan].candidates(config.services))):
                pieces.append("".join([f"bcd_plan_service_info{{{labels(plan=plan, service=service)}}} 1\n"
                                       for service in part]))
                yield pieces[-1]
        self._text = (config, "".join(pieces))
