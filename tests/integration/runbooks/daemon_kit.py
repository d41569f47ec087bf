"""The daemon-level runbook tests' estate: two real HTTP targets as the sites of `payroll`, a recorder that
runbook steps call, configs built as data (written as JSON, which is YAML), and `bcd run` subprocesses with
a small API client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers.daemon import DaemonProcess, free_port
from tests.helpers.recorder import Recorder
from tests.helpers.targets import HttpTarget

OPERATOR_TOKEN = "operator-token-0123456789"
VIEWER_TOKEN = "viewer-token-0123456789"
FINISHED = frozenset({"succeeded", "failed", "aborted", "rolled_back", "interrupted", "dry_run"})


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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

    async def wait_service(
        self, check: Callable[[dict[str, Any]], bool], name: str = "payroll", timeout: float = 15.0
    ) -> dict[str, Any]:
        """The service as the API shows it, once `check` holds."""

        async def probe() -> dict[str, Any] | None:
            data = await self.service(name)
            return data if check(data) else None

        result: dict[str, Any] = await self.wait_until(probe, timeout)
        return result

    async def wait_run(
        self, run_id: int, check: Callable[[dict[str, Any]], bool] = lambda r: r["result"] in FINISHED,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """The run as the API shows it, once `check` holds (by default: once it has finished)."""

        async def probe() -> dict[str, Any] | None:
            data = await self.run(run_id)
            return data if check(data) else None

        result: dict[str, Any] = await self.wait_until(probe, timeout)
        return result

    async def wait_first_run(self, service: str = "payroll", timeout: float = 15.0) -> dict[str, Any]:
        """The service's first run, once it has finished."""

        async def probe() -> dict[str, Any] | None:
            runs = await self.runs(service)
            return runs[-1] if runs and runs[-1]["result"] in FINISHED else None

        first: dict[str, Any] = await self.wait_until(probe, timeout)
        return await self.run(first["id"])

    def kill9(self) -> None:
        self.send(signal.SIGKILL)


class Estate:
    """`payroll` runs in dorset (active) and hampshire (standby), each probed over HTTP every 100 ms."""

    def __init__(self, tmp_path: Path, dorset: HttpTarget, hampshire: HttpTarget, steps: Recorder) -> None:
        self.tmp_path = tmp_path
        self.dorset = dorset
        self.hampshire = hampshire
        self.steps = steps
        self.port = free_port()
        self.state_dir = tmp_path / "state"
        self.config_path = tmp_path / "bcd.yaml"
        self.daemons: list[Bcd] = []

    def service(
        self, *, mode: str = "auto", cooldown: str = "1h", failback: dict[str, Any] | None = None,
        dorset: dict[str, Any] | None = None, hampshire: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The `payroll` service, failing over with runbook `move` in `mode`."""
        service: dict[str, Any] = {
            "active": "dorset",
            "failover": {"runbook": "move", "mode": mode, "cooldown": cooldown},
            "sites": {
                "dorset": {"probes": [{"name": "health", "http": {"url": self.dorset.url}, **(dorset or {})}]},
                "hampshire": {"probes": [{"name": "health", "http": {"url": self.hampshire.url},
                                          **(hampshire or {})}]},
            },
        }
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
            "defaults": {"interval": "100ms", "timeout": "80ms", "rise": 1, "fall": 2},
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
        self.config_path.write_text(json.dumps(config, indent=2))
        daemon = Bcd(self.config_path, self.port, env)
        self.daemons.append(daemon)
        await daemon.start()
        await daemon.wait_ready()
        for name in ok:
            await daemon.wait_service(lambda s: s["status"] == "ok", name)
        return daemon

    async def probes_of(self, target: HttpTarget, count: int) -> None:
        """Return after `target` has been probed `count` more times (time passing, as the daemon sees it)."""
        goal = target.requests + count
        async with asyncio.timeout(10):
            while target.requests < goal:
                await asyncio.sleep(0.02)  # polling a counter with a deadline

    async def close(self) -> None:
        for daemon in self.daemons:
            if daemon.proc is not None and daemon.proc.returncode is None:
                await daemon.stop()
