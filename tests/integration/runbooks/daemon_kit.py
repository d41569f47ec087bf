"""The daemon-level runbook tests' estate: two real HTTP targets as the sites of `payroll`, a recorder that
runbook steps call, configs built as data (written as JSON, which is YAML), and `bcd run` subprocesses with
a small API client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import estates
from tests.helpers.daemon import DaemonProcess, Daemons, free_port, write_config
from tests.helpers.recorder import Recorder
from tests.helpers.runner_kit import eventually
from tests.helpers.targets import HttpTarget, two_sites

OPERATOR_TOKEN = "operator-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789"
FINISHED = frozenset({"succeeded", "failed", "aborted", "rolled_back", "interrupted", "dry_run"})
STORY = frozenset({"site_transition", "service_status", "run_started", "step_started", "step_finished",
                   "run_finished", "active_changed", "acknowledged"})
WAIT = 30.0  # generous: polls return as soon as the condition holds, a loaded CI machine is slow


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels`."""
    for line in metrics.splitlines():
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if match and match[1] == name:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
            if labels.items() <= found.items():
                return float(match[3])
    return None


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: Any  # parsed JSON when the answer is JSON, else text


class Bcd(DaemonProcess):
    """`bcd run` as a subprocess, with the API calls the runbook tests make."""

    async def call(
        self, method: str, path: str, *, token: str | None = OPERATOR_TOKEN, json_body: Any = None,
        data: bytes | None = None,
    ) -> Reply:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.request(
            method, self.url + path, headers=headers, json=json_body, data=data
        ) as response:
            text = await response.text()
            body: Any = text
            if response.content_type.endswith("json"):
                body = json.loads(text)
            return Reply(response.status, response.content_type, body)

    async def transfer(self, kind: str, service: str = "payroll", **body: Any) -> Reply:
        return await self.call("POST", f"/api/v1/services/{service}/{kind}", json_body={"reason": "test", **body})

    async def service(self, name: str = "payroll") -> dict[str, Any]:
        reply = await self.call("GET", f"/api/v1/services/{name}")
        assert reply.status == 200, reply
        result: dict[str, Any] = reply.body
        return result

    async def run(self, run_id: int) -> dict[str, Any]:
        reply = await self.call("GET", f"/api/v1/runs/{run_id}")
        assert reply.status == 200, reply
        result: dict[str, Any] = reply.body
        return result

    async def runs(self, service: str = "payroll") -> list[dict[str, Any]]:
        reply = await self.call("GET", f"/api/v1/runs?service={service}")
        assert reply.status == 200, reply
        result: list[dict[str, Any]] = reply.body["runs"]
        return result

    async def poll(
        self, fetch: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], what: str, timeout: float = WAIT,
    ) -> Any:
        """Fetch from the API every 100 ms until `check` holds; on timeout, fail saying what was last seen
        and what the daemon logged (transitions, statuses, runs), so a slow or flaky run explains itself."""
        last: Any = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    last = await fetch()
                    if check(last):
                        return last
                    await asyncio.sleep(0.1)
        except TimeoutError:
            story = [line for line in self.log_lines if line.get("event") in STORY]
            raise AssertionError(f"{what} not seen within {timeout:g}s; last seen: {last}; log: {story}") from None

    async def wait_service(
        self, check: Callable[[dict[str, Any]], bool], name: str = "payroll", timeout: float = WAIT
    ) -> dict[str, Any]:
        """The service as the API shows it, once `check` holds."""
        result: dict[str, Any] = await self.poll(lambda: self.service(name), check, f"service {name}", timeout)
        return result

    async def wait_run(
        self, run_id: int, check: Callable[[dict[str, Any]], bool] = lambda r: r["result"] in FINISHED,
        timeout: float = WAIT,
    ) -> dict[str, Any]:
        """The run as the API shows it, once `check` holds (by default: once it has finished)."""
        result: dict[str, Any] = await self.poll(lambda: self.run(run_id), check, f"run {run_id}", timeout)
        return result

    async def wait_first_run(self, service: str = "payroll", timeout: float = WAIT) -> dict[str, Any]:
        """The service's first run, once it has finished."""
        runs = await self.poll(lambda: self.runs(service), lambda runs: bool(runs) and runs[-1]["result"] in FINISHED,
                               f"a finished run of {service}", timeout)
        return await self.run(runs[-1]["id"])

    def kill9(self) -> None:
        self.send(signal.SIGKILL)


class Estate:
    """`payroll` runs in dorset (active) and hampshire (standby), each probed over HTTP every 250 ms
    (timeout 200 ms: generous, so that a loaded machine does not fake a failure)."""

    def __init__(self, tmp_path: Path, dorset: HttpTarget, hampshire: HttpTarget, steps: Recorder) -> None:
        self.tmp_path = tmp_path
        self.dorset = dorset
        self.hampshire = hampshire
        self.steps = steps
        self.port = free_port()
        self.state_dir = tmp_path / "state"
        self.config_path = tmp_path / "bcd.yaml"
        self.daemons = Daemons()

    def service(
        self, *, mode: str = "auto", cooldown: str = "1h", failback: dict[str, Any] | None = None,
        dorset: dict[str, Any] | None = None, hampshire: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The `payroll` service, failing over with runbook `move` in `mode`; `dorset` and `hampshire` are added
        to the sites' probes."""
        service = estates.payroll_service(self.dorset.url, self.hampshire.url,
                                          failover={"runbook": "move", "mode": mode, "cooldown": cooldown})
        for site, extra in (("dorset", dorset), ("hampshire", hampshire)):
            service["sites"][site]["probes"][0].update(extra or {})
        if failback is not None:
            service["failback"] = failback
        return service

    def step(self, name: str = "switch", path: str = "/switch", **http: Any) -> dict[str, Any]:
        """An http step that POSTs to the recorder."""
        return {"name": name, "http": {"url": self.steps.url(path), **http}}

    def config(
        self, *, steps: list[dict[str, Any]] | None = None, rollback: list[dict[str, Any]] | None = None,
        services: dict[str, Any] | None = None, runbooks: dict[str, Any] | None = None, **top: Any,
    ) -> dict[str, Any]:
        runbook: dict[str, Any] = {"steps": steps or [self.step()]}
        if rollback:
            runbook["rollback"] = rollback
        return {
            "instance": "test-bcd",
            "vantage": "dorset",
            "state_dir": str(self.state_dir),
            "server": {"listen": f"127.0.0.1:{self.port}"},
            "sites": {"dorset": {}, "hampshire": {}},
            "defaults": {"interval": "250ms", "timeout": "200ms", "rise": 1, "fall": 2},
            "services": services or {"payroll": self.service()},
            "runbooks": {"move": runbook, **(runbooks or {})},
            "auth": {
                "anonymous_read": True,
                "tokens": [
                    {"name": "olive", "role": "operator", "sha256": sha256(OPERATOR_TOKEN)},
                    {"name": "victor", "role": "viewer", "sha256": sha256(VIEWER_TOKEN)},
                ],
            },
            **top,
        }

    async def start(
        self, config: dict[str, Any], *, env: dict[str, str] | None = None, ok: tuple[str, ...] = ("payroll",)
    ) -> Bcd:
        """Write `config`, start `bcd run` on it; return once it is ready and the `ok` services are ok."""
        daemon = await self.daemons.start(Bcd(write_config(self.config_path, config), self.port, env), timeout=WAIT)
        for name in ok:
            await daemon.wait_service(lambda s: s["status"] == "ok", name)
        return daemon

    async def probes_of(self, target: HttpTarget, count: int) -> None:
        """Return after `target` has been probed `count` more times (time passing, as the daemon sees it)."""
        goal = target.requests + count
        await eventually(lambda: target.requests >= goal, 10, f"{count} more probes of {target.url}")


@asynccontextmanager
async def open_estate(tmp_path: Path) -> AsyncIterator[Estate]:
    """Two real HTTP targets (dorset active, hampshire standby), a recorder for runbook steps, and a
    factory of daemons (subprocesses) on configs built from them; every daemon is stopped at the end."""
    async with two_sites() as (dorset, hampshire), Recorder() as steps:
        estate = Estate(tmp_path, dorset, hampshire, steps)
        try:
            yield estate
        finally:
            await estate.daemons.stop_all()
