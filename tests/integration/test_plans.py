"""Recovery plans in the real daemon (a subprocess) on loopback targets: a 30-service estate in four dependency
levels evacuated in order, never more than `parallel` moves at once (from the times the recorder saw each
move's first step, and the journal's run records); a crash mid-plan, restart and resume without re-running
anything; and clear refusals for unknown plans and plan runs."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.helpers.api import OPERATOR, VIEWER, Api, sha
from tests.helpers.daemon import free_port
from tests.helpers.plans import levels, most_at_once, services_yaml
from tests.helpers.recorder import Recorder
from tests.helpers.targets import HttpTarget

RUNBOOKS = """
runbooks:
  move: {{steps: [{{name: announce, http: {{url: "{recorder}/{{service}}/{{plan}}/{{plan_run}}/{{trigger}}"}}}},
                  {{name: work, sleep: {{duration: 300ms}}}}]}}
  slow: {{steps: [{{name: announce, http: {{url: "{recorder}/{{service}}/{{plan}}/{{plan_run}}/{{trigger}}"}}}},
                  {{name: work, sleep: {{duration: 1h}}}}]}}
"""


class TimedRecorder(Recorder):
    """The recorder, noting when each request arrived (the time a move's first step reached the target)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[tuple[str, float]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrived.append((request.path, time.time()))
        return await super()._handle(request)

    def first(self) -> dict[str, float]:
        seen: dict[str, float] = {}
        for path, at in self.arrived:
            seen.setdefault(path.split("/")[1], at)
        return seen


def config_text(state: Path, port: int, recorder: Recorder, graph: dict[str, list[str]], plan: str,
                dorset: HttpTarget, hampshire: HttpTarget, interval: str = "5s", **services: Any) -> str:
    probes = {site: f'[{{name: health, http: {{url: "{target.url}"}}}}]'
              for site, target in (("dorset", dorset), ("hampshire", hampshire))}
    return (f"state_dir: {state}\nserver: {{listen: \"127.0.0.1:{port}\"}}\n"
            "sites: {dorset: {}, hampshire: {}}\n"
            f"defaults: {{interval: {interval}, timeout: 900ms, rise: 1, fall: 2}}\n"
            "runner: {max_concurrent_runs: 50}\n"
            f"auth:\n  tokens:\n    - {{name: alice, role: operator, sha256: {sha(OPERATOR)}}}\n"
            f"    - {{name: grafana, role: viewer, sha256: {sha(VIEWER)}}}\n"
            + RUNBOOKS.format(recorder=recorder.url("").rstrip("/"))
            + services_yaml(graph, probes, **services)
            + f"plans:\n  evacuate: {plan}\n")


@asynccontextmanager
async def estate(tmp_path: Path, graph: dict[str, list[str]], plan: str, targets: list[HttpTarget] | None = None,
                 **services: Any) -> AsyncIterator[tuple[Api, TimedRecorder]]:
    dorset, hampshire = await HttpTarget().start(), await HttpTarget().start()
    if targets is not None:
        targets.extend((dorset, hampshire))
    recorder = await TimedRecorder().start()
    port = free_port()
    path = tmp_path / "bcd.yaml"
    path.write_text(config_text(tmp_path / "state", port, recorder, graph, plan, dorset, hampshire, **services))
    daemon = Api(path, port)
    await daemon.start()
    try:
        await daemon.wait_ready(timeout=30)
        yield daemon, recorder
    finally:
        if daemon.proc is not None and daemon.proc.returncode is None:
            await daemon.stop()
        for part in (dorset, hampshire, recorder):
            await part.stop()


async def plan_run(daemon: Api, run_id: int) -> dict[str, Any]:
    status, _, body = await daemon.call("GET", f"/api/v1/plan-runs/{run_id}", token=VIEWER)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def wait_plan(daemon: Api, run_id: int, check: Any, timeout: float = 60.0) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        run = await plan_run(daemon, run_id)
        return run if check(run) else None
    return await daemon.wait_until(ready, timeout=timeout, every=0.2)  # type: ignore[no-any-return]


async def runs_by_service(daemon: Api) -> dict[str, dict[str, Any]]:
    status, _, body = await daemon.call("GET", "/api/v1/runs?limit=500", token=VIEWER)
    assert status == 200
    return {run["service"]: run for run in body["runs"]}


async def test_thirty_services_move_in_dependency_order(tmp_path: Path) -> None:
    graph = levels([4, 6, 8, 12])
    async with estate(tmp_path, graph, "{from: dorset, to: hampshire, parallel: 4}") as (daemon, recorder):
        status, _, body = await daemon.call("POST", "/api/v1/plans/evacuate/run", body={"reason": "drill"})
        assert status == 202, body
        run_id = body["plan_run"]["id"]
        assert body["plan_run"]["groups"][0] == ["l1s0", "l1s1", "l1s2", "l1s3"]
        run = await wait_plan(daemon, run_id, lambda run: run["ended"] is not None, timeout=120)
        assert run["state"] == "succeeded", [(m["service"], m["reason"]) for m in run["services"] if m["state"] != "moved"]
        assert {move["state"] for move in run["services"]} == {"moved"}
        runs = await runs_by_service(daemon)
        first = recorder.first()
        assert set(first) == set(graph)
        late = [f"{name} before {need}" for name, needs in graph.items() for need in needs
                if runs[need]["result"] != "succeeded" or first[name] < runs[need]["ended"]]
        assert late == []
        assert most_at_once([(r["started"], r["ended"]) for r in runs.values()]) <= 4
        # every move was asked for once, with the plan's name, run and the trigger `plan` in its templates
        assert sorted(recorder.paths()) == sorted(f"/{name}/evacuate/{run_id}/plan" for name in graph)
        metrics = await daemon.metrics_with(VIEWER)
        assert 'bcd_plan_runs_total{plan="evacuate",result="succeeded"} 1.0' in metrics
        assert 'bcd_plan_services{plan="evacuate",state="moved"} 30.0' in metrics


async def test_kill_mid_plan_then_resume_runs_nothing_twice(tmp_path: Path) -> None:
    graph = {"a": [], "b": [], "slow": ["a"], "c": ["slow"], "d": ["b"]}
    async with estate(tmp_path, graph, "{from: dorset, to: hampshire}", runbooks={"slow": "slow"}) as (
            daemon, recorder):
        status, _, body = await daemon.call("POST", "/api/v1/plans/evacuate/run", body={"reason": "crash drill"})
        assert status == 202, body
        run_id = body["plan_run"]["id"]
        await recorder.wait_for(1, f"/slow/evacuate/{run_id}/plan", timeout=30)
        await wait_plan(daemon, run_id, lambda run: {m["service"]: m["state"] for m in run["services"]}["d"] == "moved")
        daemon.send(signal.SIGKILL)
        assert daemon.proc is not None
        await daemon.proc.wait()
        await daemon.start()
        await daemon.wait_ready(timeout=30)
        run = await plan_run(daemon, run_id)
        assert run["state"] == "interrupted", run
        states = {move["service"]: move["state"] for move in run["services"]}
        assert states["a"] == states["b"] == states["d"] == "moved" and states["slow"] == "moving"
        assert states["c"] == "pending"
        status, _, html = await daemon.call("GET", "/", token=VIEWER)
        assert status == 200 and f"<h3>Plan run {run_id}: evacuate dorset → hampshire</h3>" in html
        assert "<strong>interrupted</strong>" in html
        status, _, body = await daemon.call("POST", f"/api/v1/plan-runs/{run_id}/resume")
        assert status == 409 and "slow (run " in body["detail"] and "was cut short" in body["detail"], body
        status, _, body = await daemon.call("POST", f"/api/v1/plan-runs/{run_id}/services/slow/done")
        assert status == 200, body
        result = await asyncio.to_thread(daemon.cli, "plan", "resume", str(run_id))
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"plan run {run_id} of evacuate resumed"
        run = await wait_plan(daemon, run_id, lambda run: run["ended"] is not None)
        assert run["state"] == "succeeded", [(m["service"], m["reason"]) for m in run["services"] if m["state"] != "moved"]
        assert {m["service"]: m["state"] for m in run["services"]} == {
            "a": "moved", "b": "moved", "slow": "done", "c": "moved", "d": "moved"}
        assert sorted(path.split("/")[1] for path in recorder.paths()) == ["a", "b", "c", "d", "slow"]


async def test_unknown_plans_and_runs_are_refused_clearly(tmp_path: Path) -> None:
    async with estate(tmp_path, {"a": []}, "{from: dorset, to: hampshire}") as (daemon, _):
        for method, path in (("GET", "/api/v1/plans/nosuch"), ("POST", "/api/v1/plans/nosuch/run"),
                             ("GET", "/api/v1/plan-runs/99"), ("POST", "/api/v1/plan-runs/99/resume"),
                             ("POST", "/api/v1/plan-runs/99/abort"), ("POST", "/api/v1/plan-runs/99/approve"),
                             ("POST", "/api/v1/plan-runs/99/services/a/done"), ("GET", "/api/v1/plan-runs/x")):
            sent = ({"reason": "x"} if "/plans/" in path else {}) if method == "POST" else None
            status, kind, body = await daemon.call(method, path, body=sent)
            assert (status, kind) == (404, "application/problem+json"), (path, status, body)
        status, _, body = await daemon.call("POST", "/api/v1/plans/evacuate/run", token=VIEWER, body={"reason": "x"})
        assert status == 403
        status, _, body = await daemon.call("POST", "/api/v1/plans/evacuate/run", token=None, body={"reason": "x"})
        assert status == 401
        result = await asyncio.to_thread(daemon.cli, "plan", "run", "nosuch", "--reason", "x")
        assert (result.returncode, result.stderr.strip()) == (1, "bcd: HTTP 404: no plan named 'nosuch'")
        result = await asyncio.to_thread(daemon.cli, "plan", "show", "evacuate")
        assert result.returncode == 0 and result.stdout.startswith("plan evacuate: dorset -> hampshire"), result
        result = await asyncio.to_thread(daemon.cli, "plan", "run", "evacuate", "--reason", "x", "--dry-run")
        assert result.returncode == 0 and "group 1:\n  a" in result.stdout, result
        status, _, body = await daemon.call("GET", "/api/v1/plan-runs", token=VIEWER)
        assert (status, body) == (200, {"plan_runs": []})


async def test_a_plan_with_trigger_auto_starts_when_its_site_is_lost(tmp_path: Path) -> None:
    graph = {"directory": [], "sql": ["directory"]}
    targets: list[HttpTarget] = []
    async with estate(tmp_path, graph, "{from: dorset, to: hampshire, trigger: auto}", targets,
                      interval="1s") as (daemon, recorder):
        targets[0].status = 503  # the whole of dorset goes dark
        started = await daemon.wait_log(lambda line: line.get("event") == "plan_started", timeout=30)
        assert started["by"] == "auto"
        assert started["reason"].startswith("site dorset lost: ")
        run = await wait_plan(daemon, started["plan_run"], lambda run: run["ended"] is not None)
        assert run["state"] == "succeeded", run
        assert [path.split("/")[1] for path in recorder.paths()] == ["directory", "sql"]
